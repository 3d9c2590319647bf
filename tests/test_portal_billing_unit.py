"""The Billing pages' pure rules (`portal.bills`) and, with Flask's test client and a FHIR
server faked by respx, the views' handling of what the server says (refusals in the patient's
words, no card data echoed, the form id sent as the Idempotency-Key)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import httpx
import pytest
import respx

from portal import PortalSettings, bills, create_portal

TODAY = date(2026, 6, 15)
BASE = "http://fhir.test/fhir"
BALANCE = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Account.balance"


def err(result):
    return result[1][0] if result[1] else None


# -- checks ---------------------------------------------------------------------------------

def test_amount_rules():
    most = Decimal("75.50")
    assert bills.check_amount("10", most) == (Decimal("10.00"), None)
    assert bills.check_amount(" $75.50 ", most) == (Decimal("75.50"), None)
    assert bills.check_amount("0.01", most) == (Decimal("0.01"), None)
    for raw, key in (("", "bill.err_amount_empty"), ("  $ ", "bill.err_amount_empty"),
                     ("ten", "bill.err_amount_format"), ("1,000", "bill.err_amount_format"),
                     ("1e2", "bill.err_amount_format"), ("NaN", "bill.err_amount_format"),
                     ("0", "bill.err_amount_small"), ("0.00", "bill.err_amount_small"),
                     ("-5", "bill.err_amount_small"), ("1.005", "bill.err_amount_cents"),
                     ("75.51", "bill.err_amount_over"), ("1" * 13, "bill.err_amount_long")):
        assert err(bills.check_amount(raw, most)) == key, raw
    assert bills.check_amount("80", most)[1] == ("bill.err_amount_over", {"most": "$75.50"})


def test_luhn_and_card_number():
    assert bills.luhn_valid("4111111111111111") and bills.luhn_valid("79927398713")
    assert not bills.luhn_valid("4111111111111112") and not bills.luhn_valid("41x1")
    assert bills.check_card_number("4242-4242-4242-4242") == ("4242424242424242", None)
    assert bills.check_card_number(" 4111 1111 1111 1111 ") == ("4111111111111111", None)
    for raw, key in (("", "bill.err_card_empty"), ("   ", "bill.err_card_empty"),
                     ("4111", "bill.err_card_format"), ("4111 1111 1111 111x",
                                                        "bill.err_card_format"),
                     ("4111111111111112", "bill.err_card_luhn"),
                     ("4111 1111 1111 111\u00b2", "bill.err_card_format"),  # was a 500
                     ("\u0664111111111111111", "bill.err_card_format"),  # Arabic-Indic 4
                     ("4" * 31, "bill.err_card_long")):
        assert err(bills.check_card_number(raw)) == key, raw


def test_expiry():
    assert bills.check_expiry("06/26", TODAY) == ("06/26", None)  # good all month
    assert bills.check_expiry("1130", TODAY) == ("11/30", None)
    assert bills.check_expiry(" 11 / 30 ", TODAY) == ("11/30", None)
    for raw, key in (("", "bill.err_expiry_empty"), ("13/30", "bill.err_expiry_month"),
                     ("00/30", "bill.err_expiry_month"), ("05/26", "bill.err_expiry_past"),
                     ("01/20", "bill.err_expiry_past"), ("2030-11", "bill.err_expiry_format"),
                     ("6/26", "bill.err_expiry_format"), ("11/30/30", "bill.err_expiry_format")):
        assert err(bills.check_expiry(raw, TODAY)) == key, raw


def test_card_holder():
    assert bills.check_holder("  Ann   Example ") == ("Ann Example", None)
    assert err(bills.check_holder("   ")) == "bill.err_name_empty"
    assert bills.check_holder("x" * 101)[1] == ("bill.err_name_long",
                                                 {"length": 101, "max": 100})
    assert bills.check_holder("x" * 100)[1] is None


# -- what a statement shows -------------------------------------------------------------------

def money(value):
    return {"value": value, "currency": "USD"}


def account(aid="acct-1", value=93.5):
    return {"resourceType": "Account", "id": aid, "name": "Patient account",
            "extension": [{"url": BALANCE, "extension": [
                {"url": "amount", "valueMoney": money(value)}]}]}


def invoice(iid, total, status="issued", when="2026-05-25T09:00:00Z", aid="acct-1"):
    return {"resourceType": "Invoice", "id": iid, "status": status, "date": when,
            "account": {"reference": f"Account/{aid}"}, "totalGross": money(total),
            "lineItem": [
                {"sequence": 2, "chargeItemCodeableConcept": {"text": "Lab"},
                 "priceComponent": [{"type": "base", "amount": money(total - 30)}]},
                {"sequence": 1, "chargeItemCodeableConcept": {"text": "Visit"},
                 "priceComponent": [{"type": "base", "amount": money(35)},
                                    {"type": "discount", "amount": money(5)},
                                    {"type": "informational", "amount": money(99)}]}]}


def notice(iid, value, status="active", receipt="pay-1"):
    return {"resourceType": "PaymentNotice", "id": f"pn-{iid}-{value}", "status": status,
            "request": {"reference": f"Invoice/{iid}"}, "amount": money(value),
            "payment": {"reference": f"PaymentReconciliation/{receipt}"}}


def receipt(rid, iid, value, paid="2026-06-15"):
    return {"resourceType": "PaymentReconciliation", "id": rid, "status": "active",
            "paymentDate": paid, "paymentAmount": money(value),
            "paymentIdentifier": {"value": f"offline-{rid}"},
            "extension": [{"url": bills.ACCOUNT_NUMBER_EXTENSION, "valueString": "1111"}],
            "detail": [{"request": {"reference": f"Invoice/{iid}"}, "amount": money(value)}]}


def test_statement_lines_paid_left_and_payments():
    (s,) = bills.statements(
        [account()],
        [invoice("inv-a", 63.5, when="2026-04-01"), invoice("inv-b", 30, "balanced"),
         invoice("inv-c", 40), invoice("other", 10, aid="acct-2")],
        [notice("inv-a", 10), notice("inv-a", 5, status="cancelled")],
        [receipt("pay-1", "inv-a", 10), receipt("pay-x", "other", 3)])
    assert s.id == "acct-1" and s.balance == Decimal("93.5")
    assert [b.id for b in s.bills] == ["inv-c", "inv-b", "inv-a"]  # newest first
    a = s.bills[2]
    assert [(line.what, line.date, line.amount) for line in a.lines] == [
        ("Visit", "2026-04-01", Decimal(30)), ("Lab", "2026-04-01", Decimal("33.5"))]
    assert (a.total, a.paid, a.left, a.can_pay) == (Decimal("63.5"), Decimal(10),
                                                   Decimal("53.5"), True)
    balanced = s.bills[1]
    assert balanced.left == 0 and not balanced.can_pay
    assert [(p.receipt_id, p.amount, p.last4, p.reference, p.date) for p in s.payments] == [
        ("pay-1", Decimal(10), "1111", "offline-pay-1", "2026-06-15")]
    assert bills.most_payable(a, Decimal(20)) == Decimal("20.00")
    assert bills.most_payable(a, Decimal(100)) == Decimal("53.50")
    assert bills.most_payable(a, None) == 0
    (nothing,) = bills.statements([account(value=0)], [invoice("inv-a", 10)], [], [])
    assert not nothing.bills[0].can_pay  # the account owes nothing


def test_words_for_every_invoice_status_and_money():
    from portal.messages import EN, ES

    for status in ("draft", "issued", "balanced", "cancelled", "entered-in-error", "odd"):
        key = bills.status_key(status)
        assert key in EN and key in ES
    assert bills.status_key("odd") == "bill.status.unknown"
    assert bills.usd(Decimal("1234.5")) == "$1,234.50" and bills.usd(None) == "$0.00"
    assert bills.plain(Decimal("7")) == "7.00"


# -- the views, with a faked FHIR server -----------------------------------------------------

@pytest.fixture
def signed_in_client():
    app = create_portal(PortalSettings(fhir_base=BASE, client_id="demo-portal",
                                       redirect_uri="http://127.0.0.1:8081/callback",
                                       secret_key="test-secret"))
    app.config["WTF_CSRF_ENABLED"] = False
    store = app.extensions["portal"].store
    sid, entry = store.create()
    entry.signed_in = True
    entry.fhir_state = {"patient_id": "pat-1", "server": {"auth": {"access_token": "tok"}}}
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["sid"] = sid
    return client, entry


def fake_server(mock, pay_answer):
    mock.get(f"{BASE}/Invoice/inv-a").respond(200, json=invoice("inv-a", 63.5))
    mock.get(f"{BASE}/Account/acct-1").respond(200, json=account())
    mock.get(f"{BASE}/PaymentNotice").respond(200, json={"resourceType": "Bundle",
                                                         "type": "searchset"})
    return mock.post(f"{BASE}/Invoice/inv-a/$pay").mock(side_effect=pay_answer)


def outcome(status, text, expression):
    return httpx.Response(status, json={"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "processing", "diagnostics": text,
         "expression": [expression]}]})


FORM = {"invoice": "inv-a", "amount": "5.00", "card_number": "4111 1111 1111 1111",
        "card_expiry": "11/38", "card_holder": "Ann Example"}


@pytest.mark.parametrize("answer, field, words", [
    (outcome(422, "The card was declined: limit", "card-number"), "card_number",
     "The card was not accepted"),
    (outcome(422, "amount is more than the account balance", "amount"), "amount",
     "What you owe may have just changed"),
    (outcome(422, "Invoice/inv-a is cancelled", "Invoice.status"), "form",
     "can no longer be paid online"),
    (outcome(409, "Too many payments", "amount"), "form", "system was busy. Nothing was paid"),
    (outcome(400, "Something new", "other"), "form", "The payment was not made: Something new"),
])
def test_a_refusal_by_the_server_is_said_next_to_its_field(signed_in_client, answer, field,
                                                         words):
    client, entry = signed_in_client
    with respx.mock(assert_all_called=False) as mock:
        route = fake_server(mock, lambda request: answer)
        page = client.get("/billing/pay/inv-a").get_data(as_text=True)
        fid = page.split('name="form_id" value="')[1].split('"')[0]
        resp = client.post("/billing/pay", data={**FORM, "form_id": fid})
    assert route.call_count == 1
    sent = route.calls[0].request
    assert sent.headers["Idempotency-Key"] == fid
    body = json.loads(sent.content)
    assert {p["name"] for p in body["parameter"]} == {"amount", "card-number", "card-expiry",
                                                      "card-holder"}
    assert "card" not in str(sent.url)
    text = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert f'id="err-{field}" role="alert"' in text and words in text
    assert "4111" not in text and "11/38" not in text and "Ann Example" not in text
    assert fid not in entry.data.get("paid_forms", {})  # nothing paid: the form may be resent


def test_a_timeout_is_retried_with_the_same_key(signed_in_client):
    client, entry = signed_in_client
    answers = iter([httpx.ReadTimeout("slow"),
                    httpx.Response(200, json=receipt("pay-1", "inv-a", 5))])

    def answer(request):
        out = next(answers)
        if isinstance(out, Exception):
            raise out
        return out

    with respx.mock(assert_all_called=False) as mock:
        route = fake_server(mock, answer)
        page = client.get("/billing/pay/inv-a").get_data(as_text=True)
        fid = page.split('name="form_id" value="')[1].split('"')[0]
        resp = client.post("/billing/pay", data={**FORM, "form_id": fid})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/billing/receipt/pay-1")
    assert [c.request.headers["Idempotency-Key"] for c in route.calls] == [fid, fid]
    assert entry.data["paid_forms"][fid] == "pay-1"


def test_bad_input_never_calls_the_server(signed_in_client):
    client, _ = signed_in_client
    with respx.mock(assert_all_called=False) as mock:
        route = fake_server(mock, lambda request: httpx.Response(500))
        page = client.get("/billing/pay/inv-a").get_data(as_text=True)
        fid = page.split('name="form_id" value="')[1].split('"')[0]
        resp = client.post("/billing/pay", data={**FORM, "form_id": fid,
                                                 "card_number": "4111 1111 1111 1112"})
    assert resp.status_code == 400 and route.call_count == 0
    assert "4111" not in resp.get_data(as_text=True)


def test_billing_pages_need_a_sign_in():
    app = create_portal(PortalSettings(fhir_base=BASE, client_id="demo-portal",
                                       redirect_uri="http://127.0.0.1:8081/callback",
                                       secret_key="test-secret"))
    client = app.test_client()
    for path in ("/billing", "/billing/pay/inv-a", "/billing/receipt/pay-1",
                 "/billing/statement/acct-1"):
        resp = client.get(path)
        assert resp.status_code == 302 and resp.headers["Location"].endswith("/signin")


def test_the_pay_page_in_spanish(signed_in_client):
    client, _ = signed_in_client
    with client.session_transaction() as sess:
        sess["lang"] = "es"
    with respx.mock(assert_all_called=False) as mock:
        fake_server(mock, lambda request: httpx.Response(500))
        text = client.get("/billing/pay/inv-a").get_data(as_text=True)
    assert '<html lang="es"' in text
    for words in ("Pagar una factura", "Número de tarjeta", "Nombre en la tarjeta",
                  "Desde $0.01 hasta $63.50", "Pagar ahora"):
        assert words in text
    assert 'autocomplete="cc-number"' in text and 'autocomplete="cc-exp"' in text
    assert 'autocomplete="cc-name"' in text and 'value="63.50"' in text


def test_an_unknown_balance_is_not_shown_as_nothing_owed(signed_in_client):
    client, _ = signed_in_client
    no_balance = {k: v for k, v in account().items() if k != "extension"}
    with respx.mock(assert_all_called=False) as mock:
        fake_server(mock, lambda request: httpx.Response(500))
        mock.get(f"{BASE}/Account/acct-1").respond(200, json=no_balance)
        page = client.get("/billing/pay/inv-a").get_data(as_text=True)
    assert "cannot show this account&#39;s balance" in page
    assert "You owe nothing" not in page


def test_a_receipt_the_ehr_cannot_give_back_is_shown_from_the_payments_answer(
        signed_in_client):
    """Where the gateway keeps payments in its own ledger, reading the receipt back from the
    EHR is a 404: the page shows what `$pay` answered in this session (and no stale
    balance); another session's or an unknown receipt stays not found."""
    client, entry = signed_in_client
    with respx.mock(assert_all_called=False) as mock:
        fake_server(mock, lambda request: httpx.Response(200, json=receipt("led-1", "inv-a", 5)))
        mock.get(f"{BASE}/PaymentReconciliation/led-1").respond(404, json={
            "resourceType": "OperationOutcome", "issue": [{"severity": "error",
                                                           "code": "not-found"}]})
        mock.get(f"{BASE}/PaymentReconciliation/led-2").respond(404)
        page = client.get("/billing/pay/inv-a").get_data(as_text=True)
        fid = page.split('name="form_id" value="')[1].split('"')[0]
        resp = client.post("/billing/pay", data={**FORM, "form_id": fid})
        assert resp.status_code == 303 and resp.headers["Location"].endswith("/receipt/led-1")
        shown = client.get("/billing/receipt/led-1")
        assert client.get("/billing/receipt/led-2").status_code == 404
    text = shown.get_data(as_text=True)
    assert shown.status_code == 200 and "$5.00" in text and "1111" in text
    assert "cannot show this account&#39;s balance" in text and "4111 1111" not in text
    assert set(entry.data["receipts"]) == {"led-1"}
