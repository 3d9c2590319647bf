"""The gateway's billing ledger: card payments for EHRs that take no payment resources.

Where the EHR serves Invoices and Accounts but apps may not write PaymentReconciliation,
PaymentNotice or the Account (Epic-like and Oracle-like APIs), `Invoice/$pay` records the
payment here, in the gateway's own database: the receipt (a PaymentReconciliation) and the
notice (a PaymentNotice) exactly as they would have gone to the EHR. Balances the portal shows
are the EHR's less the ledger's payments; the clinic's billing office takes the entries from
here (`fhir-gateway`'s database, table `ledger_payment`).

Each account has a row whose `paid` total moves with a compare-and-set in the same database
transaction as the payment's insert, so two concurrent payments cannot both spend one balance,
and the unique idempotency hash makes a repeated key return the first receipt.
"""

from __future__ import annotations

import time
from decimal import Decimal

import orjson
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

metadata = MetaData()
ledger_account = Table(
    "ledger_account", metadata,
    Column("account_id", String(64), primary_key=True),
    Column("paid", String(32), nullable=False),  # a decimal, as text (exact on every database)
    Column("version", Integer, nullable=False),
)
ledger_payment = Table(
    "ledger_payment", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("account_id", String(64), nullable=False, index=True),
    Column("invoice_id", String(64), nullable=False, index=True),
    Column("amount", String(32), nullable=False),
    Column("receipt", Text, nullable=False),  # PaymentReconciliation JSON (no card data)
    Column("notice", Text, nullable=False),  # PaymentNotice JSON
    Column("created_at", Integer, nullable=False),
)


class LedgerConflict(Exception):
    """Another payment moved the account first: read again and retry."""


class Ledger:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def paid_on_account(self, account_id: str) -> tuple[Decimal, int]:
        with self.engine.connect() as conn:
            row = conn.execute(select(ledger_account.c.paid, ledger_account.c.version)
                               .where(ledger_account.c.account_id == account_id)).first()
        return (Decimal(row.paid), row.version) if row else (Decimal(0), 0)

    def receipt(self, key_hash: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(ledger_payment.c.receipt)
                               .where(ledger_payment.c.key_hash == key_hash)).first()
        return orjson.loads(row.receipt) if row else None

    def payments(self, invoice_id: str) -> list[tuple[dict, dict]]:
        """(notice, receipt) of every payment against the invoice, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(ledger_payment.c.notice, ledger_payment.c.receipt)
                                .where(ledger_payment.c.invoice_id == invoice_id)
                                .order_by(ledger_payment.c.seq)).all()
        return [(orjson.loads(r.notice), orjson.loads(r.receipt)) for r in rows]

    def record(self, *, key_hash: str, account_id: str, invoice_id: str, amount: Decimal,
               receipt: dict, notice: dict, seen_version: int) -> None:
        """Store the payment if the account's ledger row is still at `seen_version`; raise
        LedgerConflict if another payment came first (or the same key won a race)."""
        try:
            self._record(key_hash, account_id, invoice_id, amount, receipt, notice,
                         seen_version)
        except OperationalError:  # SQLite busy: the other writer won
            raise LedgerConflict() from None

    def _record(self, key_hash, account_id, invoice_id, amount, receipt, notice,
                seen_version) -> None:
        with self.engine.begin() as conn:
            row = conn.execute(select(ledger_account.c.paid, ledger_account.c.version)
                               .where(ledger_account.c.account_id == account_id)).first()
            if row is None:
                if seen_version != 0:
                    raise LedgerConflict()
                try:
                    with conn.begin_nested():
                        conn.execute(insert(ledger_account).values(
                            account_id=account_id, paid=str(amount), version=1))
                except IntegrityError:
                    raise LedgerConflict() from None
            else:
                moved = conn.execute(update(ledger_account).where(
                    ledger_account.c.account_id == account_id,
                    ledger_account.c.version == seen_version).values(
                    paid=str(Decimal(row.paid) + amount), version=seen_version + 1)).rowcount
                if moved != 1:
                    raise LedgerConflict()
            try:
                conn.execute(insert(ledger_payment).values(
                    key_hash=key_hash, account_id=account_id, invoice_id=invoice_id,
                    amount=str(amount), receipt=orjson.dumps(receipt).decode(),
                    notice=orjson.dumps(notice).decode(), created_at=int(time.time())))
            except IntegrityError:
                raise LedgerConflict() from None
