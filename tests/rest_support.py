"""Upstream EHRs for the REST adapter's tests: a second `fhir-gateway serve` process in plain
mode (its own embedded store, SMART off), a gateway whose adapter is `fhir_rest` in front
of any FHIR base URL, and a TCP relay between them that can lose the EHR's answers or refuse
its writes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from adapters.embedded import EmbeddedAdapter
from tests.conftest import FHIR_JSON, LiveGateway, free_port, serve_app


@dataclass
class UpstreamProcess:
    """`fhir-gateway serve` in a child process; `store` reads its database directly."""

    data: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.data / 'ehr.sqlite3'}"

    def start(self, timeout: float = 30.0) -> UpstreamProcess:
        self.data.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "FHIR_GATEWAY_DATA": str(self.data),
               "FHIR_GATEWAY_PORT": str(self.port), "FHIR_GATEWAY_AUTH_ENABLED": "false",
               "FHIR_GATEWAY_THREADS": "8", **self.env}
        env.pop("FHIR_GATEWAY_CONFIG", None)
        self.log = self.data / "upstream.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fhir_gateway", "serve"], env=env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"upstream exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/metadata", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"upstream did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no goodbye, as a crash would be."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_rest_gateway(data_dir: Path, upstream_base: str, env: dict[str, str] | None = None,
                       *, auth: bool = False, store=None,
                       vendor: str = "fhir-gateway") -> tuple[LiveGateway, callable]:
    """A gateway with `adapter.kind = fhir_rest` in front of `upstream_base`, over HTTP.
    `store` is what tests read to check what the EHR really holds."""
    settings = {"FHIR_GATEWAY_ADAPTER": "fhir_rest",
                "FHIR_GATEWAY_FHIR_REST_BASE_URL": upstream_base,
                "FHIR_GATEWAY_FHIR_REST_VENDOR": vendor,
                "FHIR_GATEWAY_FHIR_REST_NAME": "test-ehr",
                "FHIR_GATEWAY_OUTBOX_INTERVAL": "0.2",
                "FHIR_GATEWAY_FHIR_REST_BACKOFF": "0.01"}
    return serve_app(data_dir, {**settings, **(env or {})}, auth=auth, store=store)


def seed(upstream: UpstreamProcess, patients: int = 3) -> None:
    """The synthetic patients in `upstream`'s store, before it starts."""
    from fhir_gateway.synthetic import generate
    from tests.conftest import SEED_TODAY

    upstream.data.mkdir(parents=True, exist_ok=True)
    store = EmbeddedAdapter(upstream.database_url)
    try:
        store.load(generate(patients, 7, SEED_TODAY))
    finally:
        store.close()


def relayed_upstream(data: Path) -> tuple[UpstreamProcess, LossyProxy]:
    """A seeded, started upstream reached through a `LossyProxy`, which its base URL names
    (so the links it writes go through the relay too)."""
    upstream = UpstreamProcess(data)
    proxy = LossyProxy(upstream.port)
    upstream.env["FHIR_GATEWAY_BASE_URL"] = proxy.base
    seed(upstream)
    upstream.start()
    return upstream, proxy


def seeded_upstream(data: Path, patients: int = 3) -> UpstreamProcess:
    upstream = UpstreamProcess(data)
    seed(upstream, patients)
    return upstream.start()


def fhir_client(timeout: float = 30) -> httpx.Client:
    return httpx.Client(timeout=timeout, headers={"Accept": FHIR_JSON})


# What the synthetic seed holds and what the portal actions create.
STORED_TYPES = (
    "Account", "AllergyIntolerance", "Appointment", "AppointmentResponse", "AuditEvent",
    "CarePlan", "CareTeam", "ChargeItem", "Communication", "Condition", "Coverage",
    "DiagnosticReport", "DocumentReference", "Encounter", "Goal", "HealthcareService",
    "Immunization", "Invoice", "List", "Location", "Medication", "MedicationRequest",
    "Observation", "Organization", "Patient", "PaymentNotice", "PaymentReconciliation",
    "Practitioner", "PractitionerRole", "Procedure", "Provenance", "RelatedPerson", "Schedule",
    "ServiceRequest", "Slot", "Task",
)


class RestStore:
    """Direct access to an EHR that is only reachable over FHIR REST (Medplum): reads, searches
    and writes without the gateway's cache, and `load` that keeps the resources' own ids."""

    def __init__(self, base: str) -> None:
        from adapters.fhir_rest import FhirRestAdapter, RestSettings

        self.rest = FhirRestAdapter(RestSettings(base_url=base, vendor="medplum",
                                                 default_cache_ttl=0, retries=0))

    def __getattr__(self, name: str):
        return getattr(self.rest, name)

    def iter_all(self):
        """Every resource of the types the seed and the portal actions write."""
        from adapters.search import SearchQuery

        for rtype in STORED_TYPES:
            query = SearchQuery(count=1000)
            while True:
                page = self.rest.search(rtype, query)
                yield from page.resources
                if not page.next_cursor:
                    break
                query = SearchQuery(count=1000, cursor=page.next_cursor)

    def count(self, resource_type: str | None = None) -> int:
        from adapters.search import SearchQuery

        types = (resource_type,) if resource_type else STORED_TYPES
        return sum(self.rest.search(t, SearchQuery(summary_count=True)).total or 0
                   for t in types)

    def fingerprint(self) -> tuple:
        return tuple(sorted((r["resourceType"], r["id"], r["meta"]["versionId"])
                            for r in self.iter_all()))

    def load(self, resources) -> int:
        count = 0
        for resource in resources:
            self.rest.update(resource)
            count += 1
        return count

    def close(self) -> None:
        self.rest.close()


class LossyProxy:
    """A TCP relay in front of the EHR that can lose what the EHR answers.

    mode "pass": relays both ways. "drop": forwards the request, then cuts the connection as
    soon as the EHR starts answering (by then it has committed the write), as a crash between
    commit and answer would. "hang": forwards the request and holds the answer back until the
    client gives up (its read timeout). "down": refuses to talk at all (the EHR is down).
    "no-writes": relays reads, and cuts the connection on a write before any of it reaches the
    EHR (an EHR that answers reads but takes no writes now). Requests are told apart by the
    method at the start of what arrives, which holds for one request at a time per connection.
    """

    WRITES = (b"POST ", b"PUT ", b"PATCH ", b"DELETE ")

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.mode = "pass"
        self.lost = 0  # answers the EHR gave that the client never got
        self.refused = 0  # writes cut off before they reached the EHR ("no-writes")
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
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def shut() -> None:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

        def requests() -> None:
            try:
                while (data := client.recv(65536)) and self.mode != "down":
                    if self.mode == "no-writes" and data.startswith(self.WRITES):
                        self.refused += 1
                        break
                    upstream.sendall(data)
            except OSError:
                pass
            shut()

        threading.Thread(target=requests, daemon=True).start()
        try:
            while data := upstream.recv(65536):
                mode = self.mode
                if mode in ("pass", "no-writes"):
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
