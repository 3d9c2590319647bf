"""The hash-chained audit log on SQLite and PostgreSQL: chain, tampering, concurrency, search,
and the FHIR AuditEvent view (validated with fhir.resources R4B)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, event, func, select, text

from fhir_gateway import audit as audit_module
from fhir_gateway.audit import (
    GENESIS,
    AuditChainError,
    AuditLog,
    AuditRecord,
    audit_log,
    entry_hash,
    metadata,
)
from tests.conftest import PG_ADMIN_URL, ROOT, skip_or_fail

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
BASE = "https://gw.example.org/fhir"


# -- databases ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this module, dropped afterwards."""
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        skip_or_fail("GATEWAY_REQUIRE_POSTGRES",
                     f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {type(exc).__name__}")
    name = f"gw_audit_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def explicit_begin_sqlite(url: str) -> Engine:
    """SQLite the way the embedded store runs it: WAL, driver autocommit, BEGIN on begin()."""
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA busy_timeout=30000")

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN")

    return engine


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.sqlite3'}"
        return
    url = request.getfixturevalue("pg_url")
    yield url
    cleanup = create_engine(url)
    metadata.drop_all(cleanup)
    cleanup.dispose()


@pytest.fixture
def engine(db_url) -> Iterator[Engine]:
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def log(engine) -> AuditLog:
    return AuditLog(engine)


def sample(i: int) -> AuditRecord:
    return AuditRecord(action="read", outcome="allowed", user=f"Patient/pat-{i % 3:04d}",
                       client_id="portal-app", patient=f"Patient/pat-{i % 3:04d}",
                       resource_type="Observation", resource_id=f"obs-{i}", status=200,
                       request_id=f"req-{i}")


def fill(log: AuditLog, n: int) -> list[int]:
    return [log.append(sample(i)) for i in range(n)]


def sql(engine: Engine, statement: str, **params) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def stored(engine: Engine, seq: int) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT * FROM audit_log WHERE seq = :s"),
                                 {"s": seq}).mappings().one())


# -- the chain ------------------------------------------------------------------------------

def test_empty_log_verifies(log):
    result = log.verify()
    assert (result.ok, result.entries, result.first_bad) == (True, 0, None)
    assert log.head() == (0, GENESIS)


def test_append_and_verify(log, engine):
    assert fill(log, 5) == [1, 2, 3, 4, 5]
    result = log.verify()
    assert (result.ok, result.entries, result.first_bad) == (True, 5, None)
    rows = sorted(log.search(count=10), key=lambda r: r["seq"])
    assert rows[0]["prev_hash"] == GENESIS
    for before, after in zip(rows, rows[1:], strict=False):
        assert after["prev_hash"] == before["hash"]
    assert all(STAMP.match(r["recorded"]) for r in rows)
    assert log.head() == (5, rows[-1]["hash"])
    assert rows[2]["hash"] == entry_hash(rows[1]["hash"], rows[2])
    # A second instance (a restart, another process) continues the same chain.
    again = AuditLog(engine)
    assert again.append(sample(9)) == 6
    assert again.verify().ok and again.verify().entries == 6


@pytest.mark.parametrize(("column", "value"), [
    ("outcome", "allowed"),
    ("patient", "Patient/pat-9999"),
    ("user", "Practitioner/prac-01"),
    ("recorded", "2020-01-01T00:00:00.000Z"),
    ("status", 403),
])
def test_editing_a_field_names_the_entry(log, engine, column, value):
    fill(log, 3)
    log.append(AuditRecord(action="read", outcome="denied", user="Patient/pat-0002",
                           patient="Patient/pat-0002", status=401))
    fill(log, 2)
    sql(engine, f'UPDATE audit_log SET "{column}" = :v WHERE seq = 4', v=value)
    result = log.verify()
    assert not result.ok
    assert result.first_bad == 4
    assert "entry 4" in result.reason


def test_deleting_a_middle_row_fails(log, engine):
    fill(log, 6)
    sql(engine, "DELETE FROM audit_log WHERE seq = 3")
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 3)
    assert "entry 3 is missing" in result.reason


def test_deleting_the_newest_rows_fails(log, engine):
    fill(log, 6)
    sql(engine, "DELETE FROM audit_log WHERE seq >= 5")
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 5)
    assert "missing" in result.reason


def test_reordering_rows_fails(log, engine):
    fill(log, 5)
    sql(engine, "UPDATE audit_log SET seq = -1 WHERE seq = 2")
    sql(engine, "UPDATE audit_log SET seq = 2 WHERE seq = 3")
    sql(engine, "UPDATE audit_log SET seq = 3 WHERE seq = -1")
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 2)


def test_changing_a_hash_fails(log, engine):
    fill(log, 5)
    sql(engine, "UPDATE audit_log SET hash = :h WHERE seq = 4", h="f" * 64)
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 4)
    assert "entry 4" in result.reason


def test_rehashing_an_edited_entry_breaks_the_next_link(log, engine):
    fill(log, 5)
    row = stored(engine, 2)
    row["outcome"] = "denied"
    sql(engine, "UPDATE audit_log SET outcome = 'denied', hash = :h WHERE seq = 2",
        h=entry_hash(row["prev_hash"], row))
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 3)
    assert "prev_hash" in result.reason


def test_a_row_beyond_the_head_fails(log, engine):
    fill(log, 3)
    last = stored(engine, 3)
    forged = {**last, "seq": 4, "prev_hash": last["hash"], "outcome": "denied"}
    forged["hash"] = entry_hash(last["hash"], forged)
    columns = ", ".join(f'"{k}"' for k in forged)
    sql(engine, f"INSERT INTO audit_log ({columns}) VALUES ({', '.join(':' + k for k in forged)})",
        **forged)
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 4)
    assert "beyond" in result.reason


def test_tampered_head_fails(log, engine):
    fill(log, 3)
    sql(engine, "UPDATE audit_head SET hash = :h", h="0" * 64)
    result = log.verify()
    assert not result.ok and result.first_bad == 3


def test_a_removed_head_is_not_silently_restarted(log, engine):
    fill(log, 3)
    sql(engine, "DELETE FROM audit_head")
    reopened = AuditLog(engine)
    with pytest.raises(AuditChainError):
        reopened.append(sample(1))
    result = reopened.verify()
    assert (result.ok, result.first_bad) == (False, 1)


def test_only_appends_are_offered():
    public = {name for name in dir(AuditLog) if not name.startswith("_")}
    # flush only writes what append already accepted (batched mode)
    assert public == {"append", "flush", "verify", "search", "as_audit_event", "head"}


def test_batched_appends_from_threads_make_one_chain(tmp_path):
    """Behind-the-request writing: appends return at once, land within the window in one
    transaction per batch, and readers see them all (they flush first)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    log = AuditLog(engine, batch_window=0.005)
    assert log.append(sample(0)) is None

    def many(tag: int) -> None:
        for i in range(50):
            log.append(sample(tag * 100 + i))

    threads = [threading.Thread(target=many, args=(t,)) for t in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(log.search(count=1000)) == 401  # search flushed what was still pending
    assert_one_chain(log, 401)
    deadline = time.monotonic() + 5  # and the writer alone gets there too
    log.append(sample(999))
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(select(func.count()).select_from(audit_log)).scalar() == 402:
                break
        time.sleep(0.01)
    else:
        pytest.fail("the background writer did not write the last entry")
    engine.dispose()


@pytest.mark.parametrize("record", [
    AuditRecord(action="", outcome="allowed"),
    AuditRecord(action="read", outcome=None),  # type: ignore[arg-type]
    AuditRecord(action="read", outcome="allowed", status=True),  # type: ignore[arg-type]
    AuditRecord(action="read", outcome="allowed", patient="Patient/" + "x" * 300),
    AuditRecord(action="read", outcome="allowed", detail="a\x00b"),
])
def test_malformed_records_are_refused(log, record):
    with pytest.raises(ValueError):
        log.append(record)
    assert log.verify().entries == 0


# -- concurrency ----------------------------------------------------------------------------

def run_threads(targets) -> None:
    errors: list[BaseException] = []

    def guard(fn):
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(fn,)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def assert_one_chain(log: AuditLog, total: int) -> None:
    result = log.verify()
    assert (result.ok, result.entries, result.first_bad) == (True, total, None), result.reason
    seqs = [row["seq"] for row in log.search(count=1000)]
    assert sorted(seqs) == list(range(1, total + 1))


def test_concurrent_appends_share_one_chain(log):
    seqs: list[int] = []

    def worker(t: int) -> None:
        for i in range(25):
            seqs.append(log.append(sample(t * 100 + i)))

    run_threads([lambda t=t: worker(t) for t in range(8)])
    assert sorted(seqs) == list(range(1, 201))
    assert_one_chain(log, 200)


def append_from_engines(engines: list[Engine]) -> None:
    """Two threads per instance, each instance with its own pool (as separate processes would
    be): between instances only the database's lock keeps the chain single."""
    logs = [AuditLog(e) for e in engines]

    def worker(log: AuditLog, t: int) -> None:
        for i in range(25):
            log.append(sample(t * 100 + i))

    run_threads([lambda k=k: worker(logs[k // 2], k) for k in range(8)])
    assert_one_chain(logs[0], 200)
    for e in engines:
        e.dispose()


def test_concurrent_appends_from_separate_engines(db_url):
    append_from_engines([create_engine(db_url) for _ in range(4)])


def test_concurrent_appends_sqlite_with_explicit_begin(tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    append_from_engines([explicit_begin_sqlite(url) for _ in range(4)])


def test_a_stale_head_cannot_fork_the_chain(tmp_path, monkeypatch):
    """Without the lock step, a writer whose head went stale is refused and retries."""
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    other = AuditLog(engine)
    stale = AuditLog(engine)
    stale._sqlite = False  # skip taking SQLite's write lock before reading the head
    interleaved: list[int] = []
    started: list[bool] = []
    real_hash = audit_module.entry_hash

    def hashing(prev: str, entry: dict) -> str:  # after the head was read: another writer
        if not started:
            started.append(True)
            t = threading.Thread(target=lambda: interleaved.append(other.append(sample(1))))
            t.start()
            t.join(30)
        return real_hash(prev, entry)

    monkeypatch.setattr(audit_module, "entry_hash", hashing)
    assert stale.append(sample(2)) == 2
    assert interleaved == [1]
    assert_one_chain(stale, 2)
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "sqlite-autocommit", "postgres"])
def test_a_refused_append_leaves_nothing_behind(kind, tmp_path, request, monkeypatch):
    """The entries and the head move are one transaction, also on a driver connection in
    autocommit mode: when the head cannot be moved, no entry stays."""
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}" if kind != "postgres" else \
        request.getfixturevalue("pg_url")
    engine = explicit_begin_sqlite(url) if kind == "sqlite-autocommit" else create_engine(url)
    try:
        log = AuditLog(engine, attempts=1)
        assert log.append(sample(0)) == 1
        monkeypatch.setattr(log._sql, "move_head", log._sql.move_head + " AND 1 = 0")
        with pytest.raises(audit_module._HeadMoved):
            log.append(sample(1))
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(audit_log)).scalar() == 1
        monkeypatch.undo()
        assert log.append(sample(2)) == 2
        assert log.verify().ok
    finally:
        metadata.drop_all(engine)
        engine.dispose()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["user", "client_id", "patient", "detail", "action"]),
                       st.text(), min_size=1), st.integers(0, 2**62),
       st.one_of(st.none(), st.integers(-2**31, 2**31)))
def test_entry_hash_is_unchanged_for_chains_written_before(texts, seq, status):
    """Chains written with json.dumps verify: orjson writes the same canonical bytes."""
    entry = {"seq": seq, "recorded": "2026-06-15T08:30:00.123Z", "outcome": "allowed",
             "resource_type": None, "resource_id": None, "request_id": None, "user": None,
             "client_id": None, "patient": None, "detail": None, "action": "read",
             "status": status, **texts}
    body = {name: entry[name] for name in ("seq", "recorded", *audit_module._FIELDS)}
    try:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: neither way could ever store it
        with pytest.raises(TypeError):
            entry_hash(GENESIS, entry)
        return
    assert entry_hash(GENESIS, entry) == hashlib.sha256(GENESIS.encode() + canonical).hexdigest()


def test_batched_entries_carry_the_time_they_were_appended(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    now = [datetime(2026, 6, 15, 8, 30, 0, 123000, tzinfo=UTC)]
    log = AuditLog(engine, clock=lambda: now[0], batch_window=60)  # the writer waits 60 s
    log.append(sample(0))
    now[0] += timedelta(minutes=5)
    log.flush()
    assert log.search(count=1)[0]["recorded"] == "2026-06-15T08:30:00.123Z"
    engine.dispose()


WORKER = """
import sys
from sqlalchemy import create_engine
from fhir_gateway.audit import AuditLog, AuditRecord
url, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = AuditLog(create_engine(url))
for i in range(n):
    log.append(AuditRecord(action="search-type", outcome="allowed", user=f"Patient/{tag}",
                           resource_type="Observation"))
"""


def test_concurrent_appends_from_processes(db_url):
    AuditLog(create_engine(db_url))  # tables exist before the race
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, db_url, f"p{k}", "25"], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for k in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    engine = create_engine(db_url)
    assert_one_chain(AuditLog(engine), 100)
    engine.dispose()


# -- search ---------------------------------------------------------------------------------

def test_search_filters_and_paging(engine):
    start = datetime(2026, 6, 15, 8, 0, tzinfo=UTC)
    ticks = iter(start + timedelta(minutes=i) for i in range(1000))
    log = AuditLog(engine, clock=lambda: next(ticks))
    for i in range(30):
        log.append(AuditRecord(action="read", outcome="allowed", user=f"Patient/pat-{i % 3}",
                               client_id="app-a" if i % 2 else "app-b",
                               patient=f"Patient/pat-{i % 3}", resource_type="Observation",
                               resource_id=f"o{i}"))

    newest = log.search(count=5)
    assert [r["seq"] for r in newest] == [30, 29, 28, 27, 26]
    assert newest[0]["recorded"] == "2026-06-15T08:29:00.000Z"

    pages, before = [], None
    while page := log.search(patient="Patient/pat-1", count=4, before_seq=before):
        pages.append([r["seq"] for r in page])
        before = page[-1]["seq"]
    assert pages == [[29, 26, 23, 20], [17, 14, 11, 8], [5, 2]]

    assert {r["user"] for r in log.search(user="Patient/pat-2", count=100)} == {"Patient/pat-2"}
    assert len(log.search(user="Patient/pat-2", count=100)) == 10
    both = log.search(patient="Patient/pat-0", client_id="app-a", count=100)
    assert [r["seq"] for r in both] == [28, 22, 16, 10, 4]
    assert log.search(client_id="nobody") == []

    assert [r["seq"] for r in log.search(since="2026-06-15T08:27:00Z")] == [30, 29, 28]
    assert [r["seq"] for r in log.search(since="2026-06-15T10:27:00+02:00")] == [30, 29, 28]
    assert [r["seq"] for r in log.search(since="2026-06-15T08:27:30.5")] == [30, 29]
    assert len(log.search(since="2026-06-15", count=100)) == 30
    assert log.search(since="2026-06-16") == []
    with pytest.raises(ValueError):
        log.search(since="yesterday")
    with pytest.raises(ValueError):
        log.search(count=0)


# -- FHIR AuditEvent ------------------------------------------------------------------------

def event_for(log: AuditLog, record: AuditRecord) -> dict:
    seq = log.append(record)
    row = log.search(count=1)[0]
    assert row["seq"] == seq
    event = log.as_audit_event(row, BASE)
    AuditEvent.model_validate(event)  # raises when it is not a valid R4B AuditEvent
    return event


def test_read_as_audit_event(log):
    ev = event_for(log, AuditRecord(
        action="read", outcome="allowed", user="Patient/pat-0001", client_id="portal-app",
        patient="Patient/pat-0001", resource_type="Observation", resource_id="obs-7",
        status=200, request_id="req-42"))
    assert ev["resourceType"] == "AuditEvent" and ev["id"] == "1"
    assert ev["type"]["code"] == "rest"
    assert ev["type"]["system"] == "http://terminology.hl7.org/CodeSystem/audit-event-type"
    assert ev["subtype"] == [{"system": "http://hl7.org/fhir/restful-interaction",
                              "code": "read"}]
    assert (ev["action"], ev["outcome"]) == ("R", "0")
    assert STAMP.match(ev["recorded"])
    user, client = ev["agent"]
    assert user == {"who": {"reference": "Patient/pat-0001"}, "requestor": True}
    assert client["who"]["identifier"]["value"] == "portal-app"
    assert client["requestor"] is False
    assert ev["source"]["observer"] == {"display": "fhir-gateway"}
    whats = [e["what"] for e in ev["entity"]]
    assert {"reference": "Observation/obs-7"} in whats
    assert {"reference": "Patient/pat-0001"} in whats
    assert any(w.get("identifier", {}).get("value") == "req-42" for w in whats)


@pytest.mark.parametrize(("record", "expect"), [
    (AuditRecord(action="search-type", outcome="allowed", user="Practitioner/prac-01",
                 client_id="clinician-app", patient="Patient/pat-0002",
                 resource_type="Observation", status=200),
     {"action": "E", "outcome": "0", "type": "rest", "agents": 2}),
    (AuditRecord(action="create", outcome="201", user="Patient/pat-0001", client_id="app",
                 patient="Patient/pat-0001", resource_type="Communication",
                 resource_id="c1", status=201),
     {"action": "C", "outcome": "0", "type": "rest", "agents": 2}),
    (AuditRecord(action="read", outcome="denied", user="Patient/pat-0001", client_id="app",
                 patient="Patient/pat-0002", resource_type="Patient", resource_id="pat-0002",
                 status=403, detail="outside the patient compartment"),
     {"action": "R", "outcome": "4", "type": "rest", "agents": 2}),
    (AuditRecord(action="delete", outcome="500", client_id="app", resource_type="Task",
                 resource_id="t1", status=500),
     {"action": "D", "outcome": "8", "type": "rest", "agents": 1}),
    (AuditRecord(action="authorize", outcome="denied", user="Patient/pat-0003",
                 client_id="portal-app", patient="Patient/pat-0003",
                 detail="user declined scopes"),
     {"action": "E", "outcome": "4", "type": "110114", "agents": 2}),
    (AuditRecord(action="token", outcome="allowed", client_id="backend-svc", status=200),
     {"action": "E", "outcome": "0", "type": "110114", "agents": 1}),
    (AuditRecord(action="export-consent", outcome="allowed", user="Patient/pat-0001",
                 patient="pat-0001"),
     {"action": "E", "outcome": "0", "type": "110110", "agents": 1}),
    (AuditRecord(action="revoke", outcome="allowed"),
     {"action": "E", "outcome": "0", "type": "110114", "agents": 1}),
])
def test_audit_events_validate(log, record, expect):
    ev = event_for(log, record)
    assert (ev["action"], ev["outcome"], ev["type"]["code"]) == (
        expect["action"], expect["outcome"], expect["type"])
    assert len(ev["agent"]) == expect["agents"]
    assert [a["requestor"] for a in ev["agent"]].count(True) == 1
    assert ev["source"]["observer"]["display"] == "fhir-gateway"
    if record.patient:
        assert {"reference": "Patient/pat-" + record.patient.split("-")[-1]} in [
            e.get("what") for e in ev["entity"]]
    if record.detail:
        assert record.detail in ev["outcomeDesc"]


def test_the_writer_wakes_again_after_going_idle(tmp_path):
    """The writer is told of new entries only after a window that brought nothing: entries
    that come while it is busy, and the first one after a quiet spell, are all written by it
    alone (no reader flushing)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    log = AuditLog(engine, batch_window=0.005)

    def written() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(audit_log)).scalar()

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if written() == count:
                return
            time.sleep(0.005)
        pytest.fail(f"the writer wrote {written()} entries, not {count}")

    for i in range(30):  # a steady stream over several windows
        log.append(sample(i))
        time.sleep(0.001)
    wait_for(30)
    time.sleep(0.05)  # ten quiet windows: the writer goes idle
    assert log._idle
    log.append(sample(30))
    wait_for(31)
    engine.dispose()
