"""Billing in the portal, end to end in a real browser against a real gateway: statements with
line items and payments, paying a bill with a card (`Invoice/$pay`), the receipt, the printable
statement, and every kind of bad input. Each flow checks what the gateway stored (the
PaymentReconciliation, the PaymentNotice, the Account balance, the Invoice status); each bad
input is proven to change nothing (`env.live.fingerprint()`); card data never shows up in a URL,
a log record, a page after an error or the portal's session store.

Seed: ann = pat-0001 (acct-0001: inv-0001-01 63.50 and inv-0001-03 30.00 issued, inv-0001-02
balanced); bob = pat-0002 (acct-0002: inv-0002-01 75.50, inv-0002-02 30.00); carol is a proxy
for pat-0003 (acct-0003: inv-0003-01 63.50).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from tests.browser.support import check_page, menu, sign_in

CARD = "4111 1111 1111 1111"
DIGITS = CARD.replace(" ", "")
EXPIRY = "11/38"
BALANCE = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Account.balance"


def balance(env, account: str) -> Decimal:
    stored = env.live.adapter.read("Account", account)
    ext = next(e for e in stored["extension"] if e["url"] == BALANCE)
    return Decimal(str(next(s["valueMoney"]["value"] for s in ext["extension"]
                            if "valueMoney" in s)))


def stored(env, rtype: str, invoice: str) -> list[dict]:
    """PaymentNotices (request) or PaymentReconciliations (detail.request) of one invoice."""
    ref = {"reference": f"Invoice/{invoice}"}
    return [r for r in env.live.adapter.iter_all() if r["resourceType"] == rtype
            and (r.get("request") == ref if rtype == "PaymentNotice"
                 else r.get("detail", [{}])[0].get("request") == ref)]


def key_hash(invoice: str, form_id: str) -> str:
    """How the gateway keeps an Idempotency-Key (mappings.portal.billing.idempotency_hash)."""
    return hashlib.sha256(f"Invoice/{invoice}\n{form_id}".encode()).hexdigest()


def fill(page, amount=None, card=CARD, expiry=EXPIRY, name="Robert Garcia"):
    if amount is not None:
        page.fill("#f-amount", amount)
    page.fill("#f-card_number", card)
    page.fill("#f-card_expiry", expiry)
    page.fill("#f-card_holder", name)


def no_card_data(text: str) -> None:
    assert DIGITS not in text and CARD not in text and EXPIRY not in text


@pytest.fixture(autouse=True)
def _logs(caplog):
    caplog.set_level("DEBUG")
    yield
    no_card_data(caplog.text)


def test_statement_pay_part_then_the_rest_receipt_and_printable(env, portal, page):
    sign_in(page, portal, "ann")
    menu(page, "Billing")
    page.wait_for_url(f"{portal.url}/billing")
    start = balance(env, "acct-0001")
    account = page.locator('section.account[data-account="acct-0001"]')
    assert account.locator("p.balance").inner_text() == f"Balance due: ${start:,.2f}"
    invoices = [r for r in env.live.adapter.iter_all() if r["resourceType"] == "Invoice"
                and r["subject"]["reference"] == "Patient/pat-0001"]
    assert account.locator("div.bill").count() == len(invoices) == 3
    for invoice in invoices:  # every line: what, date, amount; the status in words
        shown = account.locator(f'div.bill[data-invoice="{invoice["id"]}"]')
        rows = shown.locator("tbody tr")
        assert rows.count() == len(invoice["lineItem"])
        for row, item in zip(rows.all(), invoice["lineItem"], strict=True):
            cells = [c.inner_text() for c in row.locator("td").all()]
            amount = item["priceComponent"][0]["amount"]["value"]
            assert cells == [item["chargeItemCodeableConcept"]["text"], invoice["date"][:10],
                             f"${amount:,.2f}"]
        words = {"issued": "To pay", "balanced": "Paid"}[invoice["status"]]
        assert shown.locator(".bill-status").inner_text() == words
    assert "No payments made online yet." in account.inner_text()
    check_page(page, "billing")

    # pay part of inv-0001-03 (30.00)
    date = env.live.adapter.read("Invoice", "inv-0001-03")["date"][:10]
    page.get_by_role("link", name=f"Pay the bill of {date}").click()
    page.wait_for_url(f"{portal.url}/billing/pay/inv-0001-03")
    assert page.input_value("#f-amount") == "30.00"  # what is owed on it
    for field, auto, mode in (("card_number", "cc-number", "numeric"),
                              ("card_expiry", "cc-exp", "numeric"),
                              ("card_holder", "cc-name", None),
                              ("amount", "transaction-amount", "decimal")):
        box = page.locator(f"#f-{field}")
        assert box.get_attribute("autocomplete") == auto
        assert box.get_attribute("inputmode") == mode
        assert page.locator(f'label[for="f-{field}"]').count() == 1
    check_page(page, "billing-pay")
    form_id = page.locator('input[name="form_id"]').get_attribute("value")
    fill(page, "10.00")
    page.get_by_role("button", name="Pay now").click()
    page.wait_for_url(f"{portal.url}/billing/receipt/*")
    (receipt,) = stored(env, "PaymentReconciliation", "inv-0001-03")
    assert page.url.endswith(f"/billing/receipt/{receipt['id']}")
    assert receipt["paymentAmount"] == {"value": 10.0, "currency": "USD"}
    # the one-time form id was the gateway's Idempotency-Key
    assert receipt["identifier"][0]["value"] == key_hash("inv-0001-03", form_id)
    (notice,) = stored(env, "PaymentNotice", "inv-0001-03")
    assert notice["amount"]["value"] == 10.0
    assert notice["payment"] == {"reference": f"PaymentReconciliation/{receipt['id']}"}
    assert balance(env, "acct-0001") == start - 10
    assert env.live.adapter.read("Invoice", "inv-0001-03")["status"] == "issued"
    assert "Your payment was made" in page.locator("p.notice").inner_text()
    assert page.locator("dd.amount").inner_text() == "$10.00"
    assert page.locator("dd.date").inner_text() == receipt["paymentDate"]
    assert page.locator("dd.card-used").inner_text() == "Card ending in 1111"
    assert page.locator("dd.ref").inner_text() == receipt["paymentIdentifier"]["value"]
    assert page.locator("p.balance").inner_text() == \
        f"Your balance due is now ${start - 10:,.2f}."
    no_card_data(page.content())
    check_page(page, "billing-receipt")

    # the statement now shows the payment, and what is left on the bill
    page.get_by_role("link", name="Back to Billing").click()
    bill = page.locator('div.bill[data-invoice="inv-0001-03"]')
    assert bill.locator("tr.left td").inner_text() == "$20.00"
    assert bill.locator(".bill-status").inner_text() == "To pay"
    row = page.locator(f'table.payments tr[data-receipt="{receipt["id"]}"]')
    assert [c.inner_text() for c in row.locator("td").all()][:3] == \
        [receipt["paymentDate"], "$10.00", "Card ending in 1111"]
    check_page(page, "billing-after-payment")

    # pay the rest: the Invoice becomes balanced
    page.get_by_role("link", name=f"Pay the bill of {date}").click()
    assert page.input_value("#f-amount") == "20.00"
    fill(page)
    page.get_by_role("button", name="Pay now").click()
    page.wait_for_url(f"{portal.url}/billing/receipt/*")
    assert len(stored(env, "PaymentNotice", "inv-0001-03")) == 2
    assert env.live.adapter.read("Invoice", "inv-0001-03")["status"] == "balanced"
    assert balance(env, "acct-0001") == start - 30
    page.get_by_role("link", name="Printable statement").click()
    page.wait_for_url(f"{portal.url}/billing/statement/acct-0001")
    assert page.locator("p.balance").inner_text() == f"Balance due: ${start - 30:,.2f}"
    paid = page.locator('div.bill[data-invoice="inv-0001-03"]')
    assert paid.locator(".bill-status").inner_text() == "Paid"
    assert paid.locator("tfoot tr.paid td").inner_text() == "$30.00"
    assert page.locator("table.payments tbody tr").count() == 2
    check_page(page, "billing-statement")
    page.get_by_role("button", name="Larger text").click()  # and with the larger text
    page.wait_for_selector("html.large-text")
    assert page.url == f"{portal.url}/billing/statement/acct-0001"
    check_page(page, "billing-statement-large")
    page.emulate_media(media="print")  # the printout has no menu, no buttons
    assert not page.locator("header.site").is_visible()
    assert not page.locator("footer.site").is_visible()
    assert page.locator("h1").is_visible()
    page.emulate_media(media="screen")
    # the bill paid in full offers no payment
    page.goto(f"{portal.url}/billing/pay/inv-0001-03")
    assert "nothing left to pay" in page.locator("p.notice").inner_text()
    assert page.locator("form.pay-form").count() == 0
    for url in page.requested_urls:
        no_card_data(url)
        assert "Garcia" not in url


BAD = [
    # (field, value, words shown next to it, screenshot name or "")
    ("amount", "", "Type the amount", ""),
    ("amount", "ten", "as a number", ""),
    ("amount", "0", "at least $0.01", ""),
    ("amount", "-5", "at least $0.01", ""),
    ("amount", "75.51", "more than you owe. The most you can pay is $75.50", ""),
    ("amount", "1.005", "two digits after the point", ""),
    ("amount", "1" * 13, "too long", ""),
    ("card_number", "4111 1111 1111 1112", "not right", ""),
    ("card_number", "4111", "12 to 19 digits", ""),
    ("card_number", "4" * 31, "too long", ""),
    ("card_expiry", "13/30", "month must be from 01 to 12", ""),
    ("card_expiry", "01/20", "has expired", ""),
    ("card_expiry", "2030-11", "as MM/YY", ""),
    ("card_holder", "   ", "Type the name", ""),
    ("card_holder", "x" * 101, "too long: 101 characters", ""),
]


def pay_calls(caplog) -> int:
    """How many times the portal called `$pay` (its FHIR client logs each call's status)."""
    return sum(r.getMessage().startswith("fhir op $pay ") for r in caplog.records)


def test_bad_input_is_shown_next_to_the_field_and_changes_nothing(env, portal, page, caplog):
    sign_in(page, portal, "bob")
    page.goto(f"{portal.url}/billing/pay/inv-0002-01")
    good = {"amount": "5.00", "card_number": CARD, "card_expiry": EXPIRY,
            "card_holder": "Laura Clark"}
    for field, value, words, shot in BAD:
        mark = env.live.fingerprint()
        values = dict(good, **{field: value})
        fill(page, values["amount"], values["card_number"], values["card_expiry"],
             values["card_holder"])
        page.get_by_role("button", name="Pay now").click()
        page.wait_for_selector("p.error[role=alert]")
        error = page.locator(f"#err-{field}")
        assert words in error.inner_text(), (field, value, error.inner_text())
        assert page.locator("p.error[role=alert]").count() == 1
        box = page.locator(f"#f-{field}")
        assert box.get_attribute("aria-invalid") == "true"
        assert "err-" + field in box.get_attribute("aria-describedby")
        assert env.live.fingerprint() == mark, (field, value)
        assert pay_calls(caplog) == 0  # checked in the portal: the server was not asked
        # the card fields come back empty, the amount as typed
        for secret in ("card_number", "card_expiry", "card_holder"):
            assert page.input_value(f"#f-{secret}") == ""
        no_card_data(page.content())
        if shot:
            check_page(page, shot)
    assert stored(env, "PaymentNotice", "inv-0002-01") == []

    # everything wrong at once: each message next to its own field
    mark = env.live.fingerprint()
    fill(page, "0", "1234 5678 9012 3456", "13/30", "")
    page.get_by_role("button", name="Pay now").click()
    for field in ("amount", "card_number", "card_expiry", "card_holder"):
        assert page.locator(f"#err-{field}").count() == 1
    assert "type them again" in page.locator("form.pay-form").inner_text()
    assert env.live.fingerprint() == mark
    check_page(page, "billing-pay-errors")

    # another patient's bill, an unknown one, a missing CSRF token: refused, nothing changes
    form = {n: page.locator(f'form.pay-form input[name="{n}"]').get_attribute("value")
            for n in ("csrf_token", "form_id")}
    for invoice in ("inv-0001-01", "no-such-bill", "../Account/acct-0001"):
        resp = page.request.post(f"{portal.url}/billing/pay",
                                 form={**form, **good, "invoice": invoice})
        assert resp.status == 404 and "could not find that bill" in resp.text()
        no_card_data(resp.text())
        assert env.live.fingerprint() == mark
    for path in ("pay/inv-0001-01", "statement/acct-0001", "receipt/no-such"):
        resp = page.request.get(f"{portal.url}/billing/{path}")
        assert resp.status == 404
    resp = page.request.post(f"{portal.url}/billing/pay",
                             form={**good, "invoice": "inv-0002-01"})
    assert resp.status == 400 and env.live.fingerprint() == mark

    # a good payment, then the same form sent again: one payment
    page.goto(f"{portal.url}/billing/pay/inv-0002-01")
    start = balance(env, "acct-0002")
    form = {n: page.locator(f'form.pay-form input[name="{n}"]').get_attribute("value")
            for n in ("csrf_token", "form_id", "invoice")}
    fill(page, "5.00")
    assert pay_calls(caplog) == 0
    page.get_by_role("button", name="Pay now").click()
    page.wait_for_url(f"{portal.url}/billing/receipt/*")
    assert balance(env, "acct-0002") == start - 5
    assert pay_calls(caplog) == 1
    mark = env.live.fingerprint()
    resp = page.request.post(f"{portal.url}/billing/pay", form={**form, **good})
    assert resp.status == 409
    assert "already made. You were charged only once" in resp.text()
    no_card_data(resp.text())
    assert env.live.fingerprint() == mark
    assert len(stored(env, "PaymentReconciliation", "inv-0002-01")) == 1
    assert balance(env, "acct-0002") == start - 5
    # the same in the browser: the old form id in a fresh form (a resent page)
    page.goto(f"{portal.url}/billing/pay/inv-0002-01")
    page.locator('form.pay-form input[name="form_id"]').evaluate("(e, v) => e.value = v",
                                                                 form["form_id"])
    fill(page, "5.00")
    page.get_by_role("button", name="Pay now").click()
    error = page.locator("#err-submit")
    assert "already made. You were charged only once" in error.inner_text()
    assert "err-submit" in page.get_by_role("button", name="Pay now") \
        .get_attribute("aria-describedby")
    receipt_id = stored(env, "PaymentReconciliation", "inv-0002-01")[0]["id"]
    assert page.get_by_role("link", name="See the receipt").get_attribute("href") \
        == f"/billing/receipt/{receipt_id}"
    assert env.live.fingerprint() == mark
    assert pay_calls(caplog) == 1  # the resent forms never reached the server
    check_page(page, "billing-pay-twice")
    # nothing the portal keeps holds card data
    no_card_data(repr([e.data for e in portal.store._items.values()]))


def test_a_double_click_or_two_submits_at_once_pay_once(env, portal, page):
    sign_in(page, portal, "carol", patient="pat-0003")
    page.goto(f"{portal.url}/billing/pay/inv-0003-01")
    start = balance(env, "acct-0003")
    fill(page, "7.25", name="Nancy Smith")
    page.get_by_role("button", name="Pay now").dblclick()
    page.wait_for_selector("dl.receipt, p.error[role=alert]")
    (notice,) = stored(env, "PaymentNotice", "inv-0003-01")
    assert notice["amount"]["value"] == 7.25
    assert len(stored(env, "PaymentReconciliation", "inv-0003-01")) == 1
    assert balance(env, "acct-0003") == start - Decimal("7.25")

    # the same form sent twice at the same moment (the browser sends one per click, so
    # this is done outside it, with the browser's session cookie): one payment, and the
    # second answer says it was already made
    page.goto(f"{portal.url}/billing/pay/inv-0003-01")
    form = {n: page.locator(f'form.pay-form input[name="{n}"]').get_attribute("value")
            for n in ("csrf_token", "form_id", "invoice")}
    form.update(amount="3.00", card_number=CARD, card_expiry=EXPIRY, card_holder="Nancy Smith")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=portal.url, cookies=cookies) as client, \
            ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: client.post("/billing/pay", data=form), range(2)))
    assert sorted(a.status_code for a in answers) == [303, 409]
    twice = next(a for a in answers if a.status_code == 409)
    assert "already made. You were charged only once" in twice.text
    for answer in answers:
        no_card_data(answer.text)
    assert len(stored(env, "PaymentNotice", "inv-0003-01")) == 2
    assert balance(env, "acct-0003") == start - Decimal("10.25")
    page.goto(f"{portal.url}/billing")
    assert page.locator("table.payments tbody tr").count() == 2

    # another patient's receipt and statement look missing
    bob = env.patient_token("app-public", "bob")["access_token"]
    with env.fhir(bob) as fhir:
        paid = fhir.post("Invoice/inv-0002-02/$pay", headers={
            "Idempotency-Key": "other-patient", "Content-Type": "application/fhir+json"},
            json={"resourceType": "Parameters", "parameter": [
                {"name": "amount", "valueMoney": {"value": 1, "currency": "USD"}},
                {"name": "card-number", "valueString": DIGITS},
                {"name": "card-expiry", "valueString": EXPIRY},
                {"name": "card-holder", "valueString": "Laura Clark"}]})
    assert paid.status_code == 201, paid.text
    mark = env.live.fingerprint()
    for path in (f"receipt/{paid.json()['id']}", "statement/acct-0002", "pay/inv-0002-02"):
        resp = page.request.get(f"{portal.url}/billing/{path}")
        assert resp.status == 404, path
        assert "Laura" not in resp.text() and "$1.00" not in resp.text()
    assert env.live.fingerprint() == mark


def test_a_bill_changed_meanwhile_is_checked_again(env, portal, page):
    sign_in(page, portal, "bob")
    page.goto(f"{portal.url}/billing/pay/inv-0002-02")
    original = env.live.adapter.read("Invoice", "inv-0002-02")
    before = stored(env, "PaymentNotice", "inv-0002-02")
    # the clinic's balance went down meanwhile (paid at the desk): more than the balance now
    account = env.live.adapter.read("Account", "acct-0002")
    lowered = {k: v for k, v in account.items() if k != "meta"}
    ext = next(e for e in lowered["extension"] if e["url"] == BALANCE)
    money = next(s for s in ext["extension"] if "valueMoney" in s)
    money["valueMoney"] = {"value": 12.0, "currency": "USD"}
    env.live.adapter.update(lowered)
    try:
        mark = env.live.fingerprint()
        fill(page, "30.00", name="Laura Clark")
        page.get_by_role("button", name="Pay now").click()
        error = page.locator("#err-amount")
        assert "The most you can pay is $12.00" in error.inner_text()
        assert env.live.fingerprint() == mark
        # the clinic cancelled the bill after the page was shown
        cancelled = {k: v for k, v in original.items() if k != "meta"}
        env.live.adapter.update(dict(cancelled, status="cancelled"))
        page.goto(f"{portal.url}/billing/pay/inv-0002-02")
        assert "nothing left to pay" in page.locator("p.notice").inner_text()
        env.live.adapter.update(dict(cancelled, status="issued"))
        page.goto(f"{portal.url}/billing/pay/inv-0002-02")
        env.live.adapter.update(dict(cancelled, status="cancelled"))
        mark = env.live.fingerprint()
        fill(page, "5.00", name="Laura Clark")
        page.get_by_role("button", name="Pay now").click()
        assert "nothing left to pay" in page.locator("p.notice").inner_text()
        assert env.live.fingerprint() == mark
        assert stored(env, "PaymentNotice", "inv-0002-02") == before
    finally:
        env.live.adapter.update({k: v for k, v in account.items() if k != "meta"})
        env.live.adapter.update({k: v for k, v in original.items() if k != "meta"})
