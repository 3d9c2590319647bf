"""A patient paying a bill in the portal, mapped to FHIR R4 (pure: standard library only).

Checks what a patient types (card number by the Luhn rule, expiry MM/YY not past, an amount in
US dollars with at most cents, no more than what is owed), and builds what a payment stores:
a PaymentReconciliation (the receipt), a PaymentNotice (the payment against one Invoice, which
the store indexes by `request`, so "what has been paid on this invoice" is one search), the
Account with its balance lowered, and the Invoice set `balanced` once paid in full. Like
`mappings.portal.trackers`, a refusal is a `BillingError` whose `field` names the parameter.

Card data: nothing built here holds more than the last four digits. R4 has no element for them
(nor for a patient who pays), so they go in the R5 cross-version extensions of
PaymentReconciliation (`accountNumber`, `paymentIssuer`, `method`), the same way the seed keeps
the R5 Account.balance.

Idempotency: a client's `Idempotency-Key` is kept only as `sha256("Invoice/<id>\\n<key>")`, in
`identifier` with system `IDEMPOTENCY_SYSTEM`; the stored ids derive from it too
(`payment_ids`), so a retried payment is found by a read.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

__all__ = [
    "BALANCE_EXTENSION",
    "CURRENCY",
    "IDEMPOTENCY_SYSTEM",
    "BillingError",
    "Expiry",
    "account_balance",
    "amount_of",
    "balanced_invoice",
    "build_payment_notice",
    "build_payment_reconciliation",
    "check_amount",
    "idempotency_hash",
    "invoice_outstanding",
    "last_four",
    "luhn_valid",
    "money",
    "parse_amount",
    "parse_card_number",
    "parse_expiry",
    "payment_ids",
    "round_cents",
    "with_balance",
]

CURRENCY = "USD"
CENT = Decimal("0.01")
BALANCE_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Account.balance"
_R5_PR = "http://hl7.org/fhir/5.0/StructureDefinition/extension-PaymentReconciliation."
ISSUER_EXTENSION = _R5_PR + "paymentIssuer"
ACCOUNT_NUMBER_EXTENSION = _R5_PR + "accountNumber"
METHOD_EXTENSION = _R5_PR + "method"
#: Who paid, on a PaymentNotice (R4 and R5 have no element for it). Also what keeps the notice
#: inside the payer's compartment for the access checks.
PAYER_EXTENSION = "https://example.org/fhir/StructureDefinition/payment-payer"
#: identifier.system of the sha256 (hex) of "Invoice/<id>\n<Idempotency-Key>".
IDEMPOTENCY_SYSTEM = "https://example.org/fhir/NamingSystem/idempotency-key-sha256"
#: paymentIdentifier.system of the payment provider's transaction id.
TRANSACTION_SYSTEM = "https://example.org/fhir/NamingSystem/payment-transaction"
PAYMENT_TYPE = "http://terminology.hl7.org/CodeSystem/payment-type"
PAYMENT_STATUS = "http://terminology.hl7.org/CodeSystem/paymentstatus"
PAYMENT_METHOD = "http://terminology.hl7.org/CodeSystem/v2-0570"

_EXPIRY = re.compile(r"^(\d{2})\s*/\s*(\d{2})$")


class BillingError(ValueError):
    """Input the gateway refuses; `field` names the operation parameter at fault. The message
    never repeats a card number or expiry."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# -- cards ----------------------------------------------------------------------------------

def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a string of digits."""
    if not re.fullmatch(r"[0-9]+", digits):  # ASCII only: isdigit() takes '²'
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def parse_card_number(raw: object) -> str:
    """The card number as digits (spaces and dashes between groups allowed), 12 to 19 digits
    that pass the Luhn check."""
    if not isinstance(raw, str):
        raise BillingError("card-number", "The card number must be a string of digits")
    digits = re.sub(r"[ -]", "", raw.strip())
    if not re.fullmatch(r"[0-9]{12,19}", digits):
        raise BillingError("card-number", "The card number must have 12 to 19 digits")
    if not luhn_valid(digits):
        raise BillingError("card-number", "The card number is not valid (check digit)")
    return digits


def last_four(digits: str) -> str:
    return digits[-4:]


@dataclass(frozen=True)
class Expiry:
    month: int
    year: int  # four digits

    def expired(self, today: date) -> bool:
        """A card is good through the last day of its expiry month."""
        return (self.year, self.month) < (today.year, today.month)


def parse_expiry(raw: object, today: date) -> Expiry:
    """`MM/YY`, not before the current month."""
    match = _EXPIRY.match(raw.strip()) if isinstance(raw, str) else None
    if match is None:
        raise BillingError("card-expiry", "The expiry must be MM/YY, e.g. 04/29")
    month, year = int(match.group(1)), 2000 + int(match.group(2))
    if not 1 <= month <= 12:
        raise BillingError("card-expiry", "The expiry month must be 01 to 12")
    expiry = Expiry(month, year)
    if expiry.expired(today):
        raise BillingError("card-expiry", "The card has expired")
    return expiry


# -- amounts --------------------------------------------------------------------------------

def money(value: Decimal) -> dict:
    """FHIR Money in US dollars (JSON number with cents)."""
    return {"value": float(value.quantize(CENT)), "currency": CURRENCY}


def _decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        out = Decimal(str(value))
    except InvalidOperation:
        return None
    return out if out.is_finite() else None


def parse_amount(raw: object) -> Decimal:
    """A `valueMoney` ({value, currency}) as a positive amount of US dollars in cents."""
    if not isinstance(raw, dict):
        raise BillingError("amount", "amount must be a Money value {value, currency}")
    value = _decimal(raw.get("value"))
    if value is None:
        raise BillingError("amount", "amount.value must be a number")
    currency = raw.get("currency")
    if currency != CURRENCY:
        raise BillingError("amount", f"amount.currency must be {CURRENCY}")
    if value != value.quantize(CENT):
        raise BillingError("amount", "amount may not have fractions of a cent")
    if value < CENT:
        raise BillingError("amount", "amount must be at least 0.01")
    return value.quantize(CENT)


def check_amount(amount: Decimal, balance: Decimal, outstanding: Decimal) -> None:
    """A payment may not exceed the account's balance nor what is left to pay on the invoice."""
    if amount > balance:
        raise BillingError("amount", f"amount is more than the account balance "
                                     f"({balance.quantize(CENT)} {CURRENCY})")
    if amount > outstanding:
        raise BillingError("amount", f"amount is more than the invoice's outstanding amount "
                                     f"({outstanding.quantize(CENT)} {CURRENCY})")


def _balance_amount(account: dict) -> dict | None:
    for ext in account.get("extension") or []:
        if ext.get("url") == BALANCE_EXTENSION:
            for sub in ext.get("extension") or []:
                if sub.get("url") == "amount" and isinstance(sub.get("valueMoney"), dict):
                    return sub
    return None


def account_balance(account: dict) -> Decimal | None:
    """The balance due in the Account's R5 balance extension, or None when it has none."""
    sub = _balance_amount(account)
    if sub is None or sub["valueMoney"].get("currency", CURRENCY) != CURRENCY:
        return None
    return _decimal(sub["valueMoney"].get("value"))


def with_balance(account: dict, balance: Decimal) -> dict:
    """A copy of the Account (without meta) whose balance extension says `balance`."""
    out = copy.deepcopy({k: v for k, v in account.items() if k != "meta"})
    sub = _balance_amount(out)
    if sub is None:
        raise BillingError("amount", "The account has no balance to pay")
    sub["valueMoney"] = money(balance)
    return out


def invoice_outstanding(invoice: dict, notices: list[dict]) -> Decimal:
    """totalGross less the active PaymentNotices against the invoice."""
    total = _decimal((invoice.get("totalGross") or {}).get("value")) or Decimal(0)
    paid = sum((_decimal((n.get("amount") or {}).get("value")) or Decimal(0)
                for n in notices if n.get("status") == "active"), Decimal(0))
    return max(total - paid, Decimal(0)).quantize(CENT)


def balanced_invoice(invoice: dict) -> dict:
    """A copy of the Invoice (without meta), paid in full."""
    out = copy.deepcopy({k: v for k, v in invoice.items() if k != "meta"})
    out["status"] = "balanced"
    return out


# -- idempotency ----------------------------------------------------------------------------

def idempotency_hash(invoice_id: str, key: str) -> str:
    return hashlib.sha256(f"Invoice/{invoice_id}\n{key}".encode()).hexdigest()


def payment_ids(key_hash: str) -> tuple[str, str]:
    """(PaymentReconciliation id, PaymentNotice id) of the payment with this key hash."""
    return f"pay-{key_hash[:40]}", f"pn-{key_hash[:40]}"


# -- resources ------------------------------------------------------------------------------

def build_payment_reconciliation(
    *, id: str, key_hash: str, invoice: dict, patient_ref: dict, amount: Decimal,
    card_last4: str, transaction_id: str, created: str, payment_date: str,
) -> dict:
    """The receipt. `requestor` and `detail.payee` are the Invoice's issuer (R4 allows only an
    Organization or a practitioner there); the patient who paid is the R5 `paymentIssuer`."""
    issuer = invoice.get("issuer")
    detail = {
        "type": {"coding": [{"system": PAYMENT_TYPE, "code": "payment", "display": "Payment"}]},
        "request": {"reference": f"Invoice/{invoice['id']}"},
        "date": payment_date,
        "amount": money(amount),
    }
    if issuer:
        detail["payee"] = dict(issuer)
    out = {
        "resourceType": "PaymentReconciliation",
        "id": id,
        "extension": [
            {"url": ISSUER_EXTENSION, "valueReference": dict(patient_ref)},
            {"url": METHOD_EXTENSION, "valueCodeableConcept": {"coding": [{
                "system": PAYMENT_METHOD, "code": "CCCA", "display": "Credit Card"}]}},
            {"url": ACCOUNT_NUMBER_EXTENSION, "valueString": card_last4},
        ],
        "identifier": [{"system": IDEMPOTENCY_SYSTEM, "value": key_hash}],
        "status": "active",
        "created": created,
        "outcome": "complete",
        "disposition": f"Card payment (card ending {card_last4}) on Invoice/{invoice['id']}",
        "paymentDate": payment_date,
        "paymentAmount": money(amount),
        "paymentIdentifier": {"system": TRANSACTION_SYSTEM, "value": transaction_id},
        "detail": [detail],
    }
    if issuer:
        out["requestor"] = dict(issuer)
    return out


def build_payment_notice(
    *, id: str, key_hash: str, invoice: dict, patient_ref: dict, amount: Decimal,
    reconciliation_id: str, created: str, payment_date: str,
) -> dict:
    """The payment against one Invoice (`request`), pointing at its receipt (`payment`)."""
    issuer = invoice.get("issuer") or {"display": "The clinic"}
    return {
        "resourceType": "PaymentNotice",
        "id": id,
        "extension": [{"url": PAYER_EXTENSION, "valueReference": dict(patient_ref)}],
        "identifier": [{"system": IDEMPOTENCY_SYSTEM, "value": key_hash}],
        "status": "active",
        "request": {"reference": f"Invoice/{invoice['id']}"},
        "created": created,
        "payment": {"reference": f"PaymentReconciliation/{reconciliation_id}"},
        "paymentDate": payment_date,
        "payee": dict(issuer),
        "recipient": dict(issuer),
        "amount": money(amount),
        "paymentStatus": {"coding": [{"system": PAYMENT_STATUS, "code": "paid",
                                      "display": "Paid"}]},
    }


def amount_of(value: object) -> Decimal:
    """Decimal of a Money dict's value (0 when absent), for totals."""
    return (_decimal((value or {}).get("value")) if isinstance(value, dict) else None) \
        or Decimal(0)


def round_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)
