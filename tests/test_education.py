"""Patient education: the catalogue and its matching (pure), and `Patient/{id}/$education` and
the Infobutton-style `DocumentReference/$education` over HTTP with real SMART patient tokens."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhirclient.models.bundle import Bundle as Bundle401
from fhirclient.models.fhirelementfactory import FHIRElementFactory

from fhir_gateway.operations.education import SPECS
from mappings.portal.education import (
    TOPICS,
    as_document_reference,
    code_system,
    topic_by_id,
    topics_for,
)
from mappings.references import reference_target
from mappings.terminology import (
    CONDITIONS,
    DRUGS,
    ICD10CM,
    LAB_TESTS,
    LOINC,
    RXNORM,
    SNOMED,
    VITAL_SIGNS,
)

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def ids(topics) -> list[str]:
    return [t.id for t in topics]


def check_r4(resource: dict) -> None:
    rtype = resource["resourceType"]
    get_fhir_model_class(rtype).model_validate(resource)
    FHIRElementFactory.instantiate(rtype, resource)  # fhirclient models are strict


# --- the catalogue (pure) -------------------------------------------------------------------

def test_catalogue_has_enough_well_formed_topics():
    assert len(TOPICS) >= 30
    assert len({t.id for t in TOPICS}) == len(TOPICS), "topic ids are unique"
    for t in TOPICS:
        assert FHIR_ID.match(t.id), t.id
        assert t.language == "en" and t.title and t.codes
        words = len(t.text.split())
        assert 120 <= words <= 250, (t.id, words)
        sentences = [s for s in re.split(r"[.!?]\s+|\n", t.text) if s.strip()]
        assert words / len(sentences) < 12, f"{t.id}: keep sentences short"
        assert "911" in t.text and "clinic" in t.text, f"{t.id} says when to get help"
        assert all(system in (SNOMED, ICD10CM, RXNORM, LOINC) for system, _ in t.codes)


def test_every_seed_code_has_a_topic():
    for cond in CONDITIONS.values():
        assert topics_for([(SNOMED, cond.snomed)]), cond.key
        assert topics_for([(ICD10CM, cond.icd10)]), cond.key
        assert ids(topics_for([(SNOMED, cond.snomed)])) == ids(
            topics_for([(ICD10CM, cond.icd10)])), f"{cond.key}: both codes find the same topic"
    for drug in DRUGS.values():
        assert topics_for([(RXNORM, drug.rxnorm)]), drug.key
    for test in LAB_TESTS.values():
        assert topics_for([(LOINC, test.loinc)]), test.key
    assert ids(topics_for([(LOINC, VITAL_SIGNS["bp"].loinc)])) == ["blood-pressure-reading"]
    required = {(SNOMED, "38341003"): "high-blood-pressure",
                (ICD10CM, "I10"): "high-blood-pressure",
                (SNOMED, "44054006"): "type-2-diabetes", (ICD10CM, "E11.9"): "type-2-diabetes",
                (SNOMED, "55822004"): "high-cholesterol", (ICD10CM, "E78.5"): "high-cholesterol",
                (SNOMED, "195967001"): "asthma", (ICD10CM, "J45.909"): "asthma",
                (LOINC, "4548-4"): "a1c-test", (LOINC, "18262-6"): "cholesterol-test",
                (LOINC, "2093-3"): "cholesterol-test", (LOINC, "2345-7"): "blood-sugar-test",
                (LOINC, "2160-0"): "kidney-function-test", (LOINC, "718-7"): "hemoglobin-test",
                (LOINC, "3016-3"): "thyroid-test", (LOINC, "2823-3"): "potassium-test",
                (LOINC, "2951-2"): "sodium-test"}
    for code, topic_id in required.items():
        assert ids(topics_for([code])) == [topic_id], code


def test_icd10_matches_by_prefix_and_other_systems_exactly():
    assert ids(topics_for([(ICD10CM, "E11.65")])) == ["type-2-diabetes"]
    assert ids(topics_for([(ICD10CM, "E1165")])) == ["type-2-diabetes"], "dotless spelling"
    assert ids(topics_for([(ICD10CM, "i48.0")])) == ["atrial-fibrillation"]
    assert ids(topics_for([(ICD10CM, "J45.20")])) == ["asthma"]
    assert topics_for([(ICD10CM, "E1")]) == [], "a prefix of a topic's code is not a match"
    assert topics_for([(ICD10CM, "E12.9")]) == []
    assert topics_for([(SNOMED, "3834100")]) == [] and topics_for([(SNOMED, "383410031")]) == []
    assert topics_for([(LOINC, "4548")]) == []
    assert topics_for([("http://example.org/other", "I10")]) == [], "the system must match"


def test_topics_are_deduplicated_in_catalogue_order():
    found = topics_for([(LOINC, "18262-6"), (RXNORM, "314076"), (ICD10CM, "I10"),
                        (SNOMED, "38341003"), (LOINC, "2093-3")])
    assert ids(found) == ["high-blood-pressure", "lisinopril", "cholesterol-test"]


def test_code_systems_by_oid_and_uri():
    assert code_system("2.16.840.1.113883.6.96") == SNOMED
    assert code_system("urn:oid:2.16.840.1.113883.6.90") == ICD10CM
    assert code_system("2.16.840.1.113883.6.88") == RXNORM
    assert code_system("2.16.840.1.113883.6.1") == LOINC
    for uri in (SNOMED, ICD10CM, RXNORM, LOINC):
        assert code_system(uri) == uri
    assert code_system("2.16.840.1.113883.6.103") is None  # ICD-9-CM: not in the catalogue
    assert code_system("") is None


def test_each_topic_says_what_it_is_about_in_catalogue_order():
    """Conditions, then medicines, then test results: the category follows the sections (a
    condition topic also found by a result code, like obesity by BMI, stays a condition)."""
    kinds = [as_document_reference(t, "http://gw.example/fhir", None)["category"][0]
             for t in TOPICS]
    codes = [k["coding"][0]["code"] for k in kinds]
    assert codes == sorted(codes, key=["Condition", "Medication", "Observation"].index)
    assert set(codes) == {"Condition", "Medication", "Observation"}
    assert codes[[t.id for t in TOPICS].index("obesity")] == "Condition"
    assert {k["text"] for k in kinds} == {"A health problem", "A medicine", "A test result"}


def test_every_topic_builds_a_valid_document_reference():
    for t in TOPICS:
        for pid in (None, "pat-0001"):
            doc = as_document_reference(t, "http://gw.example/fhir", pid)
            check_r4(doc)
            assert doc["id"] == t.id and doc["status"] == "current"
            assert doc["description"] == t.title
            assert doc["type"]["coding"][0] == {"system": LOINC, "code": "34895-3",
                                                "display": "Education note"}
            attachment = doc["content"][0]["attachment"]
            assert attachment["contentType"] == "text/plain; charset=utf-8"
            assert attachment["language"] == "en" and attachment["title"] == t.title
            text = base64.b64decode(attachment["data"]).decode("utf-8")
            assert t.text in text and attachment["size"] == len(text.encode())
            assert ("subject" in doc) == (pid is not None)
            (about,) = doc["category"]
            kind = about["coding"][0]
            assert kind["system"] == "http://hl7.org/fhir/resource-types"
            assert kind["code"] == {SNOMED: "Condition", ICD10CM: "Condition",
                                    RXNORM: "Medication", LOINC: "Observation"}[t.codes[0][0]]
            if pid:
                assert doc["subject"] == {"reference": "Patient/pat-0001"}


# --- over HTTP --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(smart_env):
    """The module's gateway with the operations registered (until builtin.py lists them), and
    three extra results for pat-0001 so the result rules are exercised whatever today is."""
    operations = smart_env.live.app.extensions["fhir_gateway"].service.operations
    for spec in SPECS:
        operations.add(spec)
    now = datetime.now(UTC)

    def observation(oid: str, code: str, when: datetime, interp: str | None,
                    component_interp: str | None = None) -> dict:
        obs = {"resourceType": "Observation", "id": oid, "status": "final",
               "code": {"coding": [{"system": LOINC, "code": code}]},
               "subject": {"reference": "Patient/pat-0001"},
               "effectiveDateTime": when.isoformat(timespec="seconds")}
        if interp:
            obs["interpretation"] = [{"coding": [{"system": INTERP, "code": interp}]}]
            obs["valueQuantity"] = {"value": 1.0}
        if component_interp:
            obs["component"] = [{"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                                 "valueQuantity": {"value": 172},
                                 "interpretation": [{"coding": [{"system": INTERP,
                                                                 "code": component_interp}]}]}]
        return obs

    for obs in (observation("obs-edu-k", "2823-3", now - timedelta(days=10), "HH"),
                observation("obs-edu-hgb-old", "718-7", now - timedelta(days=400), "L"),
                observation("obs-edu-tsh-normal", "3016-3", now - timedelta(days=5), "N"),
                observation("obs-edu-bp", "85354-9", now - timedelta(days=3), None, "H")):
        check_r4(obs)
        smart_env.live.adapter.update(obs)
    return smart_env


@pytest.fixture(scope="module")
def tokens(env):
    return {
        "ann": env.patient_token("app-public", "ann")["access_token"],
        "no-docs": env.patient_token(
            "app-public", "ann",
            scope="launch/patient patient/Patient.rs patient/Condition.rs")["access_token"],
    }


def expected_for(adapter, pid: str) -> set[str]:
    """Worked out from the stored resources, independently of the operation's code."""
    since = datetime.now(UTC) - timedelta(days=365)
    subject = f"Patient/{pid}"
    codes: list[tuple[str, str]] = []

    def codings(concept: dict | None) -> list[tuple[str, str]]:
        return [(c["system"], c["code"]) for c in (concept or {}).get("coding", [])]

    for r in adapter.iter_all():
        if r["resourceType"] not in ("Condition", "MedicationRequest", "Observation") or \
                r.get("subject", {}).get("reference") != subject:
            continue
        if r["resourceType"] == "Condition":
            if r["clinicalStatus"]["coding"][0]["code"] == "active":
                codes += codings(r["code"])
        elif r["resourceType"] == "MedicationRequest" and r["status"] == "active":
            if "medicationCodeableConcept" in r:
                codes += codings(r["medicationCodeableConcept"])
            else:
                _, mid = reference_target(r["medicationReference"]["reference"])
                codes += codings(adapter.read("Medication", mid)["code"])
        elif r["resourceType"] == "Observation":
            when = datetime.fromisoformat(r["effectiveDateTime"])
            flags = {c["code"] for i in r.get("interpretation", []) for c in i["coding"]}
            parts = [p for p in r.get("component", [])
                     if {c["code"] for i in p.get("interpretation", []) for c in i["coding"]}
                     & {"H", "L", "HH", "LL", "A", "AA"}]
            if when >= since and (flags & {"H", "L", "HH", "LL", "A", "AA"} or parts):
                codes += codings(r["code"])
                codes += [c for p in parts for c in codings(p["code"])]
    return set(ids(topics_for(codes)))


def test_education_for_the_patients_own_record(env, tokens):
    with env.fhir(tokens["ann"]) as client:
        resp = client.get("Patient/pat-0001/$education")
    assert resp.status_code == 200, resp.text
    bundle = resp.json()
    assert bundle["type"] == "searchset"
    got = [e["resource"]["id"] for e in bundle["entry"]]
    assert len(got) == len(set(got)) == bundle["total"], "each topic once"
    assert set(got) == expected_for(env.live.adapter, "pat-0001")
    # the seed: hypertension, hyperlipidemia, knee osteoarthritis active; a cold resolved;
    # lisinopril, atorvastatin and oxycodone (by Medication reference) active; amlodipine stopped
    assert {"high-blood-pressure", "high-cholesterol", "osteoarthritis", "lisinopril",
            "atorvastatin", "oxycodone"} <= set(got)
    assert not {"common-cold", "amlodipine"} & set(got)
    # the added results: high potassium and a high systolic component count; an old low
    # hemoglobin and a normal TSH do not
    assert {"potassium-test", "blood-pressure-reading"} <= set(got)
    assert not {"hemoglobin-test", "thyroid-test"} & set(got)
    for entry in bundle["entry"]:
        assert entry["fullUrl"].startswith("urn:uuid:") and entry["search"]["mode"] == "match"
        assert entry["resource"]["subject"] == {"reference": "Patient/pat-0001"}
        check_r4(entry["resource"])
    get_fhir_model_class("Bundle").model_validate(bundle)
    Bundle401(bundle, strict=True)
    assert not re.search(r"pat-000[23](?![0-9])", resp.text)


def test_education_of_another_or_unknown_patient_is_not_found(env, tokens):
    before = env.live.fingerprint()
    with env.fhir(tokens["ann"]) as client:
        other = client.get("Patient/pat-0002/$education")
        unknown = client.get("Patient/pat-9999/$education")
    assert other.status_code == 404 and unknown.status_code == 404
    assert "pat-0002" not in other.text.replace("Patient/pat-0002", "")
    assert env.live.fingerprint() == before


def test_infobutton_by_oid_and_by_uri(env, tokens):
    cases = [
        ("2.16.840.1.113883.6.96", "44054006", ["type-2-diabetes"]),
        ("urn:oid:2.16.840.1.113883.6.90", "E11.65", ["type-2-diabetes"]),
        ("2.16.840.1.113883.6.88", "860975", ["metformin"]),
        ("2.16.840.1.113883.6.1", "4548-4", ["a1c-test"]),
        (SNOMED, "38341003", ["high-blood-pressure"]),
        (ICD10CM, "I10", ["high-blood-pressure"]),
        (RXNORM, "1049621", ["oxycodone"]),
        (LOINC, "18262-6", ["cholesterol-test"]),
    ]
    with env.fhir(tokens["ann"]) as client:
        for system, code, want in cases:
            resp = client.get("DocumentReference/$education",
                              params={"mainSearchCriteria.v.c": code,
                                      "mainSearchCriteria.v.cs": system})
            assert resp.status_code == 200, (system, code, resp.text)
            bundle = resp.json()
            assert [e["resource"]["id"] for e in bundle["entry"]] == want, (system, code)
            for entry in bundle["entry"]:
                assert "subject" not in entry["resource"]
                check_r4(entry["resource"])
            doc = bundle["entry"][0]["resource"]
            text = base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()
            assert text.startswith(topic_by_id(want[0]).title)
            get_fhir_model_class("Bundle").model_validate(bundle)
            Bundle401(bundle, strict=True)


def test_infobutton_code_without_topic_is_an_empty_searchset(env, tokens):
    with env.fhir(tokens["ann"]) as client:
        resp = client.get("DocumentReference/$education",
                          params={"mainSearchCriteria.v.c": "22298006",  # myocardial infarction
                                  "mainSearchCriteria.v.cs": "2.16.840.1.113883.6.96"})
    assert resp.status_code == 200, resp.text
    bundle = resp.json()
    assert bundle["type"] == "searchset" and bundle["total"] == 0 and "entry" not in bundle
    Bundle401(bundle, strict=True)


@pytest.mark.parametrize("params, where", [
    ({"mainSearchCriteria.v.c": "I10", "mainSearchCriteria.v.cs": "2.16.840.1.113883.6.103"},
     "mainSearchCriteria.v.cs"),
    ({"mainSearchCriteria.v.c": "I10", "mainSearchCriteria.v.cs": "http://example.org/codes"},
     "mainSearchCriteria.v.cs"),
    ({"mainSearchCriteria.v.c": "I10"}, "mainSearchCriteria.v.cs"),
    ({"mainSearchCriteria.v.cs": ICD10CM}, "mainSearchCriteria.v.c"),
    ({"mainSearchCriteria.v.c": " ", "mainSearchCriteria.v.cs": ICD10CM},
     "mainSearchCriteria.v.c"),
])
def test_infobutton_bad_input_is_400_naming_the_parameter(env, tokens, params, where):
    before = env.live.fingerprint()
    with env.fhir(tokens["ann"]) as client:
        resp = client.get("DocumentReference/$education", params=params)
    assert resp.status_code == 400, resp.text
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert where in outcome["issue"][0]["expression"]
    assert env.live.fingerprint() == before


def test_token_without_document_reference_is_refused(env, tokens):
    with env.fhir(tokens["no-docs"]) as client:
        info = client.get("DocumentReference/$education",
                          params={"mainSearchCriteria.v.c": "I10",
                                  "mainSearchCriteria.v.cs": ICD10CM})
        mine = client.get("Patient/pat-0001/$education")
    assert info.status_code == 403, info.text
    assert mine.status_code == 403, mine.text
