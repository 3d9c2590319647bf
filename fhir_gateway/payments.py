"""Card payments: the `PaymentProvider` interface and the built-in offline provider.

A provider charges a card once per idempotency key (as card processors such as Stripe do), so a
retried or concurrent duplicate request cannot charge twice, and can `void` a charge the gateway
could not record. `Card` never shows its number or expiry in a repr, and a `PaymentResult` holds
only the last four digits: nothing a provider returns can leak the card into a log or a
resource. `OfflinePaymentProvider` does no I/O: it checks the card (Luhn, expiry not past),
approves, and remembers results by key in memory. A real processor plugs in behind the same
interface.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from mappings.portal.billing import last_four, parse_card_number, parse_expiry

__all__ = ["Card", "OfflinePaymentProvider", "PaymentProvider", "PaymentResult"]


@dataclass(frozen=True)
class Card:
    """What the patient typed; the number and expiry never appear in a repr."""

    number: str = field(repr=False)
    expiry: str = field(repr=False)  # MM/YY
    holder: str = field(default="", repr=False)

    @property
    def last4(self) -> str:
        return self.number[-4:]


@dataclass(frozen=True)
class PaymentResult:
    approved: bool
    transaction_id: str
    last4: str
    amount: Decimal
    currency: str
    message: str = ""  # why a charge was declined; never card data


class PaymentProvider(ABC):
    """A card processor behind the gateway."""

    @abstractmethod
    def charge(self, card: Card, amount: Decimal, currency: str,
               idempotency_key: str) -> PaymentResult:
        """Charge once per `idempotency_key`: a repeat returns the first result, unless it
        was voided (then the repeat is a new charge)."""

    @abstractmethod
    def void(self, result: PaymentResult) -> None:
        """Undo an approved charge the gateway could not record."""


class OfflinePaymentProvider(PaymentProvider):
    """Approves any card that passes the Luhn check and has not expired; no network."""

    def __init__(self, today=lambda: datetime.now(UTC).date(), remember: int = 10_000) -> None:
        self._today = today
        self._remember = remember
        self._results: OrderedDict[str, PaymentResult] = OrderedDict()
        self._lock = threading.Lock()
        self.voided: set[str] = set()

    def charge(self, card: Card, amount: Decimal, currency: str,
               idempotency_key: str) -> PaymentResult:
        slot = hashlib.sha256(idempotency_key.encode()).hexdigest()  # the key itself isn't kept
        with self._lock:
            found = self._results.get(slot)
            if found is not None:
                return found
            result = self._decide(card, amount, currency)
            self._results[slot] = result
            while len(self._results) > self._remember:
                self._results.popitem(last=False)
            return result

    def _decide(self, card: Card, amount: Decimal, currency: str) -> PaymentResult:
        last4 = last_four(card.number) if card.number[-4:].isdigit() else ""
        today: date = self._today()
        try:
            parse_card_number(card.number)
            parse_expiry(card.expiry, today)
        except ValueError as exc:
            return PaymentResult(False, "", last4, amount, currency,
                                 getattr(exc, "message", "declined"))
        if amount <= 0:
            return PaymentResult(False, "", last4, amount, currency, "amount must be positive")
        return PaymentResult(True, f"offline-{uuid.uuid4().hex}", last4, amount, currency)

    def void(self, result: PaymentResult) -> None:
        if result.approved:
            with self._lock:
                self.voided.add(result.transaction_id)
                for slot in [k for k, v in self._results.items()
                             if v.transaction_id == result.transaction_id]:
                    del self._results[slot]  # a retry with the same key is a new charge
