"""Billing: the pure rules and builders, the offline provider, and `Invoice/$pay` and
`Account/$statement` over HTTP with real SMART patient tokens, checked in the stored resources.

Seed (generate(3, 7, 2026-06-15)): ann = pat-0001, acct-0001 balance 93.50 from inv-0001-01
(63.50, issued) and inv-0001-03 (30.00, issued); inv-0001-02 is balanced. bob = pat-0002,
acct-0002 balance 105.50 from inv-0002-01 (75.50) and inv-0002-02 (30.00). Tests run in file
order and each reads the balance it starts from.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal

import fhirclient.models.fhirelementfactory as factory
import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhir_gateway.payments import Card, OfflinePaymentProvider
from mappings.portal import billing
from mappings.portal.billing import BillingError

CARD = "4111 1111 1111 1111"
DIGITS = CARD.replace(" ", "")
EXPIRY = "11/38"
SEEN: list[str] = []  # every response body, checked for card data at the end


def _valid(resource: dict) -> None:
    rtype = resource["resourceType"]
    get_fhir_model_class(rtype).model_validate(resource)
    factory.FHIRElementFactory.instantiate(rtype, resource)  # FHIR 4.0.1, strict


# -- pure rules -------------------------------------------------------------------------------

def test_luhn_and_card_number():
    assert billing.luhn_valid("4111111111111111") and billing.luhn_valid("79927398713")
    assert not billing.luhn_valid("4111111111111112") and not billing.luhn_valid("12a4")
    assert not billing.luhn_valid("411111111111111\u00b2")  # isdigit() says yes, int() fails
    assert billing.parse_card_number("4242-4242-4242-4242") == "4242424242424242"
    for bad in ("4111111111111112", "4111", "4111 1111 1111 111x", 4111111111111111, ""):
        with pytest.raises(BillingError) as err:
            billing.parse_card_number(bad)
        assert err.value.field == "card-number" and "4111" not in err.value.message


def test_expiry():
    today = date(2026, 6, 15)
    assert billing.parse_expiry("06/26", today) == billing.Expiry(6, 2026)  # good all month
    assert billing.parse_expiry("01/31", today).year == 2031
    for bad in ("05/26", "13/30", "00/30", "6/26", "2030-01", None):
        with pytest.raises(BillingError) as err:
            billing.parse_expiry(bad, today)
        assert err.value.field == "card-expiry"


def test_amount_rules():
    assert billing.parse_amount({"value": 10.5, "currency": "USD"}) == Decimal("10.50")
    assert billing.parse_amount({"value": "0.01", "currency": "USD"}) == Decimal("0.01")
    for bad in ({"value": 0, "currency": "USD"}, {"value": -1, "currency": "USD"},
                {"value": 1.005, "currency": "USD"}, {"value": 5, "currency": "EUR"},
                {"value": True, "currency": "USD"}, {"value": "nan", "currency": "USD"},
                {"value": 5}, "5.00", None):
        with pytest.raises(BillingError) as err:
            billing.parse_amount(bad)
        assert err.value.field == "amount"
    billing.check_amount(Decimal("30"), Decimal("93.5"), Decimal("30"))
    with pytest.raises(BillingError, match="account balance"):
        billing.check_amount(Decimal("94"), Decimal("93.5"), Decimal("100"))
    with pytest.raises(BillingError, match="outstanding"):
        billing.check_amount(Decimal("31"), Decimal("93.5"), Decimal("30"))


def _seed(rtype: str, rid: str) -> dict:
    from fhir_gateway.synthetic import generate

    return next(r for r in generate(3, 7, date(2026, 6, 15))
                if r["resourceType"] == rtype and r["id"] == rid)


def test_builders_validate_as_r4():
    invoice, account = _seed("Invoice", "inv-0001-01"), _seed("Account", "acct-0001")
    key = billing.idempotency_hash("inv-0001-01", "k1")
    pr_id, pn_id = billing.payment_ids(key)
    assert len(key) == 64 and pr_id.startswith("pay-") and len(pr_id) <= 64
    receipt = billing.build_payment_reconciliation(
        id=pr_id, key_hash=key, invoice=invoice, patient_ref=invoice["subject"],
        amount=Decimal("12.30"), card_last4="1111", transaction_id="t-1",
        created="2026-06-15T10:00:00Z", payment_date="2026-06-15")
    notice = billing.build_payment_notice(
        id=pn_id, key_hash=key, invoice=invoice, patient_ref=invoice["subject"],
        amount=Decimal("12.30"), reconciliation_id=pr_id, created="2026-06-15T10:00:00Z",
        payment_date="2026-06-15")
    lowered = billing.with_balance(account, Decimal("81.20"))
    paid = billing.balanced_invoice(invoice)
    for resource in (receipt, notice, lowered, paid):
        _valid(resource)
    assert billing.account_balance(lowered) == Decimal("81.2")
    assert billing.account_balance(account) == Decimal("93.5")
    assert paid["status"] == "balanced" and invoice["status"] == "issued"
    assert billing.invoice_outstanding(invoice, [notice]) == Decimal("51.20")
    assert billing.invoice_outstanding(invoice, [dict(notice, status="cancelled")]) \
        == Decimal("63.50")
    assert receipt["detail"][0]["request"] == {"reference": "Invoice/inv-0001-01"}


def test_offline_provider_checks_card_and_keeps_last_four():
    provider = OfflinePaymentProvider(today=lambda: date(2026, 6, 15))
    card = Card(DIGITS, EXPIRY, "Ann Example")
    assert DIGITS not in repr(card) and EXPIRY not in repr(card)
    first = provider.charge(card, Decimal("5"), "USD", "key-1")
    again = provider.charge(card, Decimal("5"), "USD", "key-1")
    assert first.approved and first == again and first.last4 == "1111"
    assert DIGITS not in repr(first) and DIGITS not in repr(provider.__dict__)
    assert not provider.charge(Card("4111111111111112", EXPIRY), Decimal("5"), "USD",
                               "key-2").approved
    assert not provider.charge(Card(DIGITS, "05/26"), Decimal("5"), "USD", "key-3").approved
    provider.void(first)
    assert first.transaction_id in provider.voided
    renewed = provider.charge(card, Decimal("5"), "USD", "key-1")  # voided: a new charge
    assert renewed.approved and renewed.transaction_id != first.transaction_id


# -- over HTTP --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ann(smart_env):
    return smart_env.patient_token("app-public", "ann")["access_token"]


@pytest.fixture(scope="module")
def bob(smart_env):
    return smart_env.patient_token("app-public", "bob")["access_token"]


def _params(amount=None, currency="USD", card=CARD, expiry=EXPIRY, holder="Robert Garcia"):
    params = []
    if amount is not None:
        params.append({"name": "amount", "valueMoney": {"value": amount, "currency": currency}})
    if card is not None:
        params.append({"name": "card-number", "valueString": card})
    if expiry is not None:
        params.append({"name": "card-expiry", "valueString": expiry})
    if holder is not None:
        params.append({"name": "card-holder", "valueString": holder})
    return {"resourceType": "Parameters", "parameter": params}


def _pay(smart_env, token: str, invoice: str, amount, key: str | None = None, **kw):
    headers = {"Content-Type": "application/fhir+json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    with smart_env.fhir(token) as client:
        resp = client.post(f"Invoice/{invoice}/$pay", json=_params(amount, **kw),
                           headers=headers)
    SEEN.append(resp.text)
    return resp


def _balance(smart_env, account: str) -> Decimal:
    return billing.account_balance(smart_env.live.adapter.read("Account", account))


def _status(smart_env, invoice: str) -> str:
    return smart_env.live.adapter.read("Invoice", invoice)["status"]


def test_pay_part_then_the_rest(smart_env, ann, caplog):
    caplog.set_level("DEBUG")
    start = _balance(smart_env, "acct-0001")
    part = _pay(smart_env, ann, "inv-0001-03", 10, str(uuid.uuid4()))
    assert part.status_code == 201, part.text
    receipt = part.json()
    assert receipt["resourceType"] == "PaymentReconciliation" and receipt["status"] == "active"
    assert receipt["paymentAmount"] == {"value": 10.0, "currency": "USD"}
    assert receipt["detail"][0]["request"] == {"reference": "Invoice/inv-0001-03"}
    assert {"url": billing.ACCOUNT_NUMBER_EXTENSION, "valueString": "1111"} \
        in receipt["extension"]
    assert part.headers["Location"].endswith(
        f"PaymentReconciliation/{receipt['id']}/_history/{receipt['meta']['versionId']}")
    assert _balance(smart_env, "acct-0001") == start - 10
    assert _status(smart_env, "inv-0001-03") == "issued"

    rest = _pay(smart_env, ann, "inv-0001-03", 20, str(uuid.uuid4()))
    assert rest.status_code == 201, rest.text
    assert _balance(smart_env, "acct-0001") == start - 30
    assert _status(smart_env, "inv-0001-03") == "balanced"
    store = smart_env.live.adapter
    stored = store.read("PaymentReconciliation", rest.json()["id"])
    notice = store.read("PaymentNotice", billing.payment_ids(stored["identifier"][0]["value"])[1])
    for resource in (stored, notice, store.read("Account", "acct-0001"),
                     store.read("Invoice", "inv-0001-03")):
        _valid(resource)
    assert notice["request"] == {"reference": "Invoice/inv-0001-03"}
    assert notice["payment"] == {"reference": f"PaymentReconciliation/{stored['id']}"}
    assert not any(DIGITS in r.getMessage() or EXPIRY in r.getMessage() for r in caplog.records)


def test_same_key_sequential_counts_once(smart_env, ann):
    key = str(uuid.uuid4())
    start = _balance(smart_env, "acct-0001")
    first = _pay(smart_env, ann, "inv-0001-01", 5, key)
    assert first.status_code == 201, first.text
    before = smart_env.live.fingerprint()
    again = _pay(smart_env, ann, "inv-0001-01", 5, key)
    other_amount = _pay(smart_env, ann, "inv-0001-01", 7, key)
    assert again.status_code == 200 and other_amount.status_code == 200
    assert again.json() == first.json() == other_amount.json()
    assert smart_env.live.fingerprint() == before
    assert _balance(smart_env, "acct-0001") == start - 5
    # The key is per invoice: the same key elsewhere is another payment.
    elsewhere = _pay(smart_env, ann, "inv-0001-02", 5, key)
    assert elsewhere.status_code == 422  # balanced, so refused rather than replayed


def test_same_key_concurrent_counts_once(smart_env, ann):
    key = str(uuid.uuid4())
    start = _balance(smart_env, "acct-0001")
    with ThreadPoolExecutor(10) as pool:
        got = list(pool.map(lambda _: _pay(smart_env, ann, "inv-0001-01", 5, key), range(10)))
    codes = sorted(r.status_code for r in got)
    assert codes == [200] * 9 + [201], [r.text for r in got if r.status_code >= 300]
    assert len({r.json()["id"] for r in got}) == 1
    assert _balance(smart_env, "acct-0001") == start - 5
    hashed = billing.idempotency_hash("inv-0001-01", key)
    assert smart_env.live.adapter.read("PaymentNotice", billing.payment_ids(hashed)[1])


def test_concurrent_different_keys_cannot_overdraw(smart_env, bob):
    start = _balance(smart_env, "acct-0002")  # 105.50; inv-0002-01 owes 75.50
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: _pay(smart_env, bob, "inv-0002-01", 20,
                                           str(uuid.uuid4()), holder="Bob"), range(8)))
    paid = [r for r in got if r.status_code == 201]
    refused = [r for r in got if r.status_code != 201]
    assert all(r.status_code in (409, 422) for r in refused), [r.text for r in refused]
    assert all(r.json()["issue"][0]["expression"] == ["amount"] for r in refused)
    provider = smart_env.live.app.extensions["fhir_gateway"].service.payment_provider
    assert not {r.json()["paymentIdentifier"]["value"] for r in paid} & provider.voided
    assert len(provider.voided) <= len(refused)  # a charge that lost the race is voided
    assert len(paid) == 3 or any(r.status_code == 409 for r in refused)
    assert 1 <= len(paid) <= 3
    assert _balance(smart_env, "acct-0002") == start - 20 * len(paid)
    notices = [n for n in smart_env.live.adapter.iter_all()
               if n["resourceType"] == "PaymentNotice"
               and n["request"]["reference"] == "Invoice/inv-0002-01"]
    assert len(notices) == len(paid)
    assert _status(smart_env, "inv-0002-01") == "issued"


@pytest.fixture(scope="module")
def cancelled_invoice(smart_env):
    invoice = dict(_seed("Invoice", "inv-0001-01"), id="inv-0001-99", status="cancelled")
    smart_env.live.adapter.update(invoice)
    return "inv-0001-99"


REFUSALS = [
    # (name, invoice, amount, body overrides, key?, status, expression)
    ("zero", "inv-0001-01", 0, {}, True, 422, "amount"),
    ("negative", "inv-0001-01", -5, {}, True, 422, "amount"),
    ("above balance", "inv-0001-01", 1000, {}, True, 422, "amount"),
    ("sub-cent", "inv-0001-01", 1.001, {}, True, 422, "amount"),
    ("wrong currency", "inv-0001-01", 5, {"currency": "EUR"}, True, 422, "amount"),
    ("no amount", "inv-0001-01", None, {}, True, 400, "amount"),
    ("bad luhn", "inv-0001-01", 5, {"card": "4111 1111 1111 1112"}, True, 422, "card-number"),
    ("short card", "inv-0001-01", 5, {"card": "1234"}, True, 422, "card-number"),
    ("expired", "inv-0001-01", 5, {"expiry": "01/20"}, True, 422, "card-expiry"),
    ("bad expiry", "inv-0001-01", 5, {"expiry": "2038-11"}, True, 422, "card-expiry"),
    ("no expiry", "inv-0001-01", 5, {"expiry": None}, True, 400, "card-expiry"),
    ("no holder", "inv-0001-01", 5, {"holder": None}, True, 400, "card-holder"),
    ("no key", "inv-0001-01", 5, {}, False, 400, "Idempotency-Key"),
    ("balanced", "inv-0001-02", 5, {}, True, 422, "Invoice.status"),
    ("cancelled", "inv-0001-99", 5, {}, True, 422, "Invoice.status"),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refusals_change_nothing(smart_env, ann, cancelled_invoice, case):
    _, invoice, amount, overrides, with_key, status, expression = case
    before = smart_env.live.fingerprint()
    resp = _pay(smart_env, ann, invoice, amount, str(uuid.uuid4()) if with_key else None,
                **overrides)
    assert resp.status_code == status, resp.text
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [expression]
    assert smart_env.live.fingerprint() == before


@pytest.mark.parametrize("invoice", ["inv-0002-02", "inv-0003-01", "no-such-invoice"])
def test_another_patients_invoice_is_not_found(smart_env, ann, invoice):
    before = smart_env.live.fingerprint()
    resp = _pay(smart_env, ann, invoice, 5, str(uuid.uuid4()))
    assert resp.status_code == 404, resp.text
    assert resp.json()["issue"][0]["diagnostics"] == f"Invoice/{invoice} is not known"
    assert smart_env.live.fingerprint() == before


def test_card_details_in_the_url_are_refused(smart_env, ann):
    before = smart_env.live.fingerprint()
    with smart_env.fhir(ann) as client:
        resp = client.post("Invoice/inv-0001-01/$pay", params={"card-number": DIGITS},
                           json=_params(5), headers={"Idempotency-Key": str(uuid.uuid4()),
                                                     "Content-Type": "application/fhir+json"})
    assert resp.status_code == 400 and resp.json()["issue"][0]["expression"] == ["card-number"]
    assert smart_env.live.fingerprint() == before


def test_statement_page(smart_env, ann):
    with smart_env.fhir(ann) as client:
        page = client.get("Account/acct-0001/$statement",
                          headers={"Accept": "text/html,*/*;q=0.8"})
        other = client.get("Account/acct-0002/$statement")
    SEEN.append(page.text)
    assert page.status_code == 200, page.text
    assert page.headers["Content-Type"].startswith("text/html")
    text = page.text
    assert text.startswith("<!DOCTYPE html>") and '<html lang="en">' in text
    for line in ("Office visit, established patient (primary care copay)",
                 "Comprehensive metabolic panel (patient share)", "Lipid panel (patient share)",
                 "inv-0001-01", "inv-0001-03", "$63.50", "Card ending 1111"):
        assert line in text
    balance = _balance(smart_env, "acct-0001")
    assert f"Balance due: ${balance:,.2f}" in text
    assert "<script" not in text and "src=" not in text and "http" not in text
    assert other.status_code == 404


def test_no_card_data_stored_or_returned(smart_env):
    config = smart_env.live.config
    remote = config.adapter.kind == "fhir_rest"
    data = config.data_path.parent if remote else config.data_path  # the upstream's files too
    files = [p for p in data.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert "gateway.sqlite3" in names  # the gateway's state and audit log
    if not remote or config.fhir_rest.vendor == "fhir-gateway":
        assert "ehr.sqlite3" in names  # the EHR store (Medplum keeps it in memory)
    for path in files:
        raw = path.read_bytes()
        for secret in (DIGITS, CARD, EXPIRY):
            assert secret.encode() not in raw, f"{secret!r} in {path.name}"
    assert SEEN and not any(DIGITS in body or CARD in body or EXPIRY in body for body in SEEN)


def test_a_payment_whose_answer_was_lost_keeps_its_charge(smart_env, ann, monkeypatch):
    """The EHR stored the payment's transaction but its answer never came: the charge is not
    voided (the receipt is there), the caller hears 503, and a retry with the same key gets
    that receipt, counted once."""
    from adapters.errors import UpstreamUnavailable

    service = smart_env.live.app.extensions["fhir_gateway"].service
    provider = service.payment_provider
    stored = service.adapter.transaction

    def answer_lost(entries):
        stored(entries)
        raise UpstreamUnavailable("The EHR (ehr) timed out")

    key = str(uuid.uuid4())
    start = _balance(smart_env, "acct-0001")
    monkeypatch.setattr(service.adapter, "transaction", answer_lost)
    lost = _pay(smart_env, ann, "inv-0001-01", 3, key)
    monkeypatch.undo()
    assert lost.status_code == 503, lost.text
    again = _pay(smart_env, ann, "inv-0001-01", 3, key)
    assert again.status_code == 200, again.text
    assert again.json()["paymentIdentifier"]["value"] not in provider.voided
    assert _balance(smart_env, "acct-0001") == start - 3



def test_a_payment_held_behind_queued_writes_is_not_charged_and_can_be_paid_again(
        smart_env, ann, monkeypatch):
    """Over an EHR that may be down, a write to the account still waits in the outbox: the
    payment must not overtake it. The card is not charged, nothing is sent, the caller hears
    503; should a write be queued between that check and the record, the record is held back
    and the charge voided. Once the queued write is gone the same key pays."""
    service = smart_env.live.app.extensions["fhir_gateway"].service
    if service.outbox is None:
        pytest.skip("the embedded store is never down: it keeps no outbox")
    provider = service.payment_provider
    charges = []
    real_charge = provider.charge
    monkeypatch.setattr(provider, "charge", lambda *a: charges.append(a) or real_charge(*a))
    account = {k: v for k, v in smart_env.live.adapter.read("Account", "acct-0001").items()
               if k != "meta"}
    head = service.outbox.enqueue(
        method="PUT", resource_type="Account", resource_id="acct-0001", body=account,
        if_match=None, write_id=None, lane="", client_id="", error="test: waits",
        retry_after=3600)
    key = str(uuid.uuid4())
    start, voided = _balance(smart_env, "acct-0001"), set(provider.voided)
    try:
        _held_then_paid(smart_env, ann, monkeypatch, service, head, key, start, voided, charges)
    finally:
        service.outbox.drop(head.id)  # never left to hold the module's later payments


def _held_then_paid(smart_env, ann, monkeypatch, service, head, key, start, voided, charges):
    from fhir_gateway.operations import billing as billing_op

    provider = service.payment_provider
    held = _pay(smart_env, ann, "inv-0001-01", 2, key)
    assert held.status_code == 503, held.text
    assert "still waiting for the EHR" in held.json()["issue"][0]["diagnostics"]
    assert 3500 <= int(held.headers["Retry-After"]) <= 3600  # when the queued write is due
    assert charges == [] and provider.voided == voided  # the card was never charged

    # the backstop: a write queued after the check holds the record back; the charge goes back
    monkeypatch.setattr(billing_op._EhrBooks, "clear", lambda self, account, invoice: None)
    raced = _pay(smart_env, ann, "inv-0001-01", 2, key)
    assert raced.status_code == 503, raced.text
    assert len(charges) == 1 and len(provider.voided - voided) == 1
    assert _balance(smart_env, "acct-0001") == start
    monkeypatch.undo()

    assert service.outbox.drop(head.id)
    # a queued write that names no patient (the shared lane "") holds no patient's payment
    unrelated = service.outbox.enqueue(
        method="PUT", resource_type="Practitioner", resource_id="prac-unrelated",
        body={"resourceType": "Practitioner", "id": "prac-unrelated"}, if_match=None,
        write_id=None, lane="", client_id="", error="test: waits", retry_after=3600)
    try:
        paid = _pay(smart_env, ann, "inv-0001-01", 2, key)
    finally:
        service.outbox.drop(unrelated.id)
    assert paid.status_code == 201, paid.text
    assert paid.json()["paymentIdentifier"]["value"] not in provider.voided
    assert _balance(smart_env, "acct-0001") == start - 2


def test_a_payment_undone_after_a_lost_answer_is_voided_and_can_be_paid_again(smart_env, ann,
                                                                             monkeypatch):
    """Entry by entry (Medplum), the receipt landed, the Account update got no answer and the
    undo deleted the receipt: no receipt (410), so the charge is voided, and a retry with the
    same key is a new charge that is recorded."""
    from adapters.errors import UpstreamUnavailable

    service = smart_env.live.app.extensions["fhir_gateway"].service
    provider = service.payment_provider

    def undone(entries):
        receipt = entries[0].resource
        assert receipt["resourceType"] == "PaymentReconciliation"
        service.adapter.update(dict(receipt))
        service.adapter.delete("PaymentReconciliation", receipt["id"])
        raise UpstreamUnavailable("The EHR (ehr) timed out")

    key = str(uuid.uuid4())
    start = _balance(smart_env, "acct-0001")
    voided = set(provider.voided)
    monkeypatch.setattr(service.adapter, "transaction", undone)
    lost = _pay(smart_env, ann, "inv-0001-01", 2, key)
    monkeypatch.undo()
    assert lost.status_code == 503, lost.text
    assert len(provider.voided - voided) == 1  # the charge went back
    again = _pay(smart_env, ann, "inv-0001-01", 2, key)
    assert again.status_code == 201, again.text
    assert again.json()["paymentIdentifier"]["value"] not in provider.voided
    assert _balance(smart_env, "acct-0001") == start - 2
