"""The outbox: writes the EHR could not take right away, kept durably and replayed in order.

A create, update or delete that meets `UpstreamUnavailable` (EHR down, 5xx, 429) is stored here
in the gateway's own database and the client gets 202 with a status URL. The worker replays
entries oldest first, one lane per patient (a later write for a patient waits for the earlier
ones), as conditional creates on an identifier the gateway assigned, so a replay after a crash
never stores twice. After success it reads the resource back and records what the EHR stored.
A permanent refusal (4xx) ends the entry as failed, with the EHR's OperationOutcome.

Several gateway processes may share the database: an entry is claimed with a compare-and-set
and a short lease, which the claiming process renews in the background for as long as it is
sending. A process that dies mid-replay (SIGKILL, crash, machine lost) stops renewing, so its
entry is taken over after at most `LEASE` seconds, by any process, a restarted one included.
The claim time is a fencing token: a process that lost its lease cannot settle the entry.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from adapters.base import (  # noqa: F401 - the write id names, used from here too
    WRITE_ID_SYSTEM,
    WriteResult,
    assign_write_id,
    holds_what_was_sent,
)
from adapters.errors import FhirError, PreconditionFailed, UpstreamError, UpstreamUnavailable
from mappings.references import reference_target

log = logging.getLogger("fhir_gateway.outbox")

LEASE = 10.0  # seconds a claimed entry stays with its process unless the process renews it
RENEW_EVERY = LEASE / 4  # how often a live process renews the leases it holds
STATES = ("queued", "sending", "stored", "failed", "dropped")
TASK_STATUS = {"queued": "requested", "sending": "in-progress", "stored": "completed",
               "failed": "failed", "dropped": "cancelled"}

metadata = MetaData()
outbox = Table(
    "outbox", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("lane", String(80), nullable=False, index=True),  # Patient id, or "" for none
    Column("client_id", String(200), nullable=False, default=""),
    # who made the write: the token's fhirUser, else its subject (None with SMART off)
    Column("requester", String(255)),
    Column("method", String(8), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64)),
    Column("body", Text),
    Column("if_match", String(64)),
    Column("write_id", String(64)),  # the identifier value the gateway assigned (creates)
    Column("if_none_exist", Text),  # the caller's If-None-Exist (creates), narrowing included
    Column("status", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", Float, nullable=False),
    Column("lease_until", Float, nullable=False, default=0.0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("last_error", Text),
    Column("outcome", Text),  # the EHR's OperationOutcome of a permanent refusal
    Column("result_ref", String(200)),  # Type/id/_history/version the EHR stored
    Column("result", Text),  # what the EHR stored, read back after success
)
# Every direct write asks whether a write to its resource still waits (`waiting_lane`).
_BY_RESOURCE = Index("ix_outbox_resource", outbox.c.resource_type, outbox.c.resource_id)
_PENDING = outbox.c.status.in_(("queued", "sending"))
SETTLED = ("stored", "dropped")  # ends that nobody needs to act on: purged after `keep_days`


@dataclass
class Entry:
    seq: int
    id: str
    lane: str
    client_id: str
    method: str
    resource_type: str
    resource_id: str | None
    body: dict | None
    if_match: str | None
    write_id: str | None
    status: str
    attempts: int
    next_at: float
    created_at: float
    updated_at: float
    last_error: str | None
    outcome: dict | None
    result_ref: str | None
    result: dict | None
    if_none_exist: str | None = None
    requester: str | None = None

    @classmethod
    def from_row(cls, row) -> Entry:
        m = row._mapping
        load = _load
        return cls(m["seq"], m["id"], m["lane"], m["client_id"], m["method"],
                   m["resource_type"], m["resource_id"], load(m["body"]), m["if_match"],
                   m["write_id"], m["status"], m["attempts"], m["next_at"], m["created_at"],
                   m["updated_at"], m["last_error"], load(m["outcome"]), m["result_ref"],
                   load(m["result"]), m["if_none_exist"], m["requester"])

    def as_task(self, base: str) -> dict:
        """The entry as a FHIR Task, which is what the status URL answers."""
        verb = {"POST": "create", "PUT": "update", "DELETE": "delete"}[self.method]
        target = self.resource_type + (f"/{self.resource_id}" if self.resource_id else "")
        task: dict = {
            "resourceType": "Task", "id": self.id,
            "status": TASK_STATUS[self.status], "intent": "order",
            "code": {"text": f"{verb} {target}"},
            "authoredOn": _instant(self.created_at), "lastModified": _instant(self.updated_at),
            "businessStatus": {"text": self.describe()},
        }
        if self.lane:
            task["for"] = {"reference": f"Patient/{self.lane}"}
        if self.requester and reference_target(self.requester):  # a fhirUser, not a subject
            task["requester"] = {"reference": self.requester}
        outputs = []
        if self.result_ref:
            outputs.append({"type": {"text": "stored"},
                            "valueReference": {"reference": self.result_ref}})
        if self.outcome:
            task["contained"] = [dict(self.outcome, id="outcome")]
            outputs.append({"type": {"text": "outcome"},
                            "valueReference": {"reference": "#outcome"}})
        if self.status == "failed" and self.last_error:
            task["statusReason"] = {"text": self.last_error}
        if outputs:
            task["output"] = outputs
        return task

    def describe(self) -> str:
        if self.status == "queued":
            when = max(0, int(self.next_at - time.time()))
            return (f"Waiting for the EHR (attempt {self.attempts}); next try in about "
                    f"{when} s")
        return {"sending": "Being sent to the EHR now",
                "stored": "Stored in the EHR",
                "failed": "The EHR refused this write; it will not be retried",
                "dropped": "Dropped by an administrator; it was not stored"}[self.status]


def _chunks(values: list[str], size: int) -> list[list[str]]:
    return [values[i:i + size] for i in range(0, len(values), size)]


def _load(value: str | None):
    return orjson.loads(value) if value else None


def _instant(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"


def _add_missing_indexes(engine: Engine) -> None:
    """An outbox table made by an earlier version gets the indexes added since."""
    for index in outbox.indexes:
        try:
            index.create(engine, checkfirst=True)
        except DBAPIError:
            # another worker starting at the same moment created it first
            if index.name not in {i["name"] for i in inspect(engine).get_indexes("outbox")}:
                raise


def _add_missing_columns(engine: Engine) -> None:
    """An outbox table made by an earlier version gets the columns added since (each is
    nullable: its old entries simply have none)."""
    have = {c["name"] for c in inspect(engine).get_columns("outbox")}
    for column in outbox.columns:
        if column.name in have:
            continue
        kind = column.type.compile(dialect=engine.dialect)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE outbox ADD COLUMN {column.name} {kind}")
        except DBAPIError:
            # another worker starting at the same moment added it first
            if column.name not in {c["name"] for c in inspect(engine).get_columns("outbox")}:
                raise


class Outbox:
    def __init__(self, engine: Engine, max_attempts: int = 50) -> None:
        self.engine = engine
        self.max_attempts = max_attempts
        metadata.create_all(engine)
        _add_missing_columns(engine)
        _add_missing_indexes(engine)
        # Entries this process is sending: id -> claim token (the updated_at it set).
        self._held: dict[str, float] = {}
        self._held_lock = threading.Lock()
        self._keeper: threading.Thread | None = None

    # -- queueing and looking -----------------------------------------------------------

    def enqueue(self, *, method: str, resource_type: str, resource_id: str | None,
                body: dict | None, if_match: str | None, write_id: str | None, lane: str,
                client_id: str, error: str, retry_after: float | None = None,
                if_none_exist: str | None = None, requester: str | None = None) -> Entry:
        now = time.time()
        entry_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(insert(outbox).values(
                id=entry_id, lane=lane or "", client_id=client_id or "",
                requester=requester, method=method,
                resource_type=resource_type, resource_id=resource_id,
                body=orjson.dumps(body).decode() if body is not None else None,
                if_match=if_match, write_id=write_id, if_none_exist=if_none_exist,
                status="queued", attempts=1,
                next_at=now + (retry_after if retry_after is not None else 1.0),
                lease_until=0.0, created_at=now, updated_at=now, last_error=error))
        log.info("outbox queued id=%s %s %s", entry_id, method, resource_type)
        return self.get(entry_id)

    def get(self, entry_id: str) -> Entry | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(outbox).where(outbox.c.id == entry_id)).first()
        return Entry.from_row(row) if row else None

    def list(self, status: str | None = None, lane: str | None = None,
             client_id: str | None = None, requester: str | None = None,
             unattributed: bool = False, limit: int = 200) -> list[Entry]:
        """The newest `limit` entries that match, oldest first. With `unattributed`,
        `requester` also matches entries that name none (queued before requesters were
        kept)."""
        query = select(outbox).order_by(outbox.c.seq.desc()).limit(limit)
        if status:
            query = query.where(outbox.c.status == status)
        if lane is not None:
            query = query.where(outbox.c.lane == lane)
        if client_id is not None:
            query = query.where(outbox.c.client_id == client_id)
        if requester is not None:
            query = query.where(or_(outbox.c.requester == requester,
                                    outbox.c.requester.is_(None)) if unattributed else
                                outbox.c.requester == requester)
        with self.engine.connect() as conn:
            return [Entry.from_row(r) for r in conn.execute(query)][::-1]

    def waiting_lane(self, resource_type: str, resource_id: str) -> str | None:
        """The lane of a write to this resource that still waits, if any: a later write to it
        must go behind that one, whoever makes it."""
        with self.engine.connect() as conn:
            row = conn.execute(select(outbox.c.lane).where(
                outbox.c.resource_type == resource_type, outbox.c.resource_id == resource_id,
                _PENDING).order_by(outbox.c.seq)
                .limit(1)).first()
        return None if row is None else row[0]

    CHUNK = 500  # values per IN list: SQLite caps an expression's depth and its parameters

    def waiting_until(self, resources: set[tuple[str, str]], lanes: set[str]) -> float | None:
        """None when no write waits (queued or being sent) to one of these resources (type,
        id) or in one of these lanes; else about when they will be through: the latest of
        their lanes' heads' next tries (now for one being sent), since only a lane's head is
        sent and every one of those lanes must drain first. A write that cannot be queued
        behind them must not go before."""
        ids: dict[str, list[str]] = {}
        for rtype, rid in sorted(r for r in resources if r[1]):  # an id-less one has no writes
            ids.setdefault(rtype, []).append(rid)
        blocking = set()
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(lanes), self.CHUNK):  # flat queries, any number
                blocking |= set(conn.execute(select(outbox.c.lane.distinct()).where(
                    _PENDING, outbox.c.lane.in_(chunk))).scalars())
            for rtype, some in ids.items():
                for chunk in _chunks(some, self.CHUNK):
                    blocking |= set(conn.execute(select(outbox.c.lane.distinct()).where(
                        _PENDING, outbox.c.resource_type == rtype,
                        outbox.c.resource_id.in_(chunk))).scalars())
            if not blocking:
                return None
            heads = []
            for chunk in _chunks(sorted(blocking), self.CHUNK):
                heads += conn.execute(select(func.min(outbox.c.seq)).where(
                    _PENDING, outbox.c.lane.in_(chunk)).group_by(outbox.c.lane)).scalars()
            now = time.time()
            due = now
            for chunk in _chunks(heads, self.CHUNK):
                for status, next_at in conn.execute(select(outbox.c.status, outbox.c.next_at)
                                                    .where(outbox.c.seq.in_(chunk))):
                    due = max(due, now if status == "sending" else next_at)
        return due

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        with self.engine.connect() as conn:
            for status, n in conn.execute(select(outbox.c.status, func.count())
                                          .group_by(outbox.c.status)):
                out[status] = n
        return out

    def purge(self, keep_days: float, now: float | None = None) -> int:
        """Delete entries settled (stored or dropped) more than `keep_days` ago; their status
        URLs then answer 404. Failed entries stay until an administrator retries or drops
        them: a patient must be able to see what the EHR refused."""
        cutoff = (time.time() if now is None else now) - keep_days * 86400
        with self.engine.begin() as conn:
            gone = conn.execute(delete(outbox).where(
                outbox.c.status.in_(SETTLED), outbox.c.updated_at < cutoff)).rowcount
        if gone:
            log.info("outbox purged %d settled entries older than %g days", gone, keep_days)
        return gone

    def retry(self, entry_id: str) -> bool:
        """Put a failed (or waiting) entry back at the front of its lane."""
        return self._set(entry_id, ("failed", "queued"), status="queued", next_at=0.0,
                         attempts=0)

    def drop(self, entry_id: str) -> bool:
        return self._set(entry_id, ("queued", "failed"), status="dropped")

    def _set(self, entry_id: str, allowed: tuple[str, ...], **values) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(update(outbox).where(
                outbox.c.id == entry_id, outbox.c.status.in_(allowed)).values(
                updated_at=time.time(), **values)).rowcount
        return bool(done)

    # -- replaying --------------------------------------------------------------------------

    def due(self, now: float | None = None, limit: int = 50) -> list[Entry]:
        """The first entry of each lane, when it is due (queued and its time has come, or
        sending with an expired lease)."""
        now = time.time() if now is None else now
        first = select(outbox.c.lane, outbox.c.seq).where(_PENDING).order_by(outbox.c.seq)
        heads: dict[str, int] = {}
        with self.engine.connect() as conn:
            for lane, seq in conn.execute(first):
                heads.setdefault(lane, seq)
            if not heads:
                return []
            rows = conn.execute(select(outbox).where(outbox.c.seq.in_(list(heads.values())))
                                .order_by(outbox.c.seq)).all()
        out = []
        for row in rows:
            e = Entry.from_row(row)
            lease = row._mapping["lease_until"]
            if (e.status == "queued" and e.next_at <= now) or \
                    (e.status == "sending" and lease <= now):
                out.append(e)
        return out[:limit]

    def claim(self, entry: Entry) -> bool:
        """Take the entry for sending, if nobody changed it since it was read. On success the
        entry is "sending" and its `updated_at` is this claim's token; the lease is renewed
        in the background until the entry is settled (`stored`, `failed`, `later`)."""
        now = time.time()
        with self.engine.begin() as conn:
            done = conn.execute(update(outbox).where(and_(
                outbox.c.id == entry.id, outbox.c.status == entry.status,
                outbox.c.updated_at == entry.updated_at,
                # a sending entry only once its lease ran out (renewals keep updated_at)
                or_(outbox.c.status == "queued", outbox.c.lease_until <= now))).values(
                status="sending", lease_until=now + LEASE, updated_at=now)).rowcount
        if not done:
            return False
        entry.status, entry.updated_at = "sending", now
        with self._held_lock:
            self._held[entry.id] = now
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep_leases,
                                                name="outbox-lease", daemon=True)
                self._keeper.start()
        return True

    def _keep_leases(self) -> None:
        """Renew the leases of the entries this process is sending; end when it holds none."""
        while True:
            time.sleep(RENEW_EVERY)
            with self._held_lock:
                held = dict(self._held)
                if not held:
                    self._keeper = None
                    return
            for entry_id, token in held.items():
                try:
                    with self.engine.begin() as conn:
                        kept = conn.execute(update(outbox).where(
                            outbox.c.id == entry_id, outbox.c.status == "sending",
                            outbox.c.updated_at == token).values(
                            lease_until=time.time() + LEASE)).rowcount
                except Exception:  # noqa: BLE001 - retried on the next turn
                    log.exception("outbox lease renewal failed id=%s", entry_id)
                    continue
                if not kept:
                    with self._held_lock:
                        if self._held.get(entry_id) == token:
                            del self._held[entry_id]

    def stored(self, entry: Entry, ref: str | None, resource: dict | None) -> None:
        if self._finish(entry, status="stored", result_ref=ref, last_error=None,
                        result=orjson.dumps(resource).decode() if resource else None):
            log.info("outbox stored id=%s %s", entry.id, entry.resource_type)

    def failed(self, entry: Entry, error: str, outcome: dict | None) -> None:
        if self._finish(entry, status="failed", last_error=error,
                        outcome=orjson.dumps(outcome).decode() if outcome else None):
            log.info("outbox failed id=%s %s", entry.id, entry.resource_type)

    def later(self, entry: Entry, error: str, retry_after: float | None) -> None:
        attempts = entry.attempts + 1
        if attempts >= self.max_attempts:
            self.failed(entry, f"Gave up after {attempts} attempts: {error}", None)
            return
        wait = retry_after if retry_after is not None else \
            random.uniform(0.5, 1.0) * min(300.0, 2.0 ** min(attempts, 9))
        self._finish(entry, status="queued", attempts=attempts, last_error=error,
                     next_at=time.time() + wait)

    def _finish(self, entry: Entry, **values) -> bool:
        """Settle an entry this process claimed. False (and nothing changed) when its lease
        was lost and another process took the entry over in between."""
        with self._held_lock:
            if self._held.get(entry.id) == entry.updated_at:
                del self._held[entry.id]
        with self.engine.begin() as conn:
            done = conn.execute(update(outbox).where(
                outbox.c.id == entry.id, outbox.c.status == "sending",
                outbox.c.updated_at == entry.updated_at).values(
                updated_at=time.time(), lease_until=0.0, **values)).rowcount
        if not done:
            log.warning("outbox lease lost id=%s; another process settles it", entry.id)
        return bool(done)


class Replayer:
    """Sends due outbox entries to the EHR through the service's adapter."""

    def __init__(self, outbox_: Outbox, service) -> None:
        self.outbox = outbox_
        self.service = service  # fhir_gateway.service.FhirService

    def run_once(self) -> int:
        """One round: every lane's head, if due. Returns how many entries were settled."""
        settled = 0
        blocked: set[str] = set()
        while True:
            due = [e for e in self.outbox.due() if e.lane not in blocked]
            if not due:
                return settled
            progressed = False
            for entry in due:
                if not self.outbox.claim(entry):
                    continue
                if self._send(entry):
                    settled += 1
                    progressed = True
                else:
                    blocked.add(entry.lane)
            if not progressed:
                return settled

    def _create(self, entry: Entry) -> WriteResult:
        """A queued create, never twice: an earlier replay's copy is found by the identifier
        the gateway assigned; else the EHR creates it under the caller's own If-None-Exist
        (a match answers with what it matched), or under the assigned identifier."""
        service, adapter = self.service, self.service.adapter
        mine = service.write_condition(entry.resource_type, entry.write_id) \
            if entry.write_id else None
        if entry.if_none_exist is None:
            return adapter.create(entry.body, mine)
        if mine is not None:
            mine.count = 1
            found = adapter.search(entry.resource_type, mine).resources
            if found:
                return WriteResult(found[0], created=False)
        condition = service.condition(entry.resource_type, entry.if_none_exist, "If-None-Exist")
        return adapter.create(entry.body, condition)

    def _send(self, entry: Entry) -> bool:
        """True when the entry is settled (stored or failed), False when it must wait."""
        adapter = self.service.adapter
        try:
            if entry.method == "POST":
                result = self._create(entry)
            elif entry.method == "PUT":
                try:
                    result = adapter.update(entry.body, entry.if_match)
                except PreconditionFailed:
                    # an earlier replay landed and its answer was lost: its version is now
                    # the current one, which holds what this entry sent
                    current = adapter.read(entry.resource_type, entry.resource_id or "")
                    if not holds_what_was_sent(current, entry.body):
                        raise
                    result = WriteResult(current, created=False)
            else:
                adapter.delete(entry.resource_type, entry.resource_id or "")
                self.outbox.stored(entry, None, None)
                return True
            stored = result.resource or {}
            rtype, rid = stored.get("resourceType"), stored.get("id")
            try:  # what the EHR stored, read back; the write's own answer if it cannot say
                back = adapter.read(rtype, rid) if rtype and rid else stored
            except FhirError:
                back = stored
            version = (back.get("meta") or {}).get("versionId")
            ref = f"{rtype}/{rid}" + (f"/_history/{version}" if version else "")
            self.outbox.stored(entry, ref, back)
            return True
        except UpstreamUnavailable as exc:
            self.outbox.later(entry, exc.diagnostics, exc.retry_after)
            return False
        except UpstreamError as exc:
            self.outbox.later(entry, exc.diagnostics, None)
            return False
        except FhirError as exc:
            from fhir_gateway.errors import outcome_for

            self.outbox.failed(entry, exc.diagnostics, outcome_for(exc))
            return True


class Worker(threading.Thread):
    """Replays the outbox every `interval` seconds in the background of a gateway process."""

    PURGE_EVERY = 3600.0  # seconds between purges of old settled entries

    def __init__(self, replayer: Replayer, interval: float, keep_days: float = 30.0) -> None:
        super().__init__(name="outbox-worker", daemon=True)
        self.replayer = replayer
        self.interval = interval
        self.keep_days = keep_days  # 0 keeps every entry
        self._stop_event = threading.Event()
        self._purged_at = 0.0

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.replayer.run_once()
                if self.keep_days > 0 and time.monotonic() - self._purged_at > \
                        self.PURGE_EVERY:
                    self._purged_at = time.monotonic()
                    self.replayer.outbox.purge(self.keep_days)
            except Exception:  # noqa: BLE001 - the worker must outlive any one failure
                log.exception("outbox round failed")

    def stop(self) -> None:
        self._stop_event.set()
