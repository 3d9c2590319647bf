"""The embedded store's guarantees, on SQLite and PostgreSQL: versions, atomic transactions,
stable cursor paging and safe concurrent writes."""

from __future__ import annotations

import threading

import pytest

from adapters.base import BundleEntryRequest
from adapters.errors import Conflict, Gone, Invalid, NotFound, PreconditionFailed
from adapters.search import ParamClause, SearchQuery
from tests.conftest import fingerprint


def _obs(pid: str, day: int, code: str = "8867-4") -> dict:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": f"2024-03-{day:02d}T08:00:00Z",
            "valueQuantity": {"value": 60 + day, "unit": "/min",
                              "system": "http://unitsofmeasure.org", "code": "/min"}}


def test_versions_history_and_vread(store):
    created = store.create({"resourceType": "Patient", "gender": "female"})
    pid = created.resource["id"]
    store.update({"resourceType": "Patient", "id": pid, "gender": "other"}, if_match="1")
    store.delete("Patient", pid)
    with pytest.raises(Gone):
        store.read("Patient", pid)
    assert store.vread("Patient", pid, "1")["gender"] == "female"
    assert store.vread("Patient", pid, "2")["gender"] == "other"
    with pytest.raises(Gone):
        store.vread("Patient", pid, "3")
    with pytest.raises(NotFound):
        store.vread("Patient", pid, "4")
    page = store.history("Patient", pid, count=10)
    assert [e.version_id for e in page.entries] == ["3", "2", "1"]
    assert [e.method for e in page.entries] == ["DELETE", "PUT", "POST"]
    again = store.update({"resourceType": "Patient", "id": pid, "gender": "male"})
    assert again.created and again.version_id == "4"


def test_if_match_mismatch_changes_nothing(store):
    pid = store.create({"resourceType": "Patient", "gender": "female"}).resource["id"]
    before = fingerprint(store)
    with pytest.raises(PreconditionFailed):
        store.update({"resourceType": "Patient", "id": pid, "gender": "male"}, if_match="7")
    assert fingerprint(store) == before
    assert store.read("Patient", pid)["gender"] == "female"


def test_transaction_is_all_or_nothing(store):
    pid = store.create({"resourceType": "Patient", "gender": "female"}).resource["id"]
    before = fingerprint(store)
    entries = [
        BundleEntryRequest("POST", "Observation", resource=_obs(pid, 1), full_url="urn:uuid:a"),
        BundleEntryRequest("PUT", "Patient", id=pid,
                           resource={"resourceType": "Patient", "id": pid, "gender": "male"},
                           if_match="99"),
    ]
    with pytest.raises(PreconditionFailed):
        store.transaction(entries)
    assert fingerprint(store) == before
    assert store.search("Observation", SearchQuery()).total == 0


def test_transaction_resolves_urn_uuid_references(store):
    entries = [
        BundleEntryRequest("POST", "Observation", resource=_obs("urn-placeholder", 2),
                           full_url="urn:uuid:obs"),
        BundleEntryRequest("POST", "Patient", resource={"resourceType": "Patient"},
                           full_url="urn:uuid:pat"),
    ]
    entries[0].resource["subject"] = {"reference": "urn:uuid:pat"}
    results = store.transaction(entries)
    pid = results[1].resource["id"]
    assert results[0].resource["subject"]["reference"] == f"Patient/{pid}"
    query = SearchQuery(clauses=[ParamClause("patient", "reference", [pid])])
    assert store.search("Observation", query).total == 1


def test_cursor_paging_is_stable_under_inserts(store):
    """Keyset paging: a resource created mid-walk never causes a repeat or a gap."""
    pid = store.create({"resourceType": "Patient"}).resource["id"]
    for day in range(1, 13):
        store.create(_obs(pid, day))
    query = SearchQuery(count=5, sort=[("date", False)])
    seen: list[str] = []
    page = store.search("Observation", query)
    seen += [r["effectiveDateTime"] for r in page.resources]
    store.create(_obs(pid, 28))  # sorts after everything seen so far
    while page.next_cursor:
        query.cursor = page.next_cursor
        page = store.search("Observation", query)
        seen += [r["effectiveDateTime"] for r in page.resources]
    assert len(seen) == len(set(seen)) == 13
    assert seen == sorted(seen)


def test_cursor_from_another_sort_is_refused(store):
    pid = store.create({"resourceType": "Patient"}).resource["id"]
    for day in range(1, 4):
        store.create(_obs(pid, day))
    page = store.search("Observation", SearchQuery(count=1, sort=[("date", True)]))
    with pytest.raises(Invalid):
        store.search("Observation", SearchQuery(count=1, cursor=page.next_cursor))


def test_concurrent_updates_with_if_match_have_one_winner(store):
    pid = store.create({"resourceType": "Patient", "gender": "female"}).resource["id"]
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def writer(gender: str) -> None:
        barrier.wait()
        try:
            store.update({"resourceType": "Patient", "id": pid, "gender": gender}, if_match="1")
            outcomes.append("ok")
        except (PreconditionFailed, Conflict):
            outcomes.append("refused")

    threads = [threading.Thread(target=writer, args=(g,))
               for g in ("male", "other", "unknown", "male")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["ok", "refused", "refused", "refused"]
    assert store.read("Patient", pid)["meta"]["versionId"] == "2"
    assert store.history("Patient", pid, 10).total == 2
