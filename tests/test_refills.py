"""Prescription refills over HTTP with real patient tokens: `$refill-request` creates the R4
"Refill Request" Task (or returns the open one), refuses what the clinic's rules refuse while
changing nothing, and `$medication-history` shows each order with its refill Tasks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhirclient.models.fhirelementfactory import FHIRElementFactory

from mappings.portal import refills as rules
from mappings.terminology import RXNORM

JSON = {"Content-Type": "application/fhir+json"}
FULFILL = {"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}


def both_validate(resource: dict) -> None:
    """Valid for fhir.resources R4B and for fhirclient's FHIR 4.0.1 models (strict)."""
    rtype = resource["resourceType"]
    get_fhir_model_class(rtype).model_validate(resource)
    FHIRElementFactory.instantiate(rtype, resource)


def params(**values: str) -> dict:
    return {"resourceType": "Parameters",
            "parameter": [{"name": k, "valueString": v} for k, v in values.items()]}


@pytest.fixture(scope="module")
def ann(smart_env):
    return smart_env.patient_token("app-public", "ann")["access_token"]


@pytest.fixture(scope="module")
def bob(smart_env):
    return smart_env.patient_token("app-public", "bob")["access_token"]


def refill_tasks(store, mr_id: str) -> list[dict]:
    return [r for r in store.iter_all() if r["resourceType"] == "Task"
            and r.get("focus", {}).get("reference") == f"MedicationRequest/{mr_id}"]


def test_refill_request_creates_the_task_and_a_second_returns_it(smart_env, bob):
    store = smart_env.live.adapter
    before = refill_tasks(store, "mr-0002-02")
    with smart_env.fhir(bob) as client:
        resp = client.post("MedicationRequest/mr-0002-02/$refill-request",
                           json=params(note="Running low, 3 tablets left"), headers=JSON)
        assert resp.status_code == 201, resp.text
        task = resp.json()
        stored = store.read("Task", task["id"])
        assert stored == task
        assert resp.headers["Location"].endswith(
            f"/Task/{task['id']}/_history/{task['meta']['versionId']}")
        assert task["status"] == "requested" and task["intent"] == "order"
        assert {k: task["code"]["coding"][0][k] for k in ("system", "code")} == FULFILL
        assert task["focus"]["reference"] == "MedicationRequest/mr-0002-02"
        assert task["for"]["reference"] == task["requester"]["reference"] == "Patient/pat-0002"
        assert task["owner"]["reference"] == "Practitioner/prac-04"
        assert task["note"][0]["text"] == "Running low, 3 tablets left"
        authored = datetime.fromisoformat(task["authoredOn"])
        assert abs(datetime.now(UTC) - authored) < timedelta(minutes=1)
        both_validate(task)
        assert len(refill_tasks(store, "mr-0002-02")) == len(before) + 1

        mark = smart_env.live.fingerprint()
        again = client.post("MedicationRequest/mr-0002-02/$refill-request")
        assert again.status_code == 200, again.text
        assert again.json() == stored
        assert smart_env.live.fingerprint() == mark
        assert len(refill_tasks(store, "mr-0002-02")) == len(before) + 1


@pytest.mark.parametrize(("mr", "status", "expression", "words"), [
    ("mr-0001-01", 422, "MedicationRequest.status", "is stopped, not active"),
    ("mr-0001-02", 422, "MedicationRequest.dispenseRequest.numberOfRepeatsAllowed",
     "no refills left"),
    ("mr-0001-04", 422, "MedicationRequest.dispenseRequest.numberOfRepeatsAllowed",
     "no refills left"),
    ("mr-0001-05", 422, "MedicationRequest.medication", "controlled substance"),
    ("mr-0002-02", 404, "MedicationRequest", "MedicationRequest/mr-0002-02 is not known"),
    ("no-such-mr", 404, "MedicationRequest", "is not known"),
])
def test_refill_refusals_change_nothing(smart_env, ann, mr, status, expression, words):
    mark = smart_env.live.fingerprint()
    with smart_env.fhir(ann) as client:
        resp = client.post(f"MedicationRequest/{mr}/$refill-request")
    assert resp.status_code == status, resp.text
    issue = resp.json()["issue"][0]
    assert issue["expression"] == [expression]
    assert words in issue["diagnostics"]
    assert smart_env.live.fingerprint() == mark


@pytest.mark.parametrize(("body", "expression"), [
    (params(note="   "), "note"),
    (params(note="x" * 1001), "note"),
    ({"resourceType": "Parameters", "parameter": [{"name": "note", "valueInteger": 3}]}, "note"),
    ({"resourceType": "Parameters", "parameter": [{"name": "note", "valueString": "a"},
                                                  {"name": "note", "valueString": "b"}]},
     "note"),
])
def test_refill_bad_note_is_400(smart_env, ann, body, expression):
    mark = smart_env.live.fingerprint()
    with smart_env.fhir(ann) as client:
        resp = client.post("MedicationRequest/mr-0001-02/$refill-request", json=body,
                           headers=JSON)
    assert resp.status_code == 400, resp.text
    assert resp.json()["issue"][0]["expression"] == [expression]
    assert smart_env.live.fingerprint() == mark


def test_medication_history_lists_each_order_with_its_refills(smart_env, ann):
    store = smart_env.live.adapter
    mine = {r["id"] for r in store.iter_all() if r["resourceType"] == "MedicationRequest"
            and r["subject"]["reference"] == "Patient/pat-0001"}
    with smart_env.fhir(ann) as client:
        resp = client.get("MedicationRequest/$medication-history")
        explicit = client.get("MedicationRequest/$medication-history",
                              params={"patient": "Patient/pat-0001"})
    assert resp.status_code == 200, resp.text
    bundle = resp.json()
    assert explicit.json()["entry"] == bundle["entry"]
    both_validate(bundle)
    assert bundle["type"] == "searchset" and bundle["total"] == len(mine)
    matches = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
    included = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert {m["id"] for m in matches} == mine
    assert [m["status"] for m in matches][:3] == ["active"] * 3
    assert [t["id"] for t in included] == ["task-0001-01"]
    assert included[0]["focus"]["reference"] == "MedicationRequest/mr-0001-02"


def test_medication_history_of_another_patient_is_not_found(smart_env, ann):
    mark = smart_env.live.fingerprint()
    with smart_env.fhir(ann) as client:
        other = client.get("MedicationRequest/$medication-history",
                           params={"patient": "pat-0002"})
        bad = client.get("MedicationRequest/$medication-history",
                         params={"patient": "Practitioner/prac-01"})
    assert other.status_code == 404
    assert other.json()["issue"][0]["expression"] == ["patient"]
    assert bad.status_code == 400
    assert bad.json()["issue"][0]["expression"] == ["patient"]
    assert smart_env.live.fingerprint() == mark


# -- the pure rules ------------------------------------------------------------------------

def _order(**kw) -> dict:
    base = {"resourceType": "MedicationRequest", "id": "mr-x", "status": "active",
            "intent": "order", "subject": {"reference": "Patient/p1"},
            "requester": {"reference": "Practitioner/d1"},
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "314076"}],
                                          "text": "Lisinopril"},
            "dispenseRequest": {"numberOfRepeatsAllowed": 2}}
    return {**base, **kw}


def _task(status: str, focus: str = "mr-x") -> dict:
    return {"resourceType": "Task", "status": status, "intent": "order",
            "code": {"coding": [dict(FULFILL)]},
            "focus": {"reference": f"MedicationRequest/{focus}"}}


def test_rules_count_completed_refills_and_find_the_open_one():
    tasks = [_task("completed"), _task("cancelled"), _task("completed", "other"),
             _task("in-progress")]
    assert rules.refills_left(_order(), tasks) == 1
    assert rules.open_refill("mr-x", tasks)["status"] == "in-progress"
    assert rules.open_refill("other", tasks) is None
    with pytest.raises(rules.RefillRefused) as exc:
        rules.check_refillable(_order(), None, tasks + [_task("completed")], frozenset())
    assert exc.value.expression.endswith("numberOfRepeatsAllowed")


def test_rules_refuse_controlled_drugs_by_concept_or_by_medication():
    blocked = rules.code_list("1049621, 999")
    coded = _order(medicationCodeableConcept={"coding": [{"system": RXNORM, "code": "999"}]})
    with pytest.raises(rules.RefillRefused, match="controlled substance"):
        rules.check_refillable(coded, None, [], blocked)
    by_ref = {k: v for k, v in _order().items() if k != "medicationCodeableConcept"}
    by_ref["medicationReference"] = {"reference": "Medication/m"}
    med = {"resourceType": "Medication", "code": {"coding": [{"system": RXNORM,
                                                              "code": "1049621"}]}}
    with pytest.raises(rules.RefillRefused, match="controlled substance"):
        rules.check_refillable(by_ref, med, [], blocked)
    rules.check_refillable(_order(), None, [], blocked)  # allowed


def test_built_task_validates_without_a_note_or_owner():
    order = {k: v for k, v in _order().items() if k != "requester"}
    task = rules.build_refill_task(order, datetime(2026, 6, 15, 9, 30, tzinfo=UTC))
    assert "owner" not in task and "note" not in task
    both_validate(task)
