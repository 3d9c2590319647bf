"""The outbox keeps every write the EHR could not take, and replays each exactly once.

The EHR here is a second `fhir-gateway serve` process (plain mode, its own SQLite store); the
tests count what it really stored by opening that store directly, never through the gateway.

- A burst of 200 creates while the EHR is SIGKILLed and restarted, and the gateway itself is
  SIGKILLed and restarted (a separate process) while it replays: every write stored once.
- A write whose answer is lost after the EHR stored it (connection cut, or held back until the
  gateway's read timeout) is not stored twice on replay (gateway-assigned identifier +
  conditional create).
- One patient's writes are replayed in order (last write wins); another patient's lane does not
  wait for it.
- `Outbox.retry` / `drop`, and a permanent refusal of the EHR (4xx) ending `failed` with the
  EHR's OperationOutcome in the status Task.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import httpx
import orjson
import pytest

from adapters.embedded import EmbeddedAdapter
from adapters.errors import Gone
from fhir_gateway.outbox import WRITE_ID_SYSTEM, Outbox
from smart_launch.db import make_state_engine
from tests.conftest import FHIR_JSON
from tests.rest_support import (
    LossyProxy,
    UpstreamProcess,
    relayed_upstream,
    seed,
    start_rest_gateway,
)

BURST = 200
KILL_AFTER = 60
SETTLE_TIMEOUT = 90.0

FRONT_ENV = {
    "FHIR_GATEWAY_ADAPTER": "fhir_rest",
    "FHIR_GATEWAY_FHIR_REST_VENDOR": "fhir-gateway",
    "FHIR_GATEWAY_FHIR_REST_NAME": "test-ehr",
    "FHIR_GATEWAY_OUTBOX_INTERVAL": "0.2",
    "FHIR_GATEWAY_FHIR_REST_BACKOFF": "0.01",
    "FHIR_GATEWAY_FHIR_REST_BREAKER_RESET": "1",
    "FHIR_GATEWAY_FHIR_REST_DEFAULT_CACHE_TTL": "0",
}


# -- helpers ----------------------------------------------------------------------------------

def observation(text: str, patient: str = "pat-0001", **extra) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": text},
            "subject": {"reference": f"Patient/{patient}"}, **extra}


def post(client: httpx.Client, url: str, body: dict) -> httpx.Response:
    return client.post(url, content=orjson.dumps(body), headers={"Content-Type": FHIR_JSON})


def stored_by_text(store: EmbeddedAdapter, prefix: str) -> dict[str, list[dict]]:
    """Observations in the EHR whose code.text starts with `prefix`, by that text."""
    out: dict[str, list[dict]] = {}
    for res in store.iter_all():
        if res.get("resourceType") != "Observation":
            continue
        text = (res.get("code") or {}).get("text") or ""
        if text.startswith(prefix):
            out.setdefault(text, []).append(res)
    return out


def wait_until(what: str, check, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def pending(outbox: Outbox) -> int:
    counts = outbox.counts()
    return counts["queued"] + counts["sending"]


def drain(outbox: Outbox, timeout: float) -> None:
    """Wait until no entry is queued or being sent; say which ones are left if they stay."""
    try:
        wait_until("the outbox to drain", lambda: pending(outbox) == 0, timeout, 0.2)
    except AssertionError as exc:
        left = [(e.status, e.lane, e.attempts, round(e.next_at - time.time(), 1), e.last_error)
                for e in outbox.list(limit=1000) if e.status in ("queued", "sending")]
        raise AssertionError(f"{exc}: {outbox.counts()}; first left: {left[:3]}") from None


def task_ref(task: dict) -> str | None:
    for out in task.get("output") or []:
        if (out.get("type") or {}).get("text") == "stored":
            return out["valueReference"]["reference"]
    return None


# -- 1. the burst: EHR killed and restarted, gateway killed and restarted mid-replay --------

def test_burst_survives_ehr_and_gateway_crashes(tmp_path: Path) -> None:
    """200 creates from 4 threads to a gateway process; the EHR is SIGKILLed after about 60
    (requests in flight), the rest are queued (202); the EHR restarts; while the gateway
    replays, an answer is held back (the EHR stored the write, the gateway does not know) and
    the gateway is SIGKILLed and restarted on the same outbox. Every write ends in the EHR
    exactly once, and every 202's Task ends completed, pointing at it."""
    started = time.monotonic()
    upstream = UpstreamProcess(tmp_path / "upstream")
    proxy = LossyProxy(upstream.port)  # the gateway reaches the EHR through it
    upstream.env["FHIR_GATEWAY_BASE_URL"] = proxy.base
    seed(upstream)
    upstream.start()
    front_data = tmp_path / "front"
    front = UpstreamProcess(front_data, env={
        **FRONT_ENV, "FHIR_GATEWAY_FHIR_REST_BASE_URL": proxy.base})
    outbox = None
    try:
        front.start()
        outbox = Outbox(make_state_engine(f"sqlite:///{front_data / 'gateway.sqlite3'}"))
        statuses: dict[int, int] = {}
        locations: dict[int, str] = {}
        errors: list[str] = []
        done = Counter()
        lock = threading.Lock()
        reached = threading.Event()
        next_i = iter(range(BURST))

        def writer() -> None:
            with httpx.Client(timeout=60, headers={"Accept": FHIR_JSON}) as client:
                while True:
                    with lock:
                        i = next(next_i, None)
                    if i is None:
                        return
                    try:
                        resp = post(client, f"{front.base}/Observation",
                                    observation(f"burst-{i}", valueInteger=i))
                    except httpx.HTTPError as exc:
                        with lock:
                            errors.append(f"burst-{i}: {type(exc).__name__}")
                        continue
                    with lock:
                        statuses[i] = resp.status_code
                        done[resp.status_code] += 1
                        if resp.status_code == 202:
                            locations[i] = resp.headers["Content-Location"]
                        elif resp.status_code != 201:
                            errors.append(f"burst-{i}: {resp.status_code} {resp.text[:300]}")
                        if len(statuses) >= KILL_AFTER:
                            reached.set()

        threads = [threading.Thread(target=writer) for _ in range(4)]
        for t in threads:
            t.start()
        assert reached.wait(60), "the first writes did not come back"
        upstream.kill()  # SIGKILL mid-burst, requests in flight
        killed_at = len(statuses)
        for t in threads:
            t.join(120)
        burst_done = time.monotonic()
        summary = (f"{dict(done)} (EHR killed after {killed_at} answers); "
                   f"errors: {errors[:5]}")
        assert not errors and len(statuses) == BURST, summary
        assert set(statuses.values()) <= {201, 202}, summary
        assert done[202] > 0, f"no write was queued: {summary}"

        upstream.start()
        ehr_back = time.monotonic()
        # Kill the gateway while it replays: some entries stored, some still waiting.
        queued_before = pending(outbox)
        assert queued_before > 0, summary

        wait_until("the replay to start", lambda: outbox.counts()["stored"] >= 10, 60,
                   interval=0.02)
        # Hold the EHR's answers back: the entry being sent is stored in the EHR, but the
        # gateway never hears so; kill the gateway right then.
        lost = proxy.lost
        proxy.mode = "hang"
        wait_until("a replayed write to be stored with its answer held back",
                   lambda: proxy.lost > lost and outbox.counts()["sending"] == 1, 30,
                   interval=0.01)
        front.kill()
        proxy.mode = "pass"
        at_kill = outbox.counts()
        assert at_kill["sending"] == 1 and at_kill["queued"] > 0, at_kill
        front.start()  # same data dir: the same outbox database
        drain(outbox, SETTLE_TIMEOUT)
        drained = time.monotonic()
        final = outbox.counts()
        assert final["failed"] == 0 and final["dropped"] == 0, \
            (final, [(e.id, e.last_error) for e in outbox.list(status="failed")])

        store = EmbeddedAdapter(upstream.database_url)
        try:
            found = stored_by_text(store, "burst-")
            missing = [i for i in range(BURST) if f"burst-{i}" not in found]
            twice = {k: len(v) for k, v in found.items() if len(v) > 1}
            assert not missing and not twice, \
                f"missing {missing[:20]} ({len(missing)}), twice {twice}; {summary}"
            assert len(found) == BURST
            # Every stored copy carries exactly one gateway-assigned write id, all distinct.
            write_ids = [[i["value"] for i in r[0].get("identifier") or []
                          if i.get("system") == WRITE_ID_SYSTEM] for r in found.values()]
            assert all(len(w) == 1 for w in write_ids)
            assert len({w[0] for w in write_ids}) == BURST

            # Every 202's status Task ends completed, pointing at what the EHR stored.
            with httpx.Client(timeout=30, headers={"Accept": FHIR_JSON}) as client:
                for i, location in sorted(locations.items()):
                    task = client.get(location).json()
                    assert task["resourceType"] == "Task" and task["status"] == "completed", \
                        (i, task)
                    ref = task_ref(task)
                    assert ref and ref.startswith("Observation/"), (i, task)
                    _, rid, *_ = ref.split("/")
                    assert store.read("Observation", rid)["code"]["text"] == f"burst-{i}"
        finally:
            store.close()
        print(f"\nburst: {dict(done)}; EHR killed after {killed_at} answers; "
              f"{queued_before} queued at EHR restart; at gateway kill {at_kill}; "
              f"burst {burst_done - started:.1f} s, drained {drained - ehr_back:.1f} s after "
              f"the EHR came back")
    finally:
        front.kill()
        upstream.kill()
        proxy.close()
        if outbox is not None:
            outbox.engine.dispose()


# -- a gateway in this process, in front of the EHR through the lossy proxy -------------------

@pytest.fixture(scope="module")
def ehr(tmp_path_factory):
    """(live gateway, proxy, EHR store, outbox): the gateway's adapter is fhir_rest, reaching a
    seeded `fhir-gateway serve` process through a `LossyProxy`."""
    data = tmp_path_factory.mktemp("outbox")
    upstream, proxy = relayed_upstream(data / "upstream")
    store = EmbeddedAdapter(upstream.database_url)
    # The breaker stays closed through the writes "no-writes" refuses (each conditional
    # create is tried three times), so the reads between them still go to the EHR.
    live, stop = start_rest_gateway(data / "front", proxy.base, {
        **FRONT_ENV, "FHIR_GATEWAY_FHIR_REST_READ_TIMEOUT": "1",
        "FHIR_GATEWAY_FHIR_REST_BREAKER_FAILURES": "100"}, store=store)
    try:
        assert live.get("metadata").status_code == 200  # the EHR's capabilities, known now
        yield live, proxy, store, live.app.extensions["fhir_gateway"].service.outbox
    finally:
        stop()
        proxy.close()
        upstream.kill()


def follow(live, location: str, until: tuple[str, ...] = ("completed",),
           timeout: float = 30.0) -> dict:
    """The status Task at `location`, once its status is one of `until`."""
    def done():
        task = live.client.get(location).json()
        return task if task.get("status") in until else None

    return wait_until(f"{location} to be {until}", done, timeout, interval=0.1)


# -- 2. an answer lost after the EHR stored the write -----------------------------------------

@pytest.mark.parametrize("mode", ["drop", "hang"])
def test_lost_answer_is_not_stored_twice(ehr, mode: str) -> None:
    """The EHR stores the create, then the gateway never hears back (the connection is cut,
    or nothing comes before its read timeout): 202, and the replay finds the stored copy by
    the gateway-assigned identifier instead of storing another."""
    live, proxy, store, outbox = ehr
    text = f"lost-answer-{mode}"
    lost = proxy.lost
    proxy.mode = mode
    try:
        resp = live.post("Observation", observation(text, "pat-0003"))
    finally:
        proxy.mode = "pass"
    assert resp.status_code == 202, resp.text
    assert proxy.lost > lost, "the EHR never answered, so this proved nothing"
    before = stored_by_text(store, text).get(text, [])
    assert len(before) == 1, f"the EHR should hold the write once already: {len(before)}"

    task = follow(live, resp.headers["Content-Location"])
    assert task_ref(task).split("/")[:2] == ["Observation", before[0]["id"]], task
    assert len(stored_by_text(store, text)[text]) == 1
    entry = outbox.get(task["id"])
    assert entry.write_id and entry.status == "stored"
    assert {"system": WRITE_ID_SYSTEM, "value": entry.write_id} in before[0]["identifier"]


# -- 3. per-patient order, and lanes that do not wait for each other --------------------------

def test_patient_lane_in_order_and_other_lanes_not_blocked(ehr) -> None:
    live, proxy, store, outbox = ehr
    original = {k: v for k, v in store.read("Patient", "pat-0001").items() if k != "meta"}
    versions = len(store.history("Patient", "pat-0001", 50).entries)
    proxy.mode = "down"
    try:
        # The lane's head: a write that is not due for an hour, holding pat-0001's lane.
        head = outbox.enqueue(
            method="PUT", resource_type="Patient", resource_id="pat-0001",
            body=dict(original, name=[{"family": "Held"}]), if_match=None, write_id=None,
            lane="pat-0001", client_id="", error="test: holds the lane", retry_after=3600)
        first = live.put("Patient/pat-0001", dict(original, name=[{"family": "Alpha"}]))
        second = live.put("Patient/pat-0001", dict(original, name=[{"family": "Bravo"}]))
        other = live.post("Observation", observation("other-lane", "pat-0002"))
    finally:
        proxy.mode = "pass"
    answers = [first, second, other]
    assert [r.status_code for r in answers] == [202, 202, 202], [r.text for r in answers]
    ids = [r.headers["Content-Location"].rsplit("/", 1)[1] for r in answers]
    assert [outbox.get(i).lane for i in ids] == ["pat-0001", "pat-0001", "pat-0002"]

    # pat-0002's create is replayed while pat-0001's lane still waits behind its head.
    follow(live, other.headers["Content-Location"])
    assert len(stored_by_text(store, "other-lane")["other-lane"]) == 1
    assert [outbox.get(i).status for i in ids[:2]] == ["queued", "queued"]
    assert store.read("Patient", "pat-0001")["name"] == original["name"]

    # An administrator drops the head; the lane then runs in order: Alpha, then Bravo.
    assert outbox.drop(head.id)
    assert outbox.get(head.id).status == "dropped"
    for r in answers[:2]:
        follow(live, r.headers["Content-Location"])
    assert store.read("Patient", "pat-0001")["name"] == [{"family": "Bravo"}]
    history = store.history("Patient", "pat-0001", 50).entries  # newest first
    assert len(history) == versions + 2
    assert [e.resource["name"][0]["family"] for e in history[:2]] == ["Bravo", "Alpha"]
    dropped = live.client.get(live.url(f"_outbox/{head.id}")).json()
    assert dropped["status"] == "cancelled" and "output" not in dropped


def test_direct_write_waits_behind_its_patients_queued_writes(ehr) -> None:
    live, proxy, store, outbox = ehr
    original = {k: v for k, v in store.read("Patient", "pat-0002").items() if k != "meta"}
    proxy.mode = "down"
    try:
        head = outbox.enqueue(
            method="PUT", resource_type="Patient", resource_id="pat-0002",
            body=dict(original, name=[{"family": "Older"}]), if_match=None, write_id=None,
            lane="pat-0002", client_id="", error="test: holds the lane", retry_after=3600)
        queued = live.put("Patient/pat-0002", dict(original, name=[{"family": "Queued"}]))
    finally:
        proxy.mode = "pass"
    assert queued.status_code == 202, queued.text
    try:
        wait_until("the EHR to answer again", lambda: live.get("Patient/pat-0002")
                   .status_code == 200, 10)
        newest = live.put("Patient/pat-0002", dict(original, name=[{"family": "Newest"}]))
    finally:
        outbox.drop(head.id)
    follow(live, queued.headers["Content-Location"])
    if newest.status_code == 202:
        follow(live, newest.headers["Content-Location"])
    assert store.read("Patient", "pat-0002")["name"] == [{"family": "Newest"}]


# -- 4. a permanent refusal; retry and drop ---------------------------------------------------

def test_permanent_refusal_ends_failed_with_the_ehr_outcome(ehr) -> None:
    live, proxy, store, outbox = ehr
    observations = store.count("Observation")
    # An Observation without status and code: the EHR refuses it (4xx), whatever the retry.
    entry = outbox.enqueue(
        method="POST", resource_type="Observation", resource_id=None,
        body={"resourceType": "Observation", "subject": {"reference": "Patient/pat-0003"}},
        if_match=None, write_id=None, lane="pat-0003", client_id="",
        error="test: queued directly", retry_after=0)
    location = live.url(f"_outbox/{entry.id}")
    task = follow(live, location, ("failed",))
    failed = outbox.get(entry.id)
    assert failed.status == "failed" and failed.outcome is not None
    assert "EHR" in failed.last_error and ("400" in failed.last_error or
                                           "422" in failed.last_error), failed.last_error
    contained = task["contained"][0]
    assert contained["resourceType"] == "OperationOutcome" and contained["id"] == "outcome"
    assert any("EHR:" in (i.get("diagnostics") or "") for i in contained["issue"]), contained
    assert {"type": {"text": "outcome"}, "valueReference": {"reference": "#outcome"}} in \
        task["output"]
    assert task["statusReason"]["text"] == failed.last_error
    assert not task_ref(task)
    assert store.count("Observation") == observations

    # retry: back in the lane, sent again, refused again (the EHR still says no).
    assert outbox.retry(entry.id)
    again = wait_until("the retried entry to be refused again", lambda: (
        e if (e := outbox.get(entry.id)).status == "failed" and
        e.updated_at > failed.updated_at else None), 30)
    assert again.last_error == failed.last_error
    # drop: a failed entry can be dropped; then neither retry nor drop applies.
    assert outbox.drop(entry.id)
    assert not outbox.retry(entry.id) and not outbox.drop(entry.id)
    assert live.client.get(location).json()["status"] == "cancelled"
    assert store.count("Observation") == observations


def test_retry_drop_and_lease_semantics(tmp_path: Path, monkeypatch) -> None:
    """The state machine without a worker: which transitions retry and drop allow, and a
    claim that a process keeps alive versus one whose process died."""
    import fhir_gateway.outbox as outbox_module

    monkeypatch.setattr(outbox_module, "LEASE", 0.4)
    monkeypatch.setattr(outbox_module, "RENEW_EVERY", 0.05)
    engine = make_state_engine(f"sqlite:///{tmp_path / 'gateway.sqlite3'}")
    one, two = Outbox(engine), Outbox(engine)  # two gateway processes sharing the database

    def queued(lane: str = "pat-9"):
        return one.enqueue(method="POST", resource_type="Observation", resource_id=None,
                           body=observation("x", lane), if_match=None, write_id=None,
                           lane=lane, client_id="app", error="EHR down", retry_after=0)

    try:
        # queued -> dropped; nothing more after that
        a = queued()
        assert one.drop(a.id) and one.get(a.id).status == "dropped"
        assert one.get(a.id).as_task("http://x/fhir")["status"] == "cancelled"
        assert not one.retry(a.id) and not one.drop(a.id)

        # sending: neither retry nor drop touch it; failed: retry puts it back at the front
        b = queued()
        assert [e.id for e in one.due()] == [b.id]
        assert one.claim(b) and b.status == "sending"
        assert not one.claim(one.get(b.id)) or False  # already taken: the CAS refuses
        assert not one.retry(b.id) and not one.drop(b.id)
        one.failed(b, "The EHR refused it (400)", {"resourceType": "OperationOutcome",
                                                    "issue": []})
        assert one.get(b.id).status == "failed" and one.due() == []
        assert one.retry(b.id)
        back = one.get(b.id)
        assert back.status == "queued" and back.attempts == 0 and back.next_at == 0.0
        assert [e.id for e in one.due()] == [b.id]
        assert one.claim(back)
        one.stored(back, "Observation/1/_history/1", {"resourceType": "Observation"})
        assert one.get(b.id).status == "stored"
        assert not one.retry(b.id) and not one.drop(b.id)

        # a live process keeps its claim past the lease: nobody else may take the entry
        c = queued("pat-8")
        assert one.claim(c)
        time.sleep(1.0)
        assert c.id not in [e.id for e in two.due()]
        # the process dies (stops renewing): after the lease another process takes over,
        # and the dead one's late answer can no longer settle the entry
        one._held.clear()
        time.sleep(0.6)
        taken = next(e for e in two.due() if e.id == c.id)
        assert two.claim(taken)
        one.stored(c, "Observation/stale", None)
        assert one.get(c.id).status == "sending"
        two.stored(taken, "Observation/2/_history/1", None)
        assert one.get(c.id).status == "stored"
        assert one.get(c.id).result_ref == "Observation/2/_history/1"
    finally:
        engine.dispose()


def test_a_replayed_put_whose_earlier_replay_landed_ends_stored(ehr) -> None:
    """A queued update with If-Match whose earlier replay landed but was never answered: the
    next replay meets the EHR's new version (412). The EHR holds what the entry sent, so the
    entry ends stored, not failed, and nothing is written again."""
    live, proxy, store, outbox = ehr
    current = store.read("Patient", "pat-0002")
    version = current["meta"]["versionId"]
    sent = dict({k: v for k, v in current.items() if k != "meta"},
                name=[{"family": "Landed-Unanswered"}])
    store.update(dict(sent))  # the earlier replay, answer lost
    versions = len(store.history("Patient", "pat-0002", 50).entries)
    entry = outbox.enqueue(
        method="PUT", resource_type="Patient", resource_id="pat-0002", body=sent,
        if_match=version, write_id=None, lane="pat-0002", client_id="",
        error="test: its first replay's answer was lost", retry_after=0)
    task = follow(live, live.url(f"_outbox/{entry.id}"), until=("completed", "failed"))
    assert task["status"] == "completed", task
    assert outbox.get(entry.id).status == "stored"
    assert len(store.history("Patient", "pat-0002", 50).entries) == versions


def _with_queued_update(live, outbox, text: str, patient: str):
    """A new Observation in the EHR, and the patient's update of it (status amended) waiting in
    the outbox, due in an hour: (id, the update's body, the outbox entry)."""
    created = live.post("Observation", observation(text, patient))
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    body = dict({k: v for k, v in created.json().items() if k != "meta"}, status="amended")
    head = outbox.enqueue(
        method="PUT", resource_type="Observation", resource_id=rid, body=body, if_match=None,
        write_id=None, lane=patient, client_id="", error="test: the patient's update waits",
        retry_after=3600)
    return rid, body, head


def test_a_delete_waits_behind_the_queued_writes_to_its_resource(ehr) -> None:
    """A patient's update of an Observation waits in the outbox; a delete of it by someone
    without that patient's context (a clinician, a system) must not overtake it: it is queued
    in the same lane and runs after it."""
    live, proxy, store, outbox = ehr
    rid, body, head = _with_queued_update(live, outbox, "delete-after-update", "pat-0003")
    deleted = live.delete(f"Observation/{rid}")
    assert deleted.status_code == 202, deleted.text
    queued = outbox.get(deleted.headers["Content-Location"].rsplit("/", 1)[1])
    assert queued.lane == "pat-0003" and queued.method == "DELETE"
    assert store.read("Observation", rid)["status"] == "final"  # nothing overtook the update
    outbox.retry(head.id)  # the update is due now; the delete follows it
    follow(live, live.url(f"_outbox/{head.id}"))
    follow(live, deleted.headers["Content-Location"])
    with pytest.raises(Gone):
        store.read("Observation", rid)


def test_a_transaction_waits_behind_the_queued_writes_it_would_overtake(ehr) -> None:
    """A transaction is never queued. One that would go before a write still waiting for one
    of its resources, or for its patient, is refused (503 with Retry-After), sends nothing,
    and runs once that write is stored."""
    live, proxy, store, outbox = ehr
    rid, body, head = _with_queued_update(live, outbox, "txn-behind", "pat-0003")
    same_resource = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "PUT", "url": f"Observation/{rid}"},
         "resource": dict(body, status="cancelled")}]}
    same_patient = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6f2c1a44-8a7e-4d8e-9a51-0d1f2a3b4c5d",
         "request": {"method": "POST", "url": "Observation"},
         "resource": observation("txn-behind-new", "pat-0003")}]}
    observations = store.count("Observation")
    try:
        _held_then_run(live, store, outbox, head, rid, same_resource, same_patient,
                       observations)
    finally:
        outbox.drop(head.id)  # (a no-op once stored)


def _held_then_run(live, store, outbox, head, rid, same_resource, same_patient,
                   observations) -> None:
    for bundle in (same_resource, same_patient):
        refused = live.post("", bundle)
        assert refused.status_code == 503, refused.text
        assert 3500 <= int(refused.headers["Retry-After"]) <= 3600  # when the update is due
        said = refused.json()["issue"][0]["diagnostics"]
        assert "nothing was stored" in said and "still waiting for the EHR" in said, said
    assert store.read("Observation", rid)["status"] == "final"  # nothing overtook the update
    assert store.count("Observation") == observations
    # another patient's transaction is not held back
    other = dict(same_patient, entry=[dict(same_patient["entry"][0],
                                           resource=observation("txn-other", "pat-0001"))])
    assert live.post("", other).status_code == 200
    # nor is one that only reads
    reads = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": f"Observation/{rid}"}}]}
    read = live.post("", reads)
    assert read.status_code == 200, read.text

    outbox.retry(head.id)  # the update is due now; then both transactions run, in order
    follow(live, live.url(f"_outbox/{head.id}"))
    assert store.read("Observation", rid)["status"] == "amended"
    for bundle in (same_resource, same_patient):
        done = live.post("", bundle)
        assert done.status_code == 200, done.text
    assert store.read("Observation", rid)["status"] == "cancelled"
    assert len(stored_by_text(store, "txn-behind-new")["txn-behind-new"]) == 1


def test_a_transaction_without_a_patient_waits_behind_the_no_patient_lane(ehr) -> None:
    """Writes that name no single patient (a Practitioner, a clinician's change) share the
    lane "": a transaction of such writes must not overtake one queued there, as a plain
    POST of it would not. Once that lane is clear it runs."""
    live, proxy, store, outbox = ehr
    head = outbox.enqueue(
        method="PUT", resource_type="Practitioner", resource_id="prac-held",
        body={"resourceType": "Practitioner", "id": "prac-held"}, if_match=None,
        write_id=None, lane="", client_id="", error="test: holds the lane", retry_after=30)
    role = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b6f8f4e-2c41-4c38-9d0e-1c2d3e4f5a6b",
         "request": {"method": "POST", "url": "PractitionerRole"},
         "resource": {"resourceType": "PractitionerRole",
                      "practitioner": {"reference": "Practitioner/prac-held"}}}]}
    roles = store.count("PractitionerRole")
    try:
        refused = live.post("", role)
        assert refused.status_code == 503, refused.text
        assert 5 <= int(refused.headers["Retry-After"]) <= 30
        assert store.count("PractitionerRole") == roles
    finally:
        outbox.drop(head.id)
    done = live.post("", role)
    assert done.status_code == 200, done.text
    assert store.count("PractitionerRole") == roles + 1


def test_a_lane_check_of_thousands_of_resources_stays_one_flat_query(tmp_path: Path) -> None:
    """A transaction may hold thousands of entries (`max_bundle_entries` 5000): the check of
    their resources must not build an expression SQLite refuses (depth 1000)."""
    from fhir_gateway.outbox import Outbox

    engine = make_state_engine(f"sqlite:///{tmp_path / 'gateway.sqlite3'}")
    box = Outbox(engine)
    try:
        many = {("Observation", f"o{i}") for i in range(3000)} | {("Basic", "b1")}
        assert box.waiting_until(many, {f"pat-{i}" for i in range(1200)} | {""}) is None
        entry = box.enqueue(method="PUT", resource_type="Observation", resource_id="o2999",
                            body=observation("x"), if_match=None, write_id=None, lane="p",
                            client_id="", error="down", retry_after=60)
        due = box.waiting_until(many, set())
        assert due is not None and abs(due - entry.next_at) < 1e-6
        assert box.waiting_until({("Observation", "other")}, {"q"}) is None
        assert box.waiting_until(set(), {"p"}) == due

        # only a lane's head is sent: the answer is when the head is next tried, not the
        # entries queued behind it (due at once, but they wait); the latest of the lanes
        def put(rid: str, lane: str, wait: float):
            return box.enqueue(method="PUT", resource_type="Basic", resource_id=rid,
                               body=None, if_match=None, write_id=None, lane=lane,
                               client_id="", error="down", retry_after=wait)

        slow = put("h1", "slow", 300)
        put("h2", "slow", 0)
        put("h3", "quick", 10)
        assert abs(box.waiting_until({("Basic", "h2")}, set()) - slow.next_at) < 1e-6
        assert abs(box.waiting_until(set(), {"quick", "slow"}) - slow.next_at) < 1e-6
        head = box.due(now=time.time() + 20)  # the quick lane's head, being sent now
        quick = next(e for e in head if e.lane == "quick")
        assert box.claim(quick)
        assert abs(box.waiting_until(set(), {"quick"}) - time.time()) < 5
    finally:
        engine.dispose()


def test_a_portal_action_waits_behind_its_patients_queued_writes(ehr) -> None:
    """Portal actions write straight to the EHR (never queued): a health reading for a
    patient whose earlier changes still wait is refused and stores nothing until those land."""
    live, proxy, store, outbox = ehr
    original = {k: v for k, v in store.read("Patient", "pat-0002").items() if k != "meta"}
    head = outbox.enqueue(
        method="PUT", resource_type="Patient", resource_id="pat-0002",
        body=dict(original, gender="unknown"), if_match=None, write_id=None, lane="pat-0002",
        client_id="", error="test: holds the lane", retry_after=3600)
    reading = {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueString": "pat-0002"}, {"name": "kind", "valueString": "weight"},
        {"name": "value", "valueDecimal": 71.5}, {"name": "unit", "valueString": "kg"},
        {"name": "effective", "valueDateTime": "2026-06-10T08:00:00Z"}]}
    # a write that names no patient waits too (the shared lane ""): it holds nobody's action
    unrelated = outbox.enqueue(
        method="PUT", resource_type="Practitioner", resource_id="prac-unrelated",
        body={"resourceType": "Practitioner", "id": "prac-unrelated"}, if_match=None,
        write_id=None, lane="", client_id="", error="test: waits", retry_after=3600)
    observations = store.count("Observation")
    try:
        refused = live.post("Observation/$record-reading", reading)
        assert refused.status_code == 503, refused.text
        assert "still waiting for the EHR" in refused.json()["issue"][0]["diagnostics"]
        assert store.count("Observation") == observations
        outbox.retry(head.id)
        follow(live, live.url(f"_outbox/{head.id}"))
        assert store.read("Patient", "pat-0002")["gender"] == "unknown"
        # the unrelated write still waits; the patient's reading goes through
        assert outbox.get(unrelated.id).status == "queued"
        recorded = live.post("Observation/$record-reading", reading)
        assert recorded.status_code in (200, 201), recorded.text
        stored = recorded.json()["entry"]  # the weight, and a BMI when a height is known
        assert stored and store.count("Observation") == observations + len(stored)
    finally:
        outbox.drop(head.id)
        outbox.drop(unrelated.id)


def _a_thread(store: EmbeddedAdapter, patient: str) -> tuple[str, str]:
    """One of the patient's message threads in the EHR, and a care team member to write to."""
    headers = [r for r in store.iter_all() if r["resourceType"] == "Communication"
               and r.get("subject", {}).get("reference") == f"Patient/{patient}"
               and r.get("topic") and not r.get("partOf")]
    members = [p["member"]["reference"] for r in store.iter_all()
               if r["resourceType"] == "CareTeam"
               and r.get("subject", {}).get("reference") == f"Patient/{patient}"
               for p in r.get("participant", [])
               if p.get("member", {}).get("reference", "").startswith("Practitioner/")]
    assert headers and members, f"the seed gave {patient} no thread or care team"
    return headers[0]["id"], members[0]


def _send(patient: str, recipient: str, text: str, thread: str | None = None) -> dict:
    """$send Parameters (the gateway has SMART off, so the patient is named)."""
    where = ({"name": "thread", "valueReference": {"reference": f"Communication/{thread}"}}
             if thread else {"name": "topic", "valueString": f"topic of {text}"})
    return {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueString": patient}, where,
        {"name": "recipient", "valueReference": {"reference": recipient}},
        {"name": "text", "valueString": text}]}


def _messages(store: EmbeddedAdapter, text: str) -> list[dict]:
    return [r for r in store.iter_all() if r["resourceType"] == "Communication"
            and any(p.get("contentString") == text for p in r.get("payload", []))]


def _refill_tasks(store: EmbeddedAdapter, order: str) -> list[dict]:
    return [r for r in store.iter_all() if r["resourceType"] == "Task"
            and r.get("focus", {}).get("reference") == f"MedicationRequest/{order}"]


def _queued(resp: httpx.Response) -> str:
    """The status URL of a write the gateway answered 202 for; the answer says so."""
    assert resp.status_code == 202, resp.text
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "information"
    assert resp.headers["Location"] == resp.headers["Content-Location"]
    assert "/_outbox/" in resp.headers["Content-Location"]
    return resp.headers["Content-Location"]


def test_a_reply_and_a_refill_request_wait_in_the_outbox_when_the_ehr_takes_no_writes(
        ehr) -> None:
    """The EHR answers reads but takes no writes: a patient's reply to a thread and a refill
    request are checked as always (thread, care team, order), kept in the outbox (202), and
    stored once each when the EHR takes writes again; asking for the refill twice meanwhile
    still makes one refill Task."""
    live, proxy, store, outbox = ehr
    thread, recipient = _a_thread(store, "pat-0003")
    text = f"queued reply {uuid.uuid4().hex[:8]}"
    communications, tasks = store.count("Communication"), store.count("Task")
    refills = len(_refill_tasks(store, "mr-0002-02"))
    refused = proxy.refused
    note = {"resourceType": "Parameters",
            "parameter": [{"name": "note", "valueString": "running low"}]}
    proxy.mode = "no-writes"
    try:
        reply = live.post("Communication/$send", _send("pat-0003", recipient, text, thread))
        asked = [live.post("MedicationRequest/mr-0002-02/$refill-request", note)
                 for _ in range(2)]
        # what is not the patient's to send is still refused at once, and not queued
        stranger = live.post("Communication/$send",
                             _send("pat-0003", "Practitioner/not-on-the-team", text, thread))
        # counted before writes pass again (the worker tries every 0.2 s)
        assert (store.count("Communication"), store.count("Task")) == (communications, tasks)
    finally:
        proxy.mode = "pass"
    assert proxy.refused > refused, f"no write reached the EHR's door: {reply.text}"
    assert stranger.status_code == 422, stranger.text
    locations = [_queued(r) for r in [reply, *asked]]
    assert [outbox.get(u.rsplit("/", 1)[1]).lane for u in locations] == \
        ["pat-0003", "pat-0002", "pat-0002"]

    stored = task_ref(follow(live, locations[0])).split("/")
    message = store.read("Communication", stored[1])
    assert _messages(store, text) == [message]
    assert message["partOf"] == [{"reference": f"Communication/{thread}"}]
    assert message["recipient"] == [{"reference": recipient}]
    entry = outbox.get(locations[0].rsplit("/", 1)[1])
    assert {"system": WRITE_ID_SYSTEM, "value": entry.write_id} in message["identifier"]

    made = {task_ref(follow(live, u)).split("/")[1] for u in locations[1:]}
    after = _refill_tasks(store, "mr-0002-02")
    assert len(after) == refills + 1, "the second request made a second refill Task"
    (task,) = [t for t in after if t["id"] in made]
    assert made == {task["id"]} and task["status"] == "requested"
    assert store.count("Communication") == communications + 1


def _hold_lane(store: EmbeddedAdapter, outbox: Outbox, patient: str):
    """The patient's lane held by a queued change to the Patient (gender "other"), not due
    for an hour."""
    original = {k: v for k, v in store.read("Patient", patient).items() if k != "meta"}
    return outbox.enqueue(
        method="PUT", resource_type="Patient", resource_id=patient,
        body=dict(original, gender="other"), if_match=None, write_id=None, lane=patient,
        client_id="", error="test: holds the lane", retry_after=3600)


def test_a_reply_waits_behind_its_patients_queued_writes_and_a_new_thread_is_refused(
        ehr) -> None:
    """A reply for a patient whose earlier change still waits goes behind it in the outbox
    (202) and is stored once that change is; a new thread (header and message in one
    transaction, never queued) is refused with 503 and stores nothing."""
    live, proxy, store, outbox = ehr
    thread, recipient = _a_thread(store, "pat-0003")
    head = _hold_lane(store, outbox, "pat-0003")
    text = f"reply behind {uuid.uuid4().hex[:8]}"
    communications = store.count("Communication")
    try:
        reply = live.post("Communication/$send", _send("pat-0003", recipient, text, thread))
        location = _queued(reply)
        fresh = live.post("Communication/$send", _send("pat-0003", recipient, f"new {text}"))
        assert fresh.status_code == 503, fresh.text
        assert "still waiting for the EHR" in fresh.json()["issue"][0]["diagnostics"]
        assert store.count("Communication") == communications
        assert outbox.get(location.rsplit("/", 1)[1]).status == "queued"
        outbox.retry(head.id)
        follow(live, live.url(f"_outbox/{head.id}"))
        follow(live, location)
    finally:
        outbox.drop(head.id)
    assert store.read("Patient", "pat-0003")["gender"] == "other"
    assert len(_messages(store, text)) == 1
    assert store.count("Communication") == communications + 1


def test_an_action_is_refused_when_what_its_checks_read_has_a_change_waiting(ehr) -> None:
    """A refill request whose order has a queued change (the clinic stopping it), and a
    reply whose care team has one, are refused (503) rather than queued behind them: their
    checks read what the EHR holds now, which the queued change will undo. Nothing is
    queued or stored."""
    live, proxy, store, outbox = ehr
    order = {k: v for k, v in store.read("MedicationRequest", "mr-0003-02").items()
             if k != "meta"}
    team = next(r for r in store.iter_all() if r["resourceType"] == "CareTeam"
                and r.get("subject", {}).get("reference") == "Patient/pat-0003")
    thread, recipient = _a_thread(store, "pat-0003")
    heads = [outbox.enqueue(
        method="PUT", resource_type=rtype, resource_id=body["id"], body=body, if_match=None,
        write_id=None, lane=lane, client_id="", error="test: the clinic's change waits",
        retry_after=3600) for rtype, body, lane in (
            ("MedicationRequest", dict(order, status="stopped"), "pat-0003"),
            ("CareTeam", dict({k: v for k, v in team.items() if k != "meta"},
                              status="inactive"), "pat-0003"))]
    entries, tasks, communications = (sum(outbox.counts().values()), store.count("Task"),
                                      store.count("Communication"))
    try:
        refill = live.post("MedicationRequest/mr-0003-02/$refill-request",
                           {"resourceType": "Parameters", "parameter": []})
        reply = live.post("Communication/$send",
                          _send("pat-0003", recipient, "behind a care team change", thread))
        for resp in (refill, reply):
            assert resp.status_code == 503, resp.text
            assert "still waiting for the EHR" in resp.json()["issue"][0]["diagnostics"]
            assert int(resp.headers["Retry-After"]) >= 5
        assert sum(outbox.counts().values()) == entries
        assert (store.count("Task"), store.count("Communication")) == (tasks, communications)
    finally:
        for head in heads:
            outbox.drop(head.id)


def test_messages_wait_for_a_care_team_change_in_another_lane(ehr) -> None:
    """A care team change queued in the shared lane (it names no one patient): a reply and
    a new thread of the team's patient, whose own lane is free, are refused (503) while it
    waits, since their care-team check read the team as it was."""
    live, proxy, store, outbox = ehr
    team = next(r for r in store.iter_all() if r["resourceType"] == "CareTeam"
                and r.get("subject", {}).get("reference") == "Patient/pat-0003")
    thread, recipient = _a_thread(store, "pat-0003")
    head = outbox.enqueue(
        method="PUT", resource_type="CareTeam", resource_id=team["id"],
        body=dict({k: v for k, v in team.items() if k != "meta"}, status="inactive"),
        if_match=None, write_id=None, lane="", client_id="", error="test: waits",
        retry_after=3600)
    communications = store.count("Communication")
    try:
        for params in (_send("pat-0003", recipient, "reply behind the team", thread),
                       _send("pat-0003", recipient, "new thread behind the team")):
            resp = live.post("Communication/$send", params)
            assert resp.status_code == 503, resp.text
            assert "still waiting for the EHR" in resp.json()["issue"][0]["diagnostics"]
        assert store.count("Communication") == communications
    finally:
        outbox.drop(head.id)


def test_a_create_naming_two_patients_waits_for_both_lanes(ehr) -> None:
    """A create that names two patients goes in the shared lane; while one of those
    patients' lanes still holds a write it is refused (503), not queued ahead of it."""
    live, proxy, store, outbox = ehr
    head = _hold_lane(store, outbox, "pat-0001")
    text = f"two patients {uuid.uuid4().hex[:8]}"
    entries = sum(outbox.counts().values())
    try:
        resp = live.post("Observation", observation(
            text, "pat-0002", performer=[{"reference": "Patient/pat-0001"}]))
        assert resp.status_code == 503, resp.text
        assert "still waiting for the EHR" in resp.json()["issue"][0]["diagnostics"]
        assert sum(outbox.counts().values()) == entries
        assert text not in stored_by_text(store, text)
    finally:
        outbox.drop(head.id)
    stored = live.post("Observation", observation(
        text, "pat-0002", performer=[{"reference": "Patient/pat-0001"}]))
    assert stored.status_code == 201, stored.text
    assert len(stored_by_text(store, text)[text]) == 1


def test_a_callers_listing_is_chosen_in_the_query(ehr) -> None:
    """With more than 200 entries in the table, a caller's own newest entries are still
    listed (they were picked from the table's first 200)."""
    live, proxy, store, outbox = ehr
    crowd = [outbox.enqueue(method="DELETE", resource_type="Basic", resource_id=f"b{i}",
                            body=None, if_match=None, write_id=None, lane="crowd",
                            client_id="other-app", error="test", retry_after=3600)
             for i in range(205)]
    mine = outbox.enqueue(method="DELETE", resource_type="Basic", resource_id="mine",
                          body=None, if_match=None, write_id=None, lane="pat-0009",
                          client_id="my-app", error="test", retry_after=3600)
    try:
        assert [e.id for e in outbox.list(lane="pat-0009")] == [mine.id]
        assert [e.id for e in outbox.list(client_id="my-app")] == [mine.id]
        newest = outbox.list()
        assert len(newest) == 200 and newest[-1].id == mine.id
        assert [e.seq for e in newest] == sorted(e.seq for e in newest)
    finally:
        for entry in [*crowd, mine]:
            outbox.drop(entry.id)


def test_queued_creates_keep_the_callers_if_none_exist(ehr) -> None:
    """The same device reading posted twice with `If-None-Exist` while the EHR is down: both
    are queued (202), and the replays store it once; the second ends pointing at the first."""
    live, proxy, store, outbox = ehr
    text = f"device-reading-{uuid.uuid4().hex[:8]}"
    reading = observation(text, "pat-0003",
                          identifier=[{"system": "urn:device", "value": text}])
    proxy.mode = "down"
    try:
        answers = [live.post("Observation", dict(reading),
                             headers={"If-None-Exist": f"identifier=urn:device|{text}"})
                   for _ in range(2)]
    finally:
        proxy.mode = "pass"
    assert [r.status_code for r in answers] == [202, 202], [r.text for r in answers]
    tasks = [follow(live, r.headers["Content-Location"]) for r in answers]
    stored = stored_by_text(store, text)[text]
    assert len(stored) == 1
    assert {task_ref(t).split("/")[1] for t in tasks} == {stored[0]["id"]}


def test_an_outbox_table_of_an_earlier_version_gets_the_new_column(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    from fhir_gateway.outbox import Outbox

    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    Outbox(engine)
    with engine.begin() as conn:  # as the table was before `if_none_exist`
        conn.exec_driver_sql("ALTER TABLE outbox DROP COLUMN if_none_exist")
    assert "if_none_exist" not in {c["name"] for c in inspect(engine).get_columns("outbox")}
    box = Outbox(engine)
    entry = box.enqueue(method="POST", resource_type="Observation", resource_id=None,
                        body={"resourceType": "Observation"}, if_match=None, write_id=None,
                        lane="", client_id="", error="test", if_none_exist="identifier=x|1")
    assert box.get(entry.id).if_none_exist == "identifier=x|1"
    engine.dispose()


def test_an_outbox_table_without_requesters_gets_the_column(tmp_path: Path) -> None:
    """Entries of an earlier version name no requester: listed by requester only when asked
    for (`unattributed`); new ones by their requester."""
    from sqlalchemy import create_engine, inspect

    from fhir_gateway.outbox import Outbox

    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    old = Outbox(engine).enqueue(
        method="POST", resource_type="Observation", resource_id=None,
        body={"resourceType": "Observation"}, if_match=None, write_id=None, lane="p1",
        client_id="app", error="test")
    with engine.begin() as conn:  # as the table was before `requester`
        conn.exec_driver_sql("ALTER TABLE outbox DROP COLUMN requester")
    assert "requester" not in {c["name"] for c in inspect(engine).get_columns("outbox")}
    box = Outbox(engine)
    new = [box.enqueue(method="POST", resource_type="Observation", resource_id=None,
                       body={"resourceType": "Observation"}, if_match=None, write_id=None,
                       lane="p1", client_id="app", error="test", requester=who)
           for who in ("Patient/p1", "RelatedPerson/r1")]
    assert box.get(old.id).requester is None
    assert [e.id for e in box.list(lane="p1", client_id="app", requester="Patient/p1")] == \
        [new[0].id]
    assert [e.id for e in box.list(lane="p1", client_id="app", requester="Patient/p1",
                                   unattributed=True)] == [old.id, new[0].id]
    engine.dispose()


def test_an_outbox_table_of_an_earlier_version_gets_the_resource_index(tmp_path: Path) -> None:
    """`waiting_lane` runs on every direct write: a table made before its index gets it."""
    from sqlalchemy import create_engine, inspect

    from fhir_gateway.outbox import Outbox

    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    Outbox(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_outbox_resource")
    assert "ix_outbox_resource" not in {i["name"] for i in inspect(engine).get_indexes("outbox")}
    Outbox(engine)
    indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("outbox")}
    assert indexes["ix_outbox_resource"] == ["resource_type", "resource_id"]
    Outbox(engine)  # a second process starting finds it there
    engine.dispose()


def test_two_workers_adding_the_resource_index_at_once_both_start(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """The other worker creates the index between this one's check and its CREATE INDEX: the
    error is taken for what it is, and this worker starts too. Any other failure is raised."""
    from sqlalchemy import Index, create_engine, inspect
    from sqlalchemy.exc import OperationalError

    from fhir_gateway.outbox import Outbox

    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    Outbox(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_outbox_resource")
    real_create = Index.create

    def raced(self, bind, checkfirst=False):
        real_create(self, bind, checkfirst=checkfirst)  # "the other worker" made it
        raise OperationalError("CREATE INDEX", {}, Exception("index already exists"))

    monkeypatch.setattr(Index, "create", raced)
    Outbox(engine)
    assert "ix_outbox_resource" in {i["name"] for i in inspect(engine).get_indexes("outbox")}

    def broken(self, bind, checkfirst=False):
        raise OperationalError("CREATE INDEX", {}, Exception("disk I/O error"))

    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_outbox_resource")
    monkeypatch.setattr(Index, "create", broken)
    with pytest.raises(OperationalError):
        Outbox(engine)
    engine.dispose()


def test_settled_entries_are_purged_after_keep_days(tmp_path: Path, monkeypatch) -> None:
    """Stored and dropped entries older than `keep_days` are deleted (their status URL is then
    unknown); newer ones, failed ones and waiting ones stay. The worker purges on its own."""
    import fhir_gateway.outbox as outbox_module
    from fhir_gateway.outbox import Outbox, outbox

    engine = make_state_engine(f"sqlite:///{tmp_path / 'gateway.sqlite3'}")
    box = Outbox(engine)

    def entry(status: str, age_days: float) -> str:
        e = box.enqueue(method="POST", resource_type="Observation", resource_id=None,
                        body=observation(status), if_match=None, write_id=None, lane="pat-1",
                        client_id="app", error="EHR down", retry_after=3600)
        with engine.begin() as conn:
            conn.execute(outbox.update().where(outbox.c.id == e.id).values(
                status=status, updated_at=time.time() - age_days * 86400))
        return e.id

    try:
        old = {s: entry(s, 40) for s in ("stored", "dropped", "failed", "queued")}
        young = {s: entry(s, 5) for s in ("stored", "dropped")}
        assert box.purge(30) == 2
        assert box.get(old["stored"]) is None and box.get(old["dropped"]) is None
        assert box.get(old["failed"]).status == "failed"
        assert box.get(old["queued"]).status == "queued"
        assert all(box.get(i) is not None for i in young.values())
        assert box.counts() == {"queued": 1, "sending": 0, "stored": 1, "failed": 1,
                                "dropped": 1}
        assert box.purge(30) == 0

        # the worker purges by itself (here at once, and with a short keep)
        monkeypatch.setattr(outbox_module.Worker, "PURGE_EVERY", 0.0)
        replayer = outbox_module.Replayer(box, service=None)
        monkeypatch.setattr(replayer, "run_once", lambda: 0)
        worker = outbox_module.Worker(replayer, 0.05, keep_days=1)
        worker.start()
        try:
            wait_until("the worker to purge", lambda: all(box.get(i) is None
                                                           for i in young.values()), 10)
        finally:
            worker.stop()
            worker.join(5)
        assert box.get(old["failed"]) is not None and box.get(old["queued"]) is not None
    finally:
        engine.dispose()


def test_two_workers_adding_the_new_column_at_once_both_start(tmp_path: Path) -> None:
    """gunicorn workers each build their app: the second to add the column finds it added."""
    from sqlalchemy import create_engine, inspect

    import fhir_gateway.outbox as outbox_module
    from fhir_gateway.outbox import Outbox

    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    Outbox(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE outbox DROP COLUMN if_none_exist")
    stale = [c for c in inspect(engine).get_columns("outbox")]
    real_inspect = outbox_module.inspect

    class Late:  # what a worker saw before the other one added the column
        def __init__(self, bind):
            self.calls = 0
            self.real = real_inspect(bind)

        def get_columns(self, table):
            self.calls += 1
            return stale if self.calls == 1 else self.real.get_columns(table)

    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN if_none_exist TEXT")  # the other
    late = Late(engine)
    outbox_module.inspect = lambda bind: late
    try:
        Outbox(engine)  # its ALTER fails (duplicate column); it looks again and starts
    finally:
        outbox_module.inspect = real_inspect
    assert late.calls == 2
    engine.dispose()


def test_who_sees_which_outbox_entries() -> None:
    """The status URL's and listing's rule, caller by caller: a patient's user sees what it
    queued through its app for its patient (and pre-requester entries only when it is that
    patient); a clinician's or system token its client's; a person without a patient
    context only its own."""
    from fhir_gateway.access.policy import Principal
    from fhir_gateway.http.outbox_api import visibility
    from smart_launch.scopes import parse_scopes

    def entry(lane: str, client: str, requester: str | None) -> SimpleNamespace:
        return SimpleNamespace(lane=lane, client_id=client, requester=requester)

    def who(scope: str, client: str = "app", **kw) -> Principal:
        return Principal(client_id=client, scopes=parse_scopes(scope), **kw)

    ann = visibility(who("patient/*.rs", fhir_user="Patient/p1", patient="p1", subject="ann"))
    carol = visibility(who("patient/*.rs", fhir_user="RelatedPerson/c", patient="p1"))
    doctor = visibility(who("user/*.rs", "clinic", fhir_user="Practitioner/d"))
    backend = visibility(who("system/*.rs", subject="app"))
    stranger = visibility(who("openid fhirUser", fhir_user="RelatedPerson/x"))
    assert visibility(None) is None
    entries = {
        "ann's": entry("p1", "app", "Patient/p1"),
        "carol's": entry("p1", "app", "RelatedPerson/c"),
        "old": entry("p1", "app", None),
        "doctor's": entry("p1", "clinic", "Practitioner/d"),
        "ann's in p2": entry("p2", "app", "Patient/p1"),
        "stranger's": entry("", "app", "RelatedPerson/x"),
    }
    seen = {name: sorted(k for k, e in entries.items() if v.sees(e)) for name, v in (
        ("ann", ann), ("carol", carol), ("doctor", doctor), ("backend", backend),
        ("stranger", stranger))}
    assert seen == {
        "ann": ["ann's", "old"], "carol": ["carol's"], "doctor": ["doctor's"],
        "backend": ["ann's", "ann's in p2", "carol's", "old", "stranger's"],
        "stranger": ["stranger's"]}


def test_a_resource_without_an_id_holds_nothing_back(tmp_path: Path) -> None:
    """What a caller's checks read may include something with no id (nothing can be queued
    for it): it is skipped, and the lane check still answers for the rest."""
    from sqlalchemy import create_engine

    box = Outbox(create_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    head = box.enqueue(method="PUT", resource_type="CareTeam", resource_id="ct-1",
                       body={"resourceType": "CareTeam", "id": "ct-1"}, if_match=None,
                       write_id=None, lane="", client_id="", error="test", retry_after=60)
    assert box.waiting_until({("Medication", None), ("CareTeam", "ct-9")}, set()) is None
    due = box.waiting_until({("Medication", None), ("CareTeam", "ct-1")}, set())
    assert due is not None and abs(due - box.get(head.id).next_at) < 1
