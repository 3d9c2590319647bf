"""Upstream EHRs for the REST adapter's tests: a second `fhir-gateway serve` process in plain
mode (its own embedded store, SMART off), and a gateway whose adapter is `fhir_rest` in front
of any FHIR base URL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


def seeded_upstream(data: Path, patients: int = 3) -> UpstreamProcess:
    from fhir_gateway.synthetic import generate
    from tests.conftest import SEED_TODAY

    upstream = UpstreamProcess(data)
    data.mkdir(parents=True, exist_ok=True)
    store = EmbeddedAdapter(upstream.database_url)
    store.load(generate(patients, 7, SEED_TODAY))
    store.close()
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
