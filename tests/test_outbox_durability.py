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

import contextlib
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from adapters.embedded import EmbeddedAdapter
from fhir_gateway.outbox import WRITE_ID_SYSTEM, Outbox
from smart_launch.db import make_state_engine
from tests.conftest import FHIR_JSON, free_port
from tests.rest_support import UpstreamProcess, seeded_upstream, start_rest_gateway

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


def task_ref(task: dict) -> str | None:
    for out in task.get("output") or []:
        if (out.get("type") or {}).get("text") == "stored":
            return out["valueReference"]["reference"]
    return None


class LossyProxy:
    """A TCP relay in front of the EHR that can lose what the EHR answers.

    mode "pass": relays both ways. "drop": forwards the request, then cuts the connection as
    soon as the EHR starts answering (by then it has committed the write), as a crash between
    commit and answer would. "hang": forwards the request and holds the answer back until the
    client gives up (its read timeout). "down": refuses to talk at all (the EHR is down).
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.mode = "pass"
        self.lost = 0  # answers the EHR gave that the client never got
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "down":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                  b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
                client.close()
                continue
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)

        def shut() -> None:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

        def requests() -> None:
            try:
                while data := client.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass
            shut()

        threading.Thread(target=requests, daemon=True).start()
        try:
            while data := upstream.recv(65536):
                mode = self.mode
                if mode == "pass":
                    client.sendall(data)
                    continue
                self.lost += 1
                if mode == "drop":
                    break
                # "hang": swallow the answer; the client times out and closes
                while upstream.recv(65536):
                    pass
                break
        except OSError:
            pass
        shut()


def seed(upstream: UpstreamProcess, patients: int = 3) -> None:
    from fhir_gateway.synthetic import generate
    from tests.conftest import SEED_TODAY

    upstream.data.mkdir(parents=True, exist_ok=True)
    store = EmbeddedAdapter(upstream.database_url)
    try:
        store.load(generate(patients, 7, SEED_TODAY))
    finally:
        store.close()


# -- 1. the burst: EHR killed and restarted, gateway killed and restarted mid-replay --------

def test_burst_survives_ehr_and_gateway_crashes(tmp_path: Path) -> None:
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
        front.start()
        wait_until("the outbox to drain", lambda: pending(outbox) == 0, SETTLE_TIMEOUT,
                   interval=0.2)
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
