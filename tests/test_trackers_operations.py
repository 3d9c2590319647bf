"""Health trackers over HTTP with a real patient token: record readings (units converted, BMI
derived, duplicates refused, alerts flagged and sent to the care team), `$lastn`, `$stats`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest


def _params(**values) -> dict:
    out = []
    for name, value in values.items():
        key = "valueDecimal" if isinstance(value, int | float) else "valueString"
        out.append({"name": name.replace("_", "-"), key: value})
    return {"resourceType": "Parameters", "parameter": out}


@pytest.fixture(scope="module")
def ann(smart_env):
    token = smart_env.patient_token("app-public", "ann")["access_token"]
    with smart_env.fhir(token) as client:
        yield client


def _record(client, **values):
    return client.post("Observation/$record-reading", json=_params(**values),
                       headers={"Content-Type": "application/fhir+json"})


def _when(minutes: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat(timespec="seconds")


def test_weight_in_pounds_is_stored_in_kg_with_bmi(smart_env, ann):
    resp = _record(ann, kind="weight", value=150, unit="lb", effective=_when(30))
    assert resp.status_code == 201, resp.text
    stored = [e["resource"] for e in resp.json()["entry"]]
    weight = smart_env.live.adapter.read("Observation", stored[0]["id"])
    assert weight["valueQuantity"]["code"] == "kg"
    assert weight["valueQuantity"]["value"] == pytest.approx(68.04, abs=0.01)
    assert weight["performer"] == [{"reference": "Patient/pat-0001"}]
    codes = [o["code"]["coding"][0]["code"] for o in stored]
    assert codes[0] == "29463-7"
    if len(codes) == 2:  # the seed gives ann a height, so BMI is derived
        assert codes[1] == "39156-5"


def test_same_reading_twice_is_refused(smart_env, ann):
    when = _when(60)
    assert _record(ann, kind="heart-rate", value=72, effective=when).status_code == 201
    before = smart_env.live.fingerprint()
    again = _record(ann, kind="heart-rate", value=72, unit="/min", effective=when)
    assert again.status_code == 422
    assert again.json()["issue"][0]["code"] == "duplicate"
    assert smart_env.live.fingerprint() == before


@pytest.mark.parametrize(("values", "field"), [
    ({"kind": "weight", "value": 900, "unit": "kg"}, "value"),
    ({"kind": "weight", "value": 70, "unit": "stone"}, "unit"),
    ({"kind": "blood-pressure", "systolic": 80, "diastolic": 120}, "diastolic"),
    ({"kind": "levitation", "value": 1}, "kind"),
    ({"kind": "heart-rate", "value": 70, "effective": "2099-01-01T00:00:00Z"}, "effective"),
])
def test_implausible_readings_are_refused(smart_env, ann, values, field):
    before = smart_env.live.fingerprint()
    resp = _record(ann, **values)
    assert resp.status_code == 400, resp.text
    issue = resp.json()["issue"][0]
    assert issue["expression"] == [field]
    assert smart_env.live.fingerprint() == before


def test_crisis_blood_pressure_is_flagged_and_sent_to_the_care_team(smart_env, ann):
    resp = _record(ann, kind="blood-pressure", systolic=185, diastolic=110,
                   effective=_when(5))
    assert resp.status_code == 201, resp.text
    stored = {e["resource"]["resourceType"]: e["resource"] for e in resp.json()["entry"]}
    assert stored["Observation"]["interpretation"][0]["coding"][0]["code"] == "AA"
    message = smart_env.live.adapter.read("Communication", stored["Communication"]["id"])
    from fhir.resources.R4B.communication import Communication
    from fhirclient.models.communication import Communication as Communication401

    Communication.model_validate(message)
    Communication401(message, strict=True)
    for obs in (e["resource"] for e in resp.json()["entry"]
                if e["resource"]["resourceType"] == "Observation"):
        from fhirclient.models.observation import Observation as Observation401

        Observation401(obs, strict=True)
    assert message["about"] == [{"reference": f"Observation/{stored['Observation']['id']}"}]
    assert "Hypertensive crisis" in message["payload"][0]["contentString"]
    assert all(r["reference"].startswith("Practitioner/") for r in message["recipient"])


def test_lastn_and_stats(ann):
    for minutes, bpm in ((300, 60), (20, 90), (10, 110)):
        assert _record(ann, kind="heart-rate", value=bpm, effective=_when(minutes)
                       ).status_code == 201
    last = ann.get("Observation/$lastn", params={"code": "http://loinc.org|8867-4", "max": "2"})
    assert last.status_code == 200
    values = [e["resource"]["valueQuantity"]["value"] for e in last.json()["entry"]]
    assert values == [110, 90]
    stats = ann.get("Observation/$stats", params={"code": "8867-4", "duration": "1",
                                                   "statistic": "count,maximum,minimum"})
    assert stats.status_code == 200, stats.text
    summary = stats.json()["parameter"][0]["resource"]
    got = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"]
           for c in summary["component"]}
    assert got["count"] >= 3 and got["maximum"] == 110 and got["minimum"] == 60


def test_another_patients_trends_are_not_found(ann):
    resp = ann.get("Observation/$lastn", params={"patient": "pat-0002"})
    assert resp.status_code == 404
    bad = ann.get("Observation/$stats", params={"code": "8867-4", "statistic": "mode"})
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["statistic"]
