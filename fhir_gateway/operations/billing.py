"""`Invoice/{id}/$pay` (a card payment) and `Account/{id}/$statement` (a printable statement).

Confinement follows `everything.py`: the Invoice and Account are read through
`service._visible`, so another patient's look missing (404). `$pay` checks everything before it
writes, then stores the receipt (PaymentReconciliation), the PaymentNotice against the Invoice,
the lowered Account balance and (when paid in full) the `balanced` Invoice in one
`adapter.transaction`, with If-Match on the Account's version. Every payment moves the Account,
so a concurrent payment that read the same balance loses the If-Match and starts over from fresh
reads: two payments can never both spend the same balance, and a concurrent duplicate of the
same Idempotency-Key then finds the winner's receipt and returns it (200). The key is kept only
hashed (see `mappings.portal.billing`); card numbers and expiries are never stored, logged,
echoed in an error, or written to the audit log (which records the operation, not its body).
"""

from __future__ import annotations

import html
import random
import time
from datetime import UTC, datetime
from decimal import Decimal

from adapters.base import BundleEntryRequest
from adapters.errors import (
    Conflict,
    Gone,
    HeldBack,
    Invalid,
    NotFound,
    PreconditionFailed,
    Unprocessable,
    UpstreamError,
    UpstreamUnavailable,
)
from fhir_gateway.ledger import LedgerConflict
from fhir_gateway.operations.registry import (
    Fallback,
    OperationContext,
    OperationSpec,
    ParamSpec,
)
from fhir_gateway.payments import Card, PaymentProvider, PaymentResult
from fhir_gateway.request import FhirRequest, FhirResponse
from fhir_gateway.service import version_headers
from fhir_gateway.validation import validate_resource
from mappings.portal import billing
from mappings.portal.billing import BillingError

MAX_ATTEMPTS = 12  # optimistic retries when concurrent payments move the Account
CARD_PARAMS = ("card-number", "card-expiry", "card-holder")
MAX_KEY_LENGTH = 255


def payment_provider(service: object) -> PaymentProvider:
    """The service's payment provider (the built-in offline one unless configured otherwise)."""
    return service.payment_provider


def _now() -> datetime:
    return datetime.now(UTC)


def _refuse(exc: BillingError) -> Unprocessable:
    return Unprocessable(exc.message, expression=exc.field)


def _visible(ctx: OperationContext, rtype: str, rid: str) -> dict:
    service = ctx.service
    read = FhirRequest("read", rtype, rid, principal=ctx.request.principal)
    return service._visible(service.decide(read), rtype, rid)


def _account_of(ctx: OperationContext, invoice: dict) -> dict:
    ref = (invoice.get("account") or {}).get("reference", "")
    kind, _, aid = ref.rpartition("/")
    if not kind.endswith("Account") or not aid:
        raise Unprocessable("The invoice is not on an account", expression="Invoice.account")
    return _visible(ctx, "Account", aid)


def _search_all(ctx: OperationContext, rtype: str, params: list[tuple[str, str]]) -> list[dict]:
    """Every match, as the caller may see them (trusted callers see all)."""
    service = ctx.service
    decision = None
    if ctx.request.principal is not None:
        decision = service.decide(FhirRequest("search-type", rtype,
                                              principal=ctx.request.principal))
    narrowing = decision.narrowing if decision is not None else []
    query = service.search_query(rtype, params + list(narrowing), strict=True).query
    query.count, query.with_total = 200, False
    found: list[dict] = []
    while True:
        page = service.adapter.search(rtype, query)
        found += [r for r in page.resources if decision is None or decision.permits(r)]
        if not page.next_cursor:
            return found
        query.cursor = page.next_cursor


def _notices(ctx: OperationContext, invoice_id: str) -> list[dict]:
    """PaymentNotices against the invoice, read by the server (its own bookkeeping)."""
    service = ctx.service
    query = service.search_query("PaymentNotice", [("request", f"Invoice/{invoice_id}")],
                                 strict=True).query
    query.count, query.with_total = 200, False
    found: list[dict] = []
    while True:
        page = service.adapter.search("PaymentNotice", query)
        found += page.resources
        if not page.next_cursor:
            return found
        query.cursor = page.next_cursor


def _existing(ctx: OperationContext, pr_id: str, key_hash: str) -> dict | None:
    try:
        found = ctx.service.adapter.read("PaymentReconciliation", pr_id)
    except (NotFound, Gone):  # none, or one an undone transaction deleted: no receipt
        return None
    keys = {(i.get("system"), i.get("value")) for i in found.get("identifier") or []}
    return found if (billing.IDEMPOTENCY_SYSTEM, key_hash) in keys else None


def _idempotency_key(ctx: OperationContext) -> str:
    key = (ctx.request.headers.get("idempotency-key") or "").strip()
    if not key:
        raise Invalid("$pay needs an Idempotency-Key header (a fresh random value per payment)",
                      expression="Idempotency-Key")
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Invalid(f"Idempotency-Key must be at most {MAX_KEY_LENGTH} printable characters",
                      expression="Idempotency-Key")
    return key


def _card(ctx: OperationContext) -> Card:
    number = ctx.one("card-number", required=True)
    expiry = ctx.one("card-expiry", required=True)
    holder = ctx.one("card-holder", required=True)
    if not isinstance(holder, str) or not holder.strip():
        raise Invalid("card-holder must be the name on the card", expression="card-holder")
    try:
        digits = billing.parse_card_number(number)
        billing.parse_expiry(expiry, _now().date())
    except BillingError as exc:
        raise _refuse(exc) from None
    return Card(digits, str(expiry).strip(), holder.strip())


class _EhrBooks:
    """Payments recorded in the EHR: one transaction (receipt, notice, Account with If-Match,
    Invoice balanced when paid in full)."""

    def __init__(self, ctx: OperationContext, invoice: dict, account: dict, pr_id: str,
                 pn_id: str, key_hash: str) -> None:
        self.ctx, self.pr_id, self.pn_id, self.key_hash = ctx, pr_id, pn_id, key_hash
        self.invoice_id, self.account_id = invoice["id"], account["id"]

    def existing(self) -> dict | None:
        return _existing(self.ctx, self.pr_id, self.key_hash)

    def clear(self, account: dict, invoice: dict) -> None:
        """Before the card is charged: the record must not wait behind queued writes (else
        `record` is held back, and the charge voided)."""
        self.ctx.service.clear_to_write([
            BundleEntryRequest("PUT", "PaymentReconciliation", self.pr_id),
            BundleEntryRequest("PUT", "PaymentNotice", self.pn_id),
            BundleEntryRequest("PUT", "Account", account["id"], account),
            BundleEntryRequest("PUT", "Invoice", invoice["id"], invoice)])

    def read(self) -> tuple[dict, dict, list[dict], Decimal]:
        """Account, Invoice, the invoice's notices, and payments not yet in the balance.
        Account first: any payment stored after this read moves it, so our If-Match fails
        and we start over rather than act on what we read after it."""
        adapter = self.ctx.service.adapter
        account = adapter.read("Account", self.account_id)
        invoice = adapter.read("Invoice", self.invoice_id)
        return account, invoice, _notices(self.ctx, self.invoice_id), Decimal(0)

    def record(self, account: dict, invoice: dict, balance: Decimal, outstanding: Decimal,
               amount: Decimal, charged: PaymentResult) -> FhirResponse | None:
        entries = _entries(invoice, account, self.pr_id, self.pn_id, self.key_hash, amount,
                           balance, outstanding, charged)
        try:
            results = self.ctx.service.transaction(entries)
        except PreconditionFailed:
            return None
        return self.ctx.service.write_response(results[0], self.ctx.request, self.ctx.base,
                                               201)


class _LedgerBooks:
    """Payments recorded in the gateway's ledger (the EHR takes no payment resources): the
    EHR's Invoice and Account are read once; balances are theirs less the ledger's."""

    def __init__(self, ctx: OperationContext, invoice: dict, account: dict, pr_id: str,
                 pn_id: str, key_hash: str) -> None:
        self.ledger = ctx.service.ledger
        self.invoice, self.account = invoice, account
        self.pr_id, self.pn_id, self.key_hash = pr_id, pn_id, key_hash
        self.version = 0

    def existing(self) -> dict | None:
        return self.ledger.receipt(self.key_hash)

    def clear(self, account: dict, invoice: dict) -> None:
        """The ledger is the gateway's own: nothing waits in front of it."""

    def read(self) -> tuple[dict, dict, list[dict], Decimal]:
        paid, self.version = self.ledger.paid_on_account(self.account["id"])
        notices = [notice for notice, _ in self.ledger.payments(self.invoice["id"])]
        return self.account, self.invoice, notices, paid

    def record(self, account: dict, invoice: dict, balance: Decimal, outstanding: Decimal,
               amount: Decimal, charged: PaymentResult) -> FhirResponse | None:
        receipt, notice = _receipt_and_notice(invoice, self.pr_id, self.pn_id, self.key_hash,
                                              amount, charged)
        receipt["meta"] = {"versionId": "1", "lastUpdated": receipt["created"]}
        try:
            self.ledger.record(key_hash=self.key_hash, account_id=account["id"],
                               invoice_id=invoice["id"], amount=amount, receipt=receipt,
                               notice=notice, seen_version=self.version)
        except LedgerConflict:
            return None
        return FhirResponse(201, receipt, version_headers(receipt))


def pay(ctx: OperationContext) -> FhirResponse:
    req, service = ctx.request, ctx.service
    for name in CARD_PARAMS:
        if any(k == name for k, _ in req.params):
            raise Invalid("Card details go in the POST body, never in the URL", expression=name)
    if req.body is None:
        raise Invalid("$pay takes a POST with a Parameters body", expression="Parameters")
    invoice_id = service.check_id(req.id)
    key = _idempotency_key(ctx)
    invoice = _visible(ctx, "Invoice", invoice_id)
    account = _account_of(ctx, invoice)
    key_hash = billing.idempotency_hash(invoice_id, key)
    pr_id, pn_id = billing.payment_ids(key_hash)
    ledger = PAY.path(service.caps)[0] == "fallback"
    books = (_LedgerBooks if ledger else _EhrBooks)(ctx, invoice, account, pr_id, pn_id,
                                                     key_hash)
    first = books.existing()
    if first is not None:
        return FhirResponse(200, first, version_headers(first))
    try:
        amount = billing.parse_amount(ctx.one("amount", required=True))
    except BillingError as exc:
        raise _refuse(exc) from None
    card = _card(ctx)
    provider = payment_provider(service)
    charged: PaymentResult | None = None
    recorded = False
    in_doubt = False  # a record was sent and no answer says whether it was stored
    try:
        for _attempt in range(MAX_ATTEMPTS):
            account, invoice, notices, taken = books.read()
            first = books.existing()
            if first is not None:
                recorded = True  # the same key's concurrent twin won: its charge is ours
                return FhirResponse(200, first, version_headers(first))
            if invoice.get("status") != "issued":
                raise Unprocessable(f"Invoice/{invoice_id} is {invoice.get('status')}, "
                                    "not open for payment", expression="Invoice.status")
            balance = billing.account_balance(account)
            if balance is None:
                raise Unprocessable("The account has no balance in US dollars to pay",
                                    expression="Invoice.account")
            outstanding = billing.invoice_outstanding(invoice, notices)
            try:
                billing.check_amount(amount, balance - taken, outstanding)
            except BillingError as exc:
                raise _refuse(exc) from None
            if charged is None:
                books.clear(account, invoice)
                charged = provider.charge(card, amount, billing.CURRENCY, key_hash)
                if not charged.approved:
                    raise Unprocessable(f"The card was declined: {charged.message}",
                                        expression="card-number")
            try:
                answer = books.record(account, invoice, balance, outstanding, amount, charged)
            except (UpstreamUnavailable, UpstreamError) as exc:
                in_doubt = not isinstance(exc, HeldBack)  # held back: nothing was sent
                raise
            if answer is None:  # another payment moved the account first: read again
                time.sleep(random.uniform(0.005, 0.03))
                continue
            recorded = True
            return answer
        raise Conflict("Too many payments on this account at once; try again",
                       expression="amount")
    finally:
        if charged is not None and not recorded and not (in_doubt and _maybe_stored(books)):
            provider.void(charged)


def _maybe_stored(books) -> bool:
    """After a record whose answer was lost: is its receipt stored, or can nobody tell? Then
    the charge is kept, and the caller's retry with the same Idempotency-Key finds the receipt
    (200) or records it with that same charge; voided, the clinic would hold a receipt for
    money it never collected."""
    try:
        return books.existing() is not None
    except Exception:  # noqa: BLE001 - the EHR still cannot say: keep the charge
        return True


def _receipt_and_notice(invoice: dict, pr_id: str, pn_id: str, key_hash: str,
                        amount: Decimal, charged: PaymentResult) -> tuple[dict, dict]:
    now = _now()
    created = now.isoformat(timespec="seconds").replace("+00:00", "Z")
    today = now.date().isoformat()
    payer = invoice.get("subject") or {}
    receipt = validate_resource(billing.build_payment_reconciliation(
        id=pr_id, key_hash=key_hash, invoice=invoice, patient_ref=payer, amount=amount,
        card_last4=charged.last4, transaction_id=charged.transaction_id, created=created,
        payment_date=today), "PaymentReconciliation")
    notice = validate_resource(billing.build_payment_notice(
        id=pn_id, key_hash=key_hash, invoice=invoice, patient_ref=payer, amount=amount,
        reconciliation_id=pr_id, created=created, payment_date=today), "PaymentNotice")
    return receipt, notice


def _entries(invoice: dict, account: dict, pr_id: str, pn_id: str, key_hash: str,
             amount: Decimal, balance: Decimal, outstanding: Decimal,
             charged: PaymentResult) -> list[BundleEntryRequest]:
    receipt, notice = _receipt_and_notice(invoice, pr_id, pn_id, key_hash, amount, charged)
    new_account = validate_resource(billing.with_balance(account, balance - amount), "Account")
    entries = [
        BundleEntryRequest("PUT", "PaymentReconciliation", pr_id, receipt),
        BundleEntryRequest("PUT", "PaymentNotice", pn_id, notice),
        BundleEntryRequest("PUT", "Account", account["id"], new_account,
                           if_match=account["meta"]["versionId"]),
    ]
    if amount == outstanding:
        paid = validate_resource(billing.balanced_invoice(invoice), "Invoice")
        entries.append(BundleEntryRequest("PUT", "Invoice", invoice["id"], paid,
                                          if_match=invoice["meta"]["versionId"]))
    return entries


# -- the statement ------------------------------------------------------------------------

def statement(ctx: OperationContext) -> FhirResponse:
    service = ctx.service
    account = _visible(ctx, "Account", service.check_id(ctx.request.id))
    invoices = _search_all(ctx, "Invoice", [("account", f"Account/{account['id']}")])
    invoices.sort(key=lambda i: (i.get("date") or "", i["id"]), reverse=True)
    payments: list[tuple[dict, dict | None]] = []
    ledger = service.ledger if PAY.path(service.caps)[0] == "fallback" else None
    if ledger is not None:  # the payments are in the gateway's ledger, not the EHR
        for invoice in invoices:
            payments += ledger.payments(invoice["id"])
        paid, _ = ledger.paid_on_account(account["id"])
        balance = billing.account_balance(account)
        if balance is not None:
            account = billing.with_balance(account, balance - paid)
        invoices = [billing.balanced_invoice(i) if i.get("status") == "issued"
                    and billing.invoice_outstanding(i, [n for n, _ in ledger.payments(i["id"])])
                    == 0 else i for i in invoices]
    for invoice in invoices if ledger is None else []:
        for notice in _notices(ctx, invoice["id"]):
            ref = (notice.get("payment") or {}).get("reference", "")
            receipt = None
            if ref.startswith("PaymentReconciliation/"):
                try:
                    receipt = service.adapter.read("PaymentReconciliation", ref.split("/", 1)[1])
                except NotFound:
                    receipt = None
            payments.append((notice, receipt))
    page = statement_html(account, invoices, payments, _now().date().isoformat())
    return _html_response(page)


def _html_response(page: str) -> FhirResponse:
    return FhirResponse(200, None, {"Cache-Control": "no-store"}, body=page.encode(),
                        mimetype="text/html")


def _usd(value: Decimal) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


def _text(concept: dict | None) -> str:
    if not concept:
        return ""
    if concept.get("text"):
        return concept["text"]
    coding = (concept.get("coding") or [{}])[0]
    return coding.get("display") or coding.get("code") or ""


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;
color:#111;background:#fff;line-height:1.4}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}
caption{text-align:left;font-weight:600;padding:.25rem 0}
th,td{border-bottom:1px solid #999;padding:.3rem .5rem;text-align:left;vertical-align:top}
.num{text-align:right;font-variant-numeric:tabular-nums}
tfoot th,tfoot td{font-weight:600}
.due{font-size:1.25rem;font-weight:700}
@media print{body{margin:0;max-width:none}a{color:inherit;text-decoration:none}}
"""


def statement_html(account: dict, invoices: list[dict],
                   payments: list[tuple[dict, dict | None]], today: str) -> str:
    """A plain, self-contained page: invoices with their lines and totals, payments, balance."""
    e = html.escape
    owner = (account.get("owner") or {}).get("display") or "Your clinic"
    who = ((account.get("subject") or [{}])[0]).get("display") or ""
    balance = billing.account_balance(account)
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Statement for account {e(account['id'])}</title>",
        f"<style>{_STYLE}</style>", "</head>", "<body>", "<main>",
        f"<h1>Statement of account {e(account['id'])}</h1>",
        f"<p>{e(owner)}<br>Statement date: <time datetime=\"{e(today)}\">{e(today)}</time>"
        + (f"<br>For: {e(who)}" if who else "") + "</p>",
    ]
    if balance is not None:
        parts.append(f'<p class="due">Balance due: {_usd(balance)}</p>')
    parts.append("<h2>Invoices</h2>")
    if not invoices:
        parts.append("<p>No invoices.</p>")
    paid_by_invoice: dict[str, Decimal] = {}
    for notice, _ in payments:
        if notice.get("status") == "active":
            target = (notice.get("request") or {}).get("reference", "").rpartition("/")[2]
            paid_by_invoice[target] = paid_by_invoice.get(target, Decimal(0)) \
                + billing.amount_of(notice.get("amount"))
    for invoice in invoices:
        date = (invoice.get("date") or "")[:10]
        parts += [
            "<table>",
            f"<caption>Invoice {e(invoice['id'])}, {e(date)} "
            f"({e(str(invoice.get('status', '')))})</caption>",
            '<thead><tr><th scope="col">Item</th>'
            '<th scope="col" class="num">Amount</th></tr></thead>', "<tbody>",
        ]
        for line in invoice.get("lineItem") or []:
            amount = sum((billing.amount_of(p.get("amount"))
                          for p in line.get("priceComponent") or []), Decimal(0))
            parts.append(f"<tr><td>{e(_text(line.get('chargeItemCodeableConcept')))}</td>"
                         f'<td class="num">{_usd(amount)}</td></tr>')
        total = billing.amount_of(invoice.get("totalGross"))
        paid = paid_by_invoice.get(invoice["id"], Decimal(0))
        parts += [
            "</tbody>", "<tfoot>",
            f'<tr><th scope="row">Total</th><td class="num">{_usd(total)}</td></tr>',
            f'<tr><th scope="row">Paid online</th><td class="num">{_usd(paid)}</td></tr>',
            "</tfoot>", "</table>",
        ]
    parts.append("<h2>Payments</h2>")
    if not payments:
        parts.append("<p>No online payments.</p>")
    else:
        parts += ["<table>", "<caption>Payments received</caption>",
                  '<thead><tr><th scope="col">Date</th><th scope="col">Invoice</th>'
                  '<th scope="col">Method</th><th scope="col" class="num">Amount</th></tr>'
                  "</thead>", "<tbody>"]
        for notice, receipt in sorted(payments, key=lambda p: p[0].get("created", "")):
            target = (notice.get("request") or {}).get("reference", "").rpartition("/")[2]
            last4 = next((x.get("valueString") for x in (receipt or {}).get("extension", [])
                          if x.get("url") == billing.ACCOUNT_NUMBER_EXTENSION), None)
            method = f"Card ending {last4}" if last4 else "Card"
            parts.append(f"<tr><td>{e(notice.get('paymentDate', ''))}</td>"
                         f"<td>{e(target)}</td><td>{e(method)}</td>"
                         f'<td class="num">{_usd(billing.amount_of(notice.get("amount")))}'
                         "</td></tr>")
        parts += ["</tbody>", "</table>"]
    if balance is not None:
        parts.append(f'<p class="due">Balance due: {_usd(balance)}</p>')
    parts += ["</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


PAY = OperationSpec(
    name="pay", resource_type="Invoice", handler=pay, instance=True, affects_state=True,
    title="Pay an invoice by card",
    description="Charges the card and records the payment atomically: a PaymentReconciliation "
                "(the receipt, returned with 201), a PaymentNotice against the Invoice, the "
                "Account's balance lowered, and the Invoice set balanced when paid in full. "
                "Needs an Idempotency-Key header: a repeat with the same key on the same "
                "invoice returns the first receipt (200) and charges once. Only the card's "
                "last four digits are kept.",
    needs=(("Invoice", "r"), ("Account", "r"), ("PaymentReconciliation", "c")),
    ehr_needs=(("Invoice", "r"), ("Account", "r"), ("PaymentReconciliation", "c"),
               ("PaymentNotice", "c"), ("Account", "u")),
    fallback=Fallback(
        needs=(("Invoice", "r"), ("Account", "r")),
        description="the payment is recorded in the gateway's billing ledger (receipt and "
                    "notice kept by the gateway; balances shown less ledger payments)"),
    parameters=(
        ParamSpec("amount", "Money", min=1, documentation="USD, from 0.01 up to the account "
                  "balance and the invoice's outstanding amount"),
        ParamSpec("card-number", "string", min=1, documentation="12-19 digits (Luhn)"),
        ParamSpec("card-expiry", "string", min=1, documentation="MM/YY, not past"),
        ParamSpec("card-holder", "string", min=1, documentation="The name on the card"),
        ParamSpec("return", "PaymentReconciliation", min=1, use="out"),
    ),
)
STATEMENT = OperationSpec(
    name="statement", resource_type="Account", handler=statement, instance=True,
    title="Printable account statement",
    description="The account's invoices with their lines and totals, the payments made and the "
                "balance due, as a plain self-contained HTML page (text/html).",
    needs=(("Account", "r"), ("Invoice", "s")),
    parameters=(ParamSpec("return", "Binary", min=1, use="out",
                          documentation="text/html"),),
    produces="text/html",
)
SPECS = [PAY, STATEMENT]
