"""`Patient/$summary` over HTTP with real SMART tokens: an IPS-style document of the patient's
own data, valid R4 (R4B models and fhirclient), and nothing of anyone else."""

from __future__ import annotations

import re

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhirclient.models.bundle import Bundle as Bundle401

SECTIONS = {"11450-4", "10160-0", "48765-2", "11369-6", "30954-2", "8716-3"}


@pytest.fixture(scope="module")
def tokens(smart_env):
    return {
        "ann": smart_env.patient_token("app-public", "ann")["access_token"],
        "vitals": smart_env.patient_token(
            "app-public", "bob", scope="launch/patient patient/Patient.rs "
                                      "patient/Observation.rs?category=vital-signs")["access_token"],
    }


def test_summary_document(smart_env, tokens):
    with smart_env.fhir(tokens["ann"]) as client:
        resp = client.get("Patient/pat-0001/$summary")
    assert resp.status_code == 200, resp.text
    bundle = resp.json()
    Bundle.model_validate(bundle)
    Bundle401(bundle, strict=True)
    assert bundle["type"] == "document"
    composition = bundle["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition"
    assert {s["code"]["coding"][0]["code"] for s in composition["section"]} == SECTIONS
    cited = {e["reference"] for s in composition["section"] for e in s.get("entry", [])}
    included = {e["fullUrl"] for e in bundle["entry"][2:]}
    assert cited == included, "every cited resource is in the document, and only those"
    problems = next(s for s in composition["section"] if s["code"]["coding"][0]["code"]
                    == "11450-4")
    assert problems.get("entry"), "the seed gives pat-0001 active conditions"
    assert not re.search(r"Patient/pat-000[23](?![0-9])", resp.text)


def test_narrow_token_gets_empty_sections_not_an_error(smart_env, tokens):
    with smart_env.fhir(tokens["vitals"]) as client:
        resp = client.get("Patient/pat-0002/$summary")
    assert resp.status_code == 200, resp.text
    sections = {s["code"]["coding"][0]["code"]: s
                for s in resp.json()["entry"][0]["resource"]["section"]}
    assert "entry" in sections["8716-3"]
    assert "entry" not in sections["11450-4"] and "emptyReason" in sections["11450-4"]


def test_summary_of_another_patient_is_not_found(smart_env, tokens):
    with smart_env.fhir(tokens["ann"]) as client:
        resp = client.get("Patient/pat-0002/$summary")
    assert resp.status_code == 404
