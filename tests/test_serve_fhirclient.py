"""The real `fhir-gateway serve` process (gunicorn) on a free loopback port, driven by the
`fhirclient` package as a SMART app developer would: capability, read, search with paging,
create, update, delete."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fhirclient import client
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException

from tests.conftest import SEED_TODAY, free_port

CLI = [sys.executable, "-m", "fhir_gateway"]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server did not answer {url} within {timeout}s")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("served")
    env = dict(os.environ, FHIR_GATEWAY_DATA=str(data), FHIR_GATEWAY_AUTH_ENABLED="false")
    env.pop("FHIR_GATEWAY_CONFIG", None)
    seeded = subprocess.run(
        [*CLI, "seed", "--patients", "2", "--seed", "11", "--today", SEED_TODAY.isoformat()],
        env=env, capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    assert "Seeded" in seeded.stdout
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        _wait_ready(f"{base}/metadata", proc)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def smart(served):
    base, _ = served
    return client.FHIRClient(settings={"app_id": "fhir-gateway-tests", "api_base": base})


def test_capability_statement_via_fhirclient(smart):
    smart.server.get_capability()
    cap = smart.server.capabilityStatement
    assert cap.fhirVersion == "4.0.1"
    types = {r.type for r in cap.rest[0].resource}
    assert {"Patient", "Observation", "Appointment", "Slot", "MedicationRequest"} <= types


def test_search_and_read_seeded_patient(smart):
    first = next(Patient.where(struct={"_count": "1"}).perform_resources_iter(smart.server))
    again = Patient.read(first.id, smart.server)
    assert again.id == first.id and again.meta.versionId == first.meta.versionId


def test_paging_through_observations_with_fhirclient(smart):
    """fhirclient follows the gateway's signed `next` links until the end."""
    pid = next(Patient.where(struct={"_count": "1"}).perform_resources_iter(smart.server)).id
    search = Observation.where(struct={"patient": pid, "_count": "7"})
    total = next(search.perform_iter(smart.server)).total
    ids = [o.id for o in search.perform_resources_iter(smart.server)]
    assert total > 7, "the seed gives each patient more than one page of observations"
    assert len(ids) == total and len(set(ids)) == total


def test_create_update_delete_with_fhirclient(smart):
    patient = Patient({"name": [{"family": "Okafor", "given": ["Chidi"]}], "gender": "male",
                       "birthDate": "1980-05-17"})
    created = patient.create(smart.server)
    new_id = created["id"]
    fetched = Patient.read(new_id, smart.server)
    fetched.gender = "other"
    updated = fetched.update(smart.server)
    assert updated["meta"]["versionId"] == "2"
    fetched.delete(smart.server)
    with pytest.raises(Exception) as err:
        Patient.read(new_id, smart.server)
    assert getattr(err.value, "response", None) is not None
    assert err.value.response.status_code == 410


def test_unknown_id_is_not_found(smart):
    with pytest.raises(FHIRNotFoundException):
        Patient.read("no-such-patient", smart.server)


def test_server_logs_carry_no_search_values(served):
    """The access log never shows query strings (they can hold names and birth dates)."""
    base, proc = served
    marker = "Zzyzxqwerty"
    assert httpx.get(f"{base}/Patient", params={"family": marker}).status_code == 200
    proc.terminate()
    _, err = proc.communicate(timeout=15)
    assert "GET /fhir/<rtype>" in err
    assert "Booting worker with pid" in err  # gunicorn's own lines format too
    assert "--- Logging error ---" not in err
    assert marker not in err
    assert Path(base).name == "fhir"
