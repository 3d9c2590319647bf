"""`Appointment/{id}/$start-visit`: the patient joins a telehealth visit (Encounter class VR) or
arrives in person (AMB); the Appointment becomes `arrived`, atomically."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B.encounter import Encounter
from fhirclient.models.encounter import Encounter as Encounter401

JSON = {"Content-Type": "application/fhir+json"}


def _slot(smart_env, schedule: str, minutes_from_now: int) -> str:
    store = smart_env.live.adapter
    template = next(r for r in store.iter_all() if r["resourceType"] == "Slot"
                    and r["schedule"]["reference"] == f"Schedule/{schedule}")
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=minutes_from_now)
    slot = {k: v for k, v in template.items() if k not in ("id", "meta", "extension")}
    slot.update(status="free", start=start.isoformat(),
                end=(start + timedelta(minutes=30)).isoformat())
    return store.create(slot).resource["id"]


def _book(client, slot_id: str) -> dict:
    resp = client.post("Appointment/$book", headers=JSON, json={
        "resourceType": "Parameters",
        "parameter": [{"name": "slot", "valueReference": {"reference": f"Slot/{slot_id}"}}]})
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


@pytest.fixture(scope="module")
def ann(smart_env):
    token = smart_env.patient_token("app-public", "ann")["access_token"]
    with smart_env.fhir(token) as client:
        yield client


@pytest.mark.parametrize(("schedule", "klass"), [("sched-05", "VR"), ("sched-01", "AMB")])
def test_start_visit(smart_env, ann, schedule, klass):
    appointment = _book(ann, _slot(smart_env, schedule, 10))
    resp = ann.post(f"Appointment/{appointment['id']}/$start-visit")
    assert resp.status_code == 201, resp.text
    encounter = smart_env.live.adapter.read("Encounter", resp.json()["id"])
    Encounter.model_validate(encounter)
    Encounter401(encounter, strict=True)
    assert encounter["class"]["code"] == klass and encounter["status"] == "in-progress"
    assert encounter["appointment"] == [{"reference": f"Appointment/{appointment['id']}"}]
    assert encounter["subject"] == {"reference": "Patient/pat-0001"}
    stored = smart_env.live.adapter.read("Appointment", appointment["id"])
    assert stored["status"] == "arrived"
    before = smart_env.live.fingerprint()
    again = ann.post(f"Appointment/{appointment['id']}/$start-visit")
    assert again.status_code == 422 and smart_env.live.fingerprint() == before


def test_too_early_is_refused(smart_env, ann):
    appointment = _book(ann, _slot(smart_env, "sched-05", 24 * 60 + 60))
    before = smart_env.live.fingerprint()
    resp = ann.post(f"Appointment/{appointment['id']}/$start-visit")
    assert resp.status_code == 422
    assert resp.json()["issue"][0]["expression"] == ["Appointment.start"]
    assert smart_env.live.fingerprint() == before


def test_another_patients_visit_is_not_found(smart_env, ann):
    bob = smart_env.patient_token("app-public", "bob")["access_token"]
    with smart_env.fhir(bob) as client:
        appointment = _book(client, _slot(smart_env, "sched-05", 15))
    before = smart_env.live.fingerprint()
    resp = ann.post(f"Appointment/{appointment['id']}/$start-visit")
    assert resp.status_code == 404 and smart_env.live.fingerprint() == before
