"""Append-only, hash-chained audit log of authorization decisions and FHIR accesses.

Every entry records who did what to which patient's data, with which client, when and with what
outcome -- references and codes only, never query values, tokens or other PHI. Entries form one
SHA-256 chain: `hash = sha256(prev_hash + canonical JSON of the entry, incl. seq and recorded)`,
the first entry chaining from `GENESIS`. A one-row `audit_head` table holds the newest seq and
hash; an append locks it (PostgreSQL `SELECT ... FOR UPDATE`; SQLite takes the write lock by
updating it first), inserts the entry and moves the head with a version check, all in one
transaction, so concurrent writers in any number of processes cannot fork the chain.
`verify()` recomputes the chain and names the first entry that was edited, removed or reordered.
The class has no update or delete; retention and database grants are the operator's business.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

log = logging.getLogger("fhir_gateway.audit")
GENESIS = "0" * 64
OBSERVER = "fhir-gateway"
MAX_COUNT = 1000

metadata = MetaData()

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=False),
    Column("recorded", String(24), nullable=False),  # 2026-06-15T08:30:00.123Z
    Column("action", String(64), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("user", String(255), nullable=True),
    Column("client_id", String(255), nullable=True),
    Column("patient", String(255), nullable=True),
    Column("resource_type", String(64), nullable=True),
    Column("resource_id", String(64), nullable=True),
    Column("status", Integer, nullable=True),
    Column("request_id", String(128), nullable=True),
    Column("detail", Text, nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_patient", "patient", "seq"),
    Index("ix_audit_log_user", "user", "seq"),
    Index("ix_audit_log_client", "client_id", "seq"),
    Index("ix_audit_log_recorded", "recorded"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

_LIMITS = {"action": 64, "outcome": 32, "user": 255, "client_id": 255, "patient": 255,
           "resource_type": 64, "resource_id": 64, "request_id": 128, "detail": 2000}
_REFERENCE = re.compile(r"^[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}$")


def fit(name: str, value: str | None) -> str | None:
    """`value` as field `name` can hold it: NULs replaced, cut to the field's limit (ending in
    an ellipsis), an empty text as None. For values that can be a caller's words (a type, id
    or operation name from a URL), so an overlong or odd one is recorded rather than refused."""
    if not value:
        return None  # an empty text is no value
    value = value.replace("\x00", "\ufffd")
    limit = _LIMITS[name]
    return value if len(value) <= limit else value[:limit - 1] + "\u2026"


@dataclass(frozen=True)
class AuditRecord:
    """One event to record. References and codes only: no query values, tokens or PHI."""

    action: str  # read, search-type, create, authorize, token, revoke, ...
    outcome: str  # allowed, denied, or an HTTP status such as "404"
    user: str | None = None  # Patient/pat-0001, Practitioner/prac-01, or the backend client
    client_id: str | None = None
    patient: str | None = None  # the compartment: Patient/pat-0001
    resource_type: str | None = None
    resource_id: str | None = None
    status: int | None = None
    request_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int  # entries checked
    first_bad: int | None  # seq of the first entry that is wrong or missing
    reason: str


class AuditChainError(RuntimeError):
    """The chain's head is missing or moved under us too often to append."""


class _HeadMoved(Exception):
    pass


_FIELDS = tuple(f.name for f in fields(AuditRecord))


def utc_stamp(moment: datetime | None = None) -> str:
    """UTC instant, ISO 8601 with milliseconds and `Z` (fixed width, sorts as a string)."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def normalize_since(since: str) -> str:
    """A date or ISO 8601 instant (offset or `Z`; naive means UTC) as a stored-form stamp."""
    text = since.strip()
    try:
        if len(text) == 10:
            return utc_stamp(datetime.combine(date.fromisoformat(text), datetime.min.time(),
                                              tzinfo=UTC))
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"since is not an ISO 8601 date or instant: {since!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return utc_stamp(moment)


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    """sha256 hex of prev_hash + canonical JSON of the entry's fields (seq, recorded, record).

    Canonical JSON: keys sorted, no spaces, non-ASCII as UTF-8. orjson writes the very bytes
    `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` wrote for these
    values (strings, ints, None; checked by a test), at a tenth of the cost.
    """
    body = {name: entry[name] for name in ("seq", "recorded", *_FIELDS)}
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(prev_hash.encode("utf-8") + canonical).hexdigest()


def _check(record: AuditRecord) -> None:
    for name in _FIELDS:
        value = getattr(record, name)
        if name == "status":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError("status must be an int or None")
            continue
        if value is None:
            if name in ("action", "outcome"):
                raise ValueError(f"{name} is required")
            continue
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string or None")
        if len(value) > _LIMITS[name]:
            raise ValueError(f"{name} is longer than {_LIMITS[name]} characters")
        if "\x00" in value:
            raise ValueError(f"{name} contains a NUL character")


_COLUMNS = ("seq", "recorded", *_FIELDS, "prev_hash", "hash")


def _begin(cursor, driver_connection, sqlite: bool) -> None:
    """Open the append's transaction: on SQLite with the write lock taken now (pysqlite would
    begin a deferred one at the first write, or none in autocommit mode); on a server only in
    autocommit mode (psycopg begins by itself otherwise)."""
    if sqlite:
        if not driver_connection.in_transaction:
            cursor.execute("BEGIN IMMEDIATE")
    elif getattr(driver_connection, "autocommit", False) is True:
        cursor.execute("BEGIN")


class _Statements:
    """The append's SQL in the driver's own parameter style, built once per database: an
    append runs on a driver connection from the pool (SQLAlchemy's statement machinery cost
    more per entry than the database work)."""

    def __init__(self, engine: Engine) -> None:
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self.read_head = "SELECT seq, hash FROM audit_head WHERE id = 1" + (
            "" if engine.dialect.name == "sqlite" else " FOR UPDATE")
        self.insert = ("INSERT INTO audit_log (" + ", ".join(f'"{c}"' for c in _COLUMNS)
                       + ") VALUES (" + ", ".join(mark for _ in _COLUMNS) + ")")
        self.move_head = (f"UPDATE audit_head SET seq = {mark}, hash = {mark} "
                          f"WHERE id = 1 AND seq = {mark} AND hash = {mark}")


class AuditLog:
    """The audit log on one database. Thread-safe; any number of processes may append."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None,
                 attempts: int = 30, batch_window: float = 0.0) -> None:
        """`batch_window` > 0 makes `append` return at once and a background thread write
        what arrived within that many seconds in one transaction (group commit); readers of
        this object flush first. A process killed outright loses at most that window."""
        self.engine = engine
        self._window = batch_window
        self._pending: list[tuple[AuditRecord, str]] = []  # (record, recorded)
        self._pending_lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = True  # the writer waits for `_wake` (it wrote all it had)
        self._writer: threading.Thread | None = None
        self._clock = clock or (lambda: datetime.now(UTC))
        self._attempts = attempts
        self._lock = threading.Lock()  # threads of this process queue here, not in the DB
        self._sqlite = engine.dialect.name == "sqlite"
        self._sql = _Statements(engine)
        dbapi = engine.dialect.dbapi
        # What a concurrent appender can cause: retried (the head is read again).
        self._retry_on = (_HeadMoved, dbapi.IntegrityError, dbapi.OperationalError)
        try:
            metadata.create_all(engine)
        except (IntegrityError, OperationalError, ProgrammingError):  # a racing creator won
            metadata.create_all(engine)
        self._ensure_head()

    def _ensure_head(self) -> None:
        with self.engine.begin() as conn:
            if conn.execute(select(audit_head.c.id)).first() is not None:
                return
            if conn.execute(select(audit_log.c.seq).limit(1)).first() is not None:
                return  # entries without a head: never restart the chain; verify() reports it
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(audit_head).values(id=1, seq=0, hash=GENESIS))
        except IntegrityError:
            pass  # another process made it

    # -- writing ----------------------------------------------------------------------------

    def append(self, record: AuditRecord) -> int | None:
        """Record one event, stamped now; returns its sequence number (1, 2, ...), or None
        when batched (it is written within the batch window)."""
        _check(record)
        item = (record, utc_stamp(self._clock()))
        if self._window > 0:
            with self._pending_lock:
                self._pending.append(item)
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_behind,
                                                    name="audit-writer", daemon=True)
                    self._writer.start()
                    atexit.register(self.flush)
                wake, self._idle = self._idle, False
            # The writer is woken only when it went idle (nothing came in its last window);
            # while entries keep coming it writes a batch every window without being told.
            if wake:
                self._wake.set()
            return None
        return self._write([item])

    def _write_behind(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while True:
                time.sleep(self._window)  # let the window fill: one transaction for all of it
                try:
                    written = self.flush()
                except Exception:  # noqa: BLE001 - kept in memory and retried next round
                    log.exception("audit write failed; %d entries kept for retry",
                                  len(self._pending))
                    time.sleep(min(1.0, self._window * 20))
                    continue
                with self._pending_lock:
                    if not written and not self._pending:  # a whole window brought nothing
                        self._idle = True
                        break

    def flush(self) -> int:
        """Write every pending entry now (batched mode); returns how many were written."""
        written = 0
        with self._drain_lock:
            while True:
                with self._pending_lock:
                    batch = self._pending[:500]
                if not batch:
                    return written
                self._write(batch)
                written += len(batch)
                with self._pending_lock:
                    del self._pending[:len(batch)]

    def _write(self, items: list[tuple[AuditRecord, str]]) -> int:
        """Append entries (record, recorded) in one transaction, retrying when another writer
        moved the head first; returns the last entry's seq."""
        with self._lock:
            for attempt in range(self._attempts):
                try:
                    return self._append_many(items)
                except self._retry_on:
                    if attempt == self._attempts - 1:
                        raise
                    time.sleep(min(0.2, 0.005 * 2 ** attempt) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def _append_many(self, items: list[tuple[AuditRecord, str]]) -> int:
        """One transaction on a driver connection: lock the head (SQLite: BEGIN IMMEDIATE takes
        the write lock; PostgreSQL: SELECT ... FOR UPDATE), read it, insert every entry chained
        from it, and move it with a compare-and-set, so concurrent writers in any number of
        processes cannot fork the chain."""
        sql = self._sql
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            try:
                _begin(cur, raw.driver_connection, self._sqlite)
                cur.execute(sql.read_head)
                head = cur.fetchone()
                if head is None:
                    raise AuditChainError("audit_head is missing; run verify() and investigate")
                seq, prev = head
                rows = []
                for record, recorded in items:
                    seq += 1
                    entry = {"seq": seq, "recorded": recorded, **record.__dict__}
                    digest = entry_hash(prev, entry)
                    rows.append((seq, recorded, *(entry[name] for name in _FIELDS), prev,
                                 digest))
                    prev = digest
                cur.executemany(sql.insert, rows)
                cur.execute(sql.move_head, (seq, prev, head[0], head[1]))
                if cur.rowcount != 1:
                    raise _HeadMoved()
                raw.commit()
                return seq
            except BaseException:
                raw.rollback()
                raise
            finally:
                cur.close()
        finally:
            raw.close()

    # -- reading ----------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest entry; worth copying elsewhere to anchor the chain."""
        self.flush()
        with self.engine.connect() as conn:
            row = conn.execute(select(audit_head.c.seq, audit_head.c.hash)
                               .where(audit_head.c.id == 1)).first()
        if row is None:
            raise AuditChainError("audit_head is missing")
        return row.seq, row.hash

    def verify(self) -> VerifyResult:
        """Recompute the chain from GENESIS to the head; report the first bad entry."""
        self.flush()
        with self.engine.connect() as conn:
            head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)
                                .where(audit_head.c.id == 1)).first()
            if head is None:
                first = conn.execute(select(func.min(audit_log.c.seq))).scalar()
                if first is None:
                    return VerifyResult(True, 0, None, "empty log")
                return VerifyResult(False, 0, first, "the audit_head row is missing")
            checked, expected_seq, prev = 0, 1, GENESIS
            rows = conn.execution_options(stream_results=True, yield_per=1000).execute(
                select(audit_log).where(audit_log.c.seq <= head.seq).order_by(audit_log.c.seq))
            for row in rows.mappings():
                checked += 1
                seq = row["seq"]
                if seq != expected_seq:
                    rows.close()
                    if seq > expected_seq:
                        why = f"entry {expected_seq} is missing (next stored entry is {seq})"
                    else:
                        why = f"entry {seq} is out of sequence (expected {expected_seq})"
                    return VerifyResult(False, checked, min(seq, expected_seq), why)
                if row["prev_hash"] != prev:
                    rows.close()
                    return VerifyResult(False, checked, seq, f"entry {seq}: prev_hash does not "
                                        f"match the hash of entry {seq - 1}")
                if entry_hash(prev, dict(row)) != row["hash"]:
                    rows.close()
                    return VerifyResult(False, checked, seq,
                                        f"entry {seq}: contents do not match its hash")
                prev, expected_seq = row["hash"], expected_seq + 1
            if expected_seq - 1 != head.seq:
                return VerifyResult(False, checked, expected_seq,
                                    f"entries {expected_seq}..{head.seq} are missing")
            if prev != head.hash:
                return VerifyResult(False, checked, head.seq or None,
                                    f"the head hash does not match entry {head.seq}")
            # One statement, one snapshot: rows past the head that no append accounts for.
            current = select(audit_head.c.seq).where(audit_head.c.id == 1).scalar_subquery()
            stray = conn.execute(select(func.min(audit_log.c.seq))
                                 .where(audit_log.c.seq > current)).scalar()
            if stray is not None:
                return VerifyResult(False, checked, stray,
                                    f"entry {stray} lies beyond the chain's head")
        return VerifyResult(True, checked, None, f"{checked} entries verified")

    def search(self, *, patient: str | None = None, user: str | None = None,
               client_id: str | None = None, since: str | None = None, count: int = 50,
               before_seq: int | None = None) -> list[dict]:
        """Entries matching every given filter, newest first; page on with the last seq."""
        self.flush()
        if count < 1:
            raise ValueError("count must be at least 1")
        query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(min(count, MAX_COUNT))
        for column, value in ((audit_log.c.patient, patient), (audit_log.c.user, user),
                              (audit_log.c.client_id, client_id)):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(audit_log.c.recorded >= normalize_since(since))
        if before_seq is not None:
            query = query.where(audit_log.c.seq < before_seq)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    # -- FHIR -------------------------------------------------------------------------------

    def as_audit_event(self, row: dict, base: str) -> dict:
        """The entry as a FHIR R4 AuditEvent (JSON dict); `base` is the gateway's FHIR base."""
        return audit_event(row, base)


# -- AuditEvent mapping -----------------------------------------------------------------------

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"

# FHIR restful interaction -> AuditEvent.action (searches and operations Execute, per R4 notes)
_REST_ACTIONS = {
    "read": "R", "vread": "R", "history": "R", "history-instance": "R", "history-type": "R",
    "history-system": "R", "capabilities": "R", "create": "C", "update": "U", "patch": "U",
    "delete": "D", "search": "E", "search-type": "E", "search-system": "E",
    "transaction": "E", "batch": "E", "operation": "E",
}
_AUTH_ACTIONS = {"authorize", "token", "revoke", "introspect", "login", "logout"}


def _event_type(action: str) -> tuple[dict, list[dict], str]:
    if action in _REST_ACTIONS:
        return ({"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
                [{"system": INTERACTION, "code": action}], _REST_ACTIONS[action])
    if action in _AUTH_ACTIONS:
        subtype = {"login": ("110122", "Login"), "logout": ("110123", "Logout")}.get(action)
        return ({"system": DCM, "code": "110114", "display": "User Authentication"},
                [{"system": DCM, "code": subtype[0], "display": subtype[1]}] if subtype else [],
                "E")
    return {"system": DCM, "code": "110110", "display": "Patient Record"}, [], "E"


def _outcome_code(outcome: str, status: int | None) -> str:
    """0 success, 4 minor failure (refused, client error), 8 serious failure (server error)."""
    word = outcome.lower()
    if word.isdigit() and status is None:
        status = int(word)
    if word in ("allowed", "success", "ok"):
        return "0"
    if word in ("denied", "refused", "forbidden"):
        return "4"
    if word in ("error", "failed", "failure"):
        return "8"
    if status is not None:
        return "0" if status < 400 else "4" if status < 500 else "8"
    return "4"


def _who(value: str) -> dict:
    return {"reference": value} if _REFERENCE.match(value) else {"display": value}


def audit_event(row: dict, base: str) -> dict:
    """A stored entry (a `search()` row) as a FHIR R4 AuditEvent."""
    base = base.rstrip("/")
    event_type, subtype, action = _event_type(row["action"])
    client_agent = None
    if row.get("client_id"):
        client_agent = {
            "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
            "who": {"identifier": {"system": f"{base}/client-id", "value": row["client_id"]}},
            "requestor": False,
        }
    agents: list[dict] = []
    if row.get("user"):
        agents.append({"who": _who(row["user"]), "requestor": True})
        if client_agent:
            agents.append(client_agent)
    elif client_agent:
        agents.append({**client_agent, "requestor": True})
    else:
        agents.append({"who": {"display": "unknown"}, "requestor": True})

    entities: list[dict] = []
    patient = row.get("patient")
    if patient and "/" not in patient:
        patient = f"Patient/{patient}"
    rtype, rid = row.get("resource_type"), row.get("resource_id")
    if rtype and rid and f"{rtype}/{rid}" != patient:
        entities.append({"what": {"reference": f"{rtype}/{rid}"},
                         "type": {"system": RESOURCE_TYPES, "code": rtype},
                         "role": {"system": OBJECT_ROLE, "code": "4",
                                  "display": "Domain Resource"}})
    elif rtype and not rid:
        entities.append({"type": {"system": RESOURCE_TYPES, "code": rtype},
                         "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                         "description": f"{rtype} search"})
    if patient:
        entities.append({"what": {"reference": patient},
                         "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                         "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}})
    if row.get("request_id"):
        entities.append({"what": {"identifier": {"type": {"text": "request id"},
                                                 "value": row["request_id"]}},
                         "type": {"system": ENTITY_TYPE, "code": "2",
                                  "display": "System Object"},
                         "description": "HTTP request"})

    desc = row["outcome"]
    if row.get("status") is not None and str(row["status"]) != row["outcome"]:
        desc += f" ({row['status']})"
    if row.get("detail"):
        desc += f": {row['detail']}"
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(row["seq"]),
        "type": event_type,
        "action": action,
        "recorded": row["recorded"],
        "outcome": _outcome_code(row["outcome"], row.get("status")),
        "outcomeDesc": desc,
        "agent": agents,
        "source": {"site": base, "observer": {"display": OBSERVER},
                   "type": [{"system": SOURCE_TYPE, "code": "4",
                             "display": "Application Server"}]},
    }
    if subtype:
        event["subtype"] = subtype
    if entities:
        event["entity"] = entities
    return event
