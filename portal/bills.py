"""Pure rules of the Billing pages: checking what a patient types to pay a bill, and turning
Accounts, Invoices, PaymentNotices and PaymentReconciliations (FHIR R4 JSON) into the facts a
statement shows.

No I/O and no Flask, so every rule is tested on plain values. A check returns
`(value, None)` or `(None, (catalogue key, placeholders))`: the page says it in the patient's
language. The checks are the ones `Invoice/$pay` applies (Luhn, MM/YY not past, 0.01 up to what
is owed, whole cents), so bad input never reaches the server. No message repeats a card number
or an expiry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation

from portal.records import account_balance, day, text_of

CENT = Decimal("0.01")
CURRENCY = "USD"
MAX_AMOUNT_CHARS = 12
MAX_CARD_CHARS = 30
MAX_EXPIRY_CHARS = 7
MAX_HOLDER = 100
#: R5 cross-version extension on the receipt holding the card's last four digits.
ACCOUNT_NUMBER_EXTENSION = ("http://hl7.org/fhir/5.0/StructureDefinition/"
                            "extension-PaymentReconciliation.accountNumber")

Problem = tuple[str, dict]

_AMOUNT = re.compile(r"^\d+(\.\d+)?$")
_EXPIRY = re.compile(r"^(\d{2})\s*/?\s*(\d{2})$")


def usd(value: Decimal | None) -> str:
    """$1,234.50"""
    value = value or Decimal(0)
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


def plain(value: Decimal) -> str:
    """1234.50 (what the amount field shows)."""
    return f"{value.quantize(CENT)}"


def check_amount(raw: str, most: Decimal) -> tuple[Decimal | None, Problem | None]:
    """A dollar amount from 0.01 up to `most`, at most two decimals ("$" and spaces allowed)."""
    text = raw.strip().removeprefix("$").strip()
    if not text:
        return None, ("bill.err_amount_empty", {})
    if len(raw) > MAX_AMOUNT_CHARS:
        return None, ("bill.err_amount_long", {"max": MAX_AMOUNT_CHARS})
    if text.startswith("-"):
        return None, ("bill.err_amount_small", {})
    if not _AMOUNT.match(text):
        return None, ("bill.err_amount_format", {})
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        return None, ("bill.err_amount_format", {})
    if value != value.quantize(CENT):
        return None, ("bill.err_amount_cents", {})
    if value < CENT:
        return None, ("bill.err_amount_small", {})
    if value > most:
        return None, ("bill.err_amount_over", {"most": usd(most)})
    return value.quantize(CENT), None


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check digit rule."""
    if not re.fullmatch(r"[0-9]+", digits):  # ASCII only: isdigit() takes '²'
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def check_card_number(raw: str) -> tuple[str | None, Problem | None]:
    """12 to 19 digits (spaces or dashes between groups allowed) passing the Luhn check."""
    if not raw.strip():
        return None, ("bill.err_card_empty", {})
    if len(raw) > MAX_CARD_CHARS:
        return None, ("bill.err_card_long", {})
    digits = re.sub(r"[ -]", "", raw.strip())
    if not re.fullmatch(r"[0-9]{12,19}", digits):
        return None, ("bill.err_card_format", {})
    if not luhn_valid(digits):
        return None, ("bill.err_card_luhn", {})
    return digits, None


def check_expiry(raw: str, today: date) -> tuple[str | None, Problem | None]:
    """MM/YY (or MMYY), a real month, not before this month; returned as MM/YY."""
    if not raw.strip():
        return None, ("bill.err_expiry_empty", {})
    if len(raw.strip()) > MAX_EXPIRY_CHARS:
        return None, ("bill.err_expiry_format", {})
    match = _EXPIRY.match(raw.strip())
    if match is None:
        return None, ("bill.err_expiry_format", {})
    month, year = int(match.group(1)), 2000 + int(match.group(2))
    if not 1 <= month <= 12:
        return None, ("bill.err_expiry_month", {})
    if (year, month) < (today.year, today.month):
        return None, ("bill.err_expiry_past", {})
    return f"{month:02d}/{year % 100:02d}", None


def check_holder(raw: str) -> tuple[str | None, Problem | None]:
    """The name on the card: not blank, at most MAX_HOLDER characters."""
    name = " ".join(raw.split())
    if not name:
        return None, ("bill.err_name_empty", {})
    if len(name) > MAX_HOLDER:
        return None, ("bill.err_name_long", {"length": len(name), "max": MAX_HOLDER})
    return name, None


# -- what a statement shows ------------------------------------------------------------------

def money_of(value: object) -> Decimal:
    """A Money dict's value as Decimal (0 when absent or not a number)."""
    if not isinstance(value, dict) or isinstance(value.get("value"), bool):
        return Decimal(0)
    try:
        out = Decimal(str(value.get("value")))
    except InvalidOperation:
        return Decimal(0)
    return out if out.is_finite() else Decimal(0)


def ref_id(reference: dict | None, rtype: str) -> str:
    """The id of a `Type/id` reference to `rtype` ('' otherwise)."""
    kind, _, rid = ((reference or {}).get("reference") or "").rpartition("/")
    return rid if kind.rpartition("/")[2] == rtype else ""


@dataclass
class Line:
    what: str
    date: str
    amount: Decimal


@dataclass
class Payment:
    receipt_id: str
    invoice_id: str
    date: str
    amount: Decimal
    last4: str
    reference: str


@dataclass
class Bill:
    id: str
    date: str
    status: str
    lines: list[Line]
    total: Decimal
    paid: Decimal
    left: Decimal
    can_pay: bool = False


@dataclass
class Statement:
    id: str
    name: str
    balance: Decimal | None
    bills: list[Bill] = field(default_factory=list)
    payments: list[Payment] = field(default_factory=list)


def last4(receipt: dict) -> str:
    for ext in receipt.get("extension") or []:
        if ext.get("url") == ACCOUNT_NUMBER_EXTENSION:
            return str(ext.get("valueString") or "")[-4:]
    return ""


def payment(receipt: dict) -> Payment:
    """The facts of a receipt (PaymentReconciliation)."""
    detail = (receipt.get("detail") or [{}])[0]
    return Payment(
        receipt_id=receipt.get("id", ""),
        invoice_id=ref_id(detail.get("request"), "Invoice"),
        date=day(receipt.get("paymentDate") or receipt.get("created")),
        amount=money_of(receipt.get("paymentAmount")),
        last4=last4(receipt),
        reference=(receipt.get("paymentIdentifier") or {}).get("value") or receipt.get("id", ""),
    )


def paid_on(invoice_id: str, notices: list[dict]) -> Decimal:
    """What the active PaymentNotices against the invoice add up to."""
    return sum((money_of(n.get("amount")) for n in notices if n.get("status") == "active"
                and ref_id(n.get("request"), "Invoice") == invoice_id), Decimal(0))


def line_amount(item: dict) -> Decimal:
    """A line's price: base, surcharges and tax, less deductions and discounts
    (`informational` components are not charged)."""
    total = Decimal(0)
    for part in item.get("priceComponent") or []:
        kind, amount = part.get("type"), money_of(part.get("amount"))
        if kind in ("deduction", "discount"):
            total -= abs(amount)
        elif kind != "informational":
            total += amount
    return total


def bill(invoice: dict, notices: list[dict]) -> Bill:
    """An Invoice with its lines (what, date, amount), what was paid and what is left."""
    when = day(invoice.get("date"))
    lines = [Line(text_of(item.get("chargeItemCodeableConcept")), when, line_amount(item))
             for item in sorted(invoice.get("lineItem") or [],
                                key=lambda i: i.get("sequence") or 0)]
    total = money_of(invoice.get("totalGross"))  # what `$pay` counts (net is before tax)
    paid = paid_on(invoice.get("id", ""), notices)
    status = invoice.get("status") or "unknown"
    left = max(total - paid, Decimal(0)) if status == "issued" else Decimal(0)
    return Bill(invoice.get("id", ""), when, status, lines, total, paid, left)


def statements(accounts: list[dict], invoices: list[dict], notices: list[dict],
               receipts: list[dict]) -> list[Statement]:
    """One Statement per Account: its bills (newest first) and online payments (newest
    first). A bill can be paid when it is open, something is left and the account owes."""
    out = []
    for account in accounts:
        aid = account.get("id", "")
        mine = [i for i in invoices if ref_id(i.get("account"), "Account") == aid]
        mine.sort(key=lambda i: (i.get("date") or "", i.get("id", "")), reverse=True)
        balance = account_balance(account)
        bills = [bill(i, notices) for i in mine]
        for b in bills:
            b.can_pay = b.left > 0 and balance is not None and balance > 0
        ids = {b.id for b in bills}
        pays = [payment(r) for r in receipts if r.get("status") == "active"]
        pays = sorted((p for p in pays if p.invoice_id in ids),
                      key=lambda p: (p.date, p.receipt_id), reverse=True)
        out.append(Statement(aid, account.get("name") or "", balance, bills, pays))
    return out


def most_payable(b: Bill, balance: Decimal | None) -> Decimal:
    """What may be paid on a bill now: what is left on it, and no more than the balance."""
    if balance is None:
        return Decimal(0)
    return max(min(b.left, balance), Decimal(0)).quantize(CENT)


STATUS_WORDS = ("draft", "issued", "balanced", "cancelled", "entered-in-error")


def status_key(status: str) -> str:
    """The catalogue key of an Invoice status in words."""
    return f"bill.status.{status}" if status in STATUS_WORDS else "bill.status.unknown"
