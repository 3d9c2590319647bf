"""`Patient/$everything` over HTTP with real SMART tokens: the whole compartment, paged, and
nothing of anyone else."""

from __future__ import annotations

import re

import pytest

from fhir_gateway.operations.everything import SPEC

OTHER_PATIENT = re.compile(r"Patient/pat-000[23](?![0-9])")


@pytest.fixture(scope="module")
def ann(smart_env):
    return smart_env.patient_token("app-public", "ann")["access_token"]


def _walk(client, first_url: str, params: dict | None = None) -> list[dict]:
    seen, url = [], first_url
    resp = client.get(url, params=params)
    while True:
        assert resp.status_code == 200, resp.text
        bundle = resp.json()
        seen += [e["resource"] for e in bundle.get("entry", [])]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        if url is None:
            return seen
        resp = client.get(url)


def test_everything_is_the_whole_compartment_paged(smart_env, ann):
    store = smart_env.live.adapter
    expected = {(r["resourceType"], r["id"]) for r in store.iter_all()
                if r["resourceType"] == "Patient" and r["id"] == "pat-0001"
                or (r["resourceType"] != "Patient" and "Patient/pat-0001" in str(r)
                    and not OTHER_PATIENT.search(str(r))
                    and r["resourceType"] not in ("Practitioner", "Slot", "Schedule",
                                                  "Organization", "Location", "Medication",
                                                  "PractitionerRole"))}
    with smart_env.fhir(ann) as client:
        got = _walk(client, "Patient/pat-0001/$everything", {"_count": "40"})
    keys = [(r["resourceType"], r["id"]) for r in got]
    assert len(keys) == len(set(keys)), "no resource twice across pages"
    assert set(keys) == expected
    assert keys[0] == ("Patient", "pat-0001")
    assert not any(OTHER_PATIENT.search(str(r)) for r in got)


def test_everything_type_filter_and_post(smart_env, ann):
    with smart_env.fhir(ann) as client:
        resp = client.post("Patient/pat-0001/$everything", json={
            "resourceType": "Parameters",
            "parameter": [{"name": "_type", "valueString": "Condition,AllergyIntolerance"}]},
            headers={"Content-Type": "application/fhir+json"})
    assert resp.status_code == 200
    types = {e["resource"]["resourceType"] for e in resp.json().get("entry", [])}
    assert types <= {"Patient", "Condition", "AllergyIntolerance"} and "Condition" in types


@pytest.mark.parametrize("who", ["bob", "nobody"])
def test_everything_of_another_patient_is_not_found(smart_env, ann, who):
    pid = "pat-0002" if who == "bob" else "no-such-patient"
    with smart_env.fhir(ann) as client:
        resp = client.get(f"Patient/{pid}/$everything")
    assert resp.status_code == 404
    assert resp.json()["issue"][0]["diagnostics"] == f"Patient/{pid} is not known"


def test_everything_bad_parameters(smart_env, ann):
    with smart_env.fhir(ann) as client:
        bad_type = client.get("Patient/pat-0001/$everything", params={"_type": "Practitioner"})
        bad_cursor = client.get("Patient/pat-0001/$everything", params={"_cursor": "forged"})
        type_level = client.get("Patient/$everything")
    assert bad_type.status_code == 400 and "_type" in bad_type.json()["issue"][0]["expression"]
    assert bad_cursor.status_code == 400
    assert type_level.status_code == 400


def test_operation_definition_and_capability(smart_env):
    import httpx

    definition = httpx.get(f"{smart_env.base}/OperationDefinition/{SPEC.definition_id}").json()
    assert definition["code"] == "everything" and definition["instance"] is True
    from fhir.resources.R4B.operationdefinition import OperationDefinition

    OperationDefinition.model_validate(definition)
    cap = httpx.get(f"{smart_env.base}/metadata").json()
    patient = next(r for r in cap["rest"][0]["resource"] if r["type"] == "Patient")
    assert {"name": "everything",
            "definition": f"{smart_env.base}/OperationDefinition/Patient-everything"} \
        in patient["operation"]


def test_operations_that_change_data_refuse_get(smart_env, ann):
    before = smart_env.live.fingerprint()
    with smart_env.fhir(ann) as client:
        resp = client.get("Observation/$record-reading",
                          params={"kind": "heart-rate", "value": "70"})
    assert resp.status_code == 405
    assert "takes POST" in resp.json()["issue"][0]["diagnostics"]
    assert smart_env.live.fingerprint() == before
