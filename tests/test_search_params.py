"""FHIR search over real HTTP, on SQLite and PostgreSQL: every indexed parameter, modifiers,
`_include`/`_revinclude`, `_sort`, `_count`, `_summary=count` and cursor paging.

Most cases are rows of one table run against a module-scoped gateway loaded with one small
transaction; each row is checked by GET and by form-encoded `POST Type/_search` alike. Tests that
write while they search get a fresh gateway of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.conftest import LiveGateway, make_pg_database, start_live_gateway

FORM = "application/x-www-form-urlencoded"
LOINC = "http://loinc.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
DOC_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"


# -- helpers --------------------------------------------------------------------------------

def cc(system: str | None, code: str) -> dict:
    coding = {"code": code} if system is None else {"system": system, "code": code}
    return {"coding": [coding]}


def ref(target: str) -> dict:
    return {"reference": target}


def transaction(gw: LiveGateway, resources: list[dict], method: str = "PUT") -> dict:
    """Store `resources` in one transaction: PUT keeps their ids, POST lets the server pick."""
    entries = []
    for res in resources:
        url = f"{res['resourceType']}/{res['id']}" if method == "PUT" else res["resourceType"]
        entries.append({"resource": res, "request": {"method": method, "url": url}})
    resp = gw.post("", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert resp.status_code == 200, resp.text
    return resp.json()


def split_query(query: str) -> tuple[str, list[tuple[str, str]]]:
    """`Type?a=1&b=2` -> ('Type', [('a', '1'), ('b', '2')]), values taken literally."""
    path, _, qs = query.partition("?")
    return path, [tuple(p.split("=", 1)) for p in qs.split("&") if p]


def search(gw: LiveGateway, query: str, method: str = "GET", status: int = 200) -> dict:
    """Run `query` (`{base}` is replaced by the FHIR base) by GET or POST _search."""
    path, pairs = split_query(query.replace("{base}", gw.base))
    if method == "GET":
        resp = gw.get(path, params=pairs)
    else:
        resp = gw.post(f"{path}/_search", content=urlencode(pairs), headers={"Content-Type": FORM})
    assert resp.status_code == status, f"{method} {query}: {resp.text}"
    body = resp.json()
    if status == 200:
        assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    else:
        assert body["resourceType"] == "OperationOutcome"
    return body


def follow(gw: LiveGateway, url: str) -> dict:
    resp = gw.client.get(url)
    assert resp.status_code == 200, resp.text
    return resp.json()


def entries(bundle: dict, mode: str) -> list[dict]:
    return [e for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def match_ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in entries(bundle, "match")]


def included(bundle: dict) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in entries(bundle, "include")}


def link(bundle: dict, relation: str) -> str | None:
    return next((ln["url"] for ln in bundle["link"] if ln["relation"] == relation), None)


# -- the shared data set --------------------------------------------------------------------

def _patient(id_: str, family: str, given: list[str], identifiers: list[dict],
             gender: str | None = None, birth: str | None = None) -> dict:
    res = {"resourceType": "Patient", "id": id_, "name": [{"family": family, "given": given}]}
    if identifiers:
        res["identifier"] = identifiers
    if gender:
        res["gender"] = gender
    if birth:
        res["birthDate"] = birth
    return res


def _obs(id_: str, subject: str, status: str, code: dict, category: str | None = None,
         **effective) -> dict:
    res = {"resourceType": "Observation", "id": id_, "status": status, "code": code,
           "subject": ref(subject), **effective}
    if category:
        res["category"] = [cc(OBS_CATEGORY, category)]
    return res


def _appt(id_: str, status: str, start: str, end: str, *actors: str) -> dict:
    return {"resourceType": "Appointment", "id": id_, "status": status, "start": start,
            "end": end, "participant": [{"actor": ref(a), "status": "accepted"} for a in actors]}


def _slot(id_: str, schedule: str, status: str, start: str, end: str) -> dict:
    return {"resourceType": "Slot", "id": id_, "schedule": ref(schedule), "status": status,
            "start": start, "end": end}


def _comm(id_: str, status: str, subject: str, sender: str, recipients: list[str],
          sent: str, received: str | None = None, part_of: str | None = None) -> dict:
    res = {"resourceType": "Communication", "id": id_, "status": status,
           "subject": ref(subject), "sender": ref(sender),
           "recipient": [ref(r) for r in recipients], "sent": sent}
    if received:
        res["received"] = received
    if part_of:
        res["partOf"] = [ref(part_of)]
    return res


DATASET: list[dict] = [
    _patient("pat-a", "Núñez", ["Ana", "María"], [{"system": "urn:mrn", "value": "MRN-1"}],
             "female", "1961-04-02"),
    _patient("pat-b", "Nunemaker", ["Bob"], [{"system": "urn:mrn", "value": "MRN-2"}],
             "male", "1975-10-20"),
    _patient("pat-c", "Smith", ["Carla"],
             [{"system": "urn:other", "value": "MRN-1"}, {"value": "X-7"}], "female", "1990-01-15"),
    _patient("pat-d", "Anderson", ["Nuno"], [{"system": "urn:mrn", "value": "X-7"}]),
    *[{"resourceType": "Practitioner", "id": id_, "identifier": [{"system": "urn:npi",
                                                                  "value": npi}],
       "name": [{"family": family, "given": [given]}]}
      for id_, npi, family, given in [("prac-1", "111", "House", "Gregory"),
                                      ("prac-2", "222", "Wilson", "James")]],
    # Observations: stored in this order, so id order differs from date order (4, 1, 2, 3).
    _obs("obs-1", "Patient/pat-a", "final", cc(LOINC, "8867-4"), "vital-signs",
         effectiveDateTime="2024-01-10T08:00:00Z"),
    _obs("obs-2", "Patient/pat-a", "preliminary", cc(LOINC, "2339-0"), "laboratory",
         effectiveDateTime="2024-02-15T09:30:00Z"),
    _obs("obs-3", "Patient/pat-b", "final", cc(LOINC, "8867-4"), "vital-signs",
         effectiveDateTime="2024-03-01"),
    _obs("obs-4", "Group/grp-1", "final", cc("http://example.org/local", "8867-4"),
         "laboratory", effectiveDateTime="2023-12-31T23:00:00Z"),
    _obs("obs-5", "Patient/pat-c", "amended", cc(None, "8867-4")),
    _appt("appt-1", "booked", "2024-05-01T10:00:00Z", "2024-05-01T10:30:00Z",
          "Patient/pat-a", "Practitioner/prac-1"),
    _appt("appt-2", "cancelled", "2024-05-02T10:00:00Z", "2024-05-02T10:30:00Z",
          "Patient/pat-b", "Practitioner/prac-1"),
    _appt("appt-3", "booked", "2024-06-01T09:00:00Z", "2024-06-01T09:30:00Z",
          "Patient/pat-a", "Practitioner/prac-2"),
    {"resourceType": "Schedule", "id": "sch-1", "actor": [ref("Practitioner/prac-1")]},
    {"resourceType": "Schedule", "id": "sch-2",
     "actor": [ref("Practitioner/prac-2"), ref("Location/loc-1")]},
    _slot("slot-1", "Schedule/sch-1", "free", "2024-07-01T09:00:00Z", "2024-07-01T09:30:00Z"),
    _slot("slot-2", "Schedule/sch-1", "busy", "2024-07-01T10:00:00Z", "2024-07-01T10:30:00Z"),
    _slot("slot-3", "Schedule/sch-2", "free", "2024-07-02T09:00:00Z", "2024-07-02T09:30:00Z"),
    {"resourceType": "Medication", "id": "med-1",
     "code": cc("http://www.nlm.nih.gov/research/umls/rxnorm", "197361")},
    {"resourceType": "MedicationRequest", "id": "mr-1", "status": "active", "intent": "order",
     "subject": ref("Patient/pat-a"), "medicationReference": ref("Medication/med-1"),
     "authoredOn": "2024-03-10"},
    {"resourceType": "MedicationRequest", "id": "mr-2", "status": "stopped", "intent": "plan",
     "subject": ref("Patient/pat-a"), "medicationCodeableConcept": {"text": "aspirin"},
     "authoredOn": "2024-04-01"},
    {"resourceType": "MedicationRequest", "id": "mr-3", "status": "active", "intent": "proposal",
     "subject": ref("Patient/pat-b"), "medicationReference": ref("Medication/med-1"),
     "authoredOn": "2024-03-20T12:00:00Z"},
    _comm("com-1", "completed", "Patient/pat-a", "Practitioner/prac-1", ["Patient/pat-a"],
          "2024-08-01T10:00:00Z", "2024-08-01T10:05:00Z"),
    _comm("com-2", "completed", "Patient/pat-a", "Patient/pat-a", ["Practitioner/prac-1"],
          "2024-08-02T08:00:00Z", "2024-08-03T08:00:00Z", part_of="Communication/com-1"),
    _comm("com-3", "in-progress", "Patient/pat-b", "Practitioner/prac-2",
          ["Patient/pat-b", "Practitioner/prac-1"], "2024-09-01"),
    {"resourceType": "Task", "id": "task-1", "status": "requested", "intent": "order",
     "for": ref("Patient/pat-a"), "focus": ref("MedicationRequest/mr-1"),
     "owner": ref("Practitioner/prac-1")},
    {"resourceType": "Task", "id": "task-2", "status": "completed", "intent": "order",
     "for": ref("Patient/pat-b"), "focus": ref("Communication/com-3"),
     "owner": ref("Practitioner/prac-2")},
    {"resourceType": "Task", "id": "task-3", "status": "requested", "intent": "order",
     "for": ref("Patient/pat-a"), "owner": ref("Organization/org-1")},
    {"resourceType": "Invoice", "id": "inv-1", "status": "issued",
     "subject": ref("Patient/pat-a"), "date": "2024-02-01"},
    {"resourceType": "Invoice", "id": "inv-2", "status": "balanced",
     "subject": ref("Patient/pat-a"), "date": "2024-05-01T12:00:00Z"},
    {"resourceType": "Invoice", "id": "inv-3", "status": "issued",
     "subject": ref("Group/grp-1"), "date": "2023-11-11"},
    {"resourceType": "Account", "id": "acc-1", "status": "active",
     "subject": [ref("Patient/pat-a")]},
    {"resourceType": "Account", "id": "acc-2", "status": "active",
     "subject": [ref("Patient/pat-b")]},
    {"resourceType": "Immunization", "id": "imm-1", "status": "completed",
     "vaccineCode": cc("http://hl7.org/fhir/sid/cvx", "08"), "patient": ref("Patient/pat-a"),
     "occurrenceDateTime": "2021-05-01"},
    {"resourceType": "Immunization", "id": "imm-2", "status": "completed",
     "vaccineCode": cc("http://hl7.org/fhir/sid/cvx", "140"), "patient": ref("Patient/pat-a"),
     "occurrenceDateTime": "2023-10-15"},
    {"resourceType": "Immunization", "id": "imm-3", "status": "completed",
     "vaccineCode": cc("http://hl7.org/fhir/sid/cvx", "140"), "patient": ref("Patient/pat-b"),
     "occurrenceDateTime": "2023-10-20"},
    {"resourceType": "Condition", "id": "cond-1", "subject": ref("Patient/pat-a"),
     "clinicalStatus": cc(CONDITION_CLINICAL, "active"),
     "category": [cc(CONDITION_CATEGORY, "problem-list-item")]},
    {"resourceType": "Condition", "id": "cond-2", "subject": ref("Patient/pat-a"),
     "clinicalStatus": cc(CONDITION_CLINICAL, "resolved"),
     "category": [cc(CONDITION_CATEGORY, "encounter-diagnosis")]},
    {"resourceType": "Condition", "id": "cond-3", "subject": ref("Patient/pat-b"),
     "clinicalStatus": cc(CONDITION_CLINICAL, "active"),
     "category": [cc(CONDITION_CATEGORY, "encounter-diagnosis")]},
    {"resourceType": "AllergyIntolerance", "id": "alg-1", "patient": ref("Patient/pat-a")},
    {"resourceType": "AllergyIntolerance", "id": "alg-2", "patient": ref("Patient/pat-c")},
    {"resourceType": "DiagnosticReport", "id": "dr-1", "status": "final",
     "subject": ref("Patient/pat-a"), "category": [cc(V2_0074, "LAB")],
     "code": cc(LOINC, "58410-2"), "effectiveDateTime": "2024-02-15T10:00:00Z"},
    {"resourceType": "DiagnosticReport", "id": "dr-2", "status": "final",
     "subject": ref("Patient/pat-a"), "category": [cc(V2_0074, "RAD")],
     "code": cc(LOINC, "36643-5"), "effectiveDateTime": "2024-04-01"},
    {"resourceType": "DiagnosticReport", "id": "dr-3", "status": "preliminary",
     "subject": ref("Patient/pat-b"), "category": [cc(V2_0074, "LAB")],
     "code": cc(LOINC, "58410-2"),
     "effectivePeriod": {"start": "2024-04-10", "end": "2024-04-12"}},
    {"resourceType": "Encounter", "id": "enc-1", "status": "finished",
     "class": {"system": ACT_CODE, "code": "AMB"}, "subject": ref("Patient/pat-a"),
     "period": {"start": "2024-01-10T08:00:00Z", "end": "2024-01-10T09:00:00Z"}},
    {"resourceType": "Encounter", "id": "enc-2", "status": "finished",
     "class": {"system": ACT_CODE, "code": "IMP"}, "subject": ref("Patient/pat-a"),
     "period": {"start": "2024-03-01", "end": "2024-03-05"}},
    {"resourceType": "Encounter", "id": "enc-3", "status": "in-progress",
     "class": {"system": ACT_CODE, "code": "AMB"}, "subject": ref("Patient/pat-b"),
     "period": {"start": "2024-06-01T10:00:00Z"}},
    *[{"resourceType": "DocumentReference", "id": id_, "status": "current",
       "subject": ref(subject), "category": [cc(system, code)],
       "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}]}
      for id_, subject, system, code in [
          ("doc-1", "Patient/pat-a", DOC_CATEGORY, "clinical-note"),
          ("doc-2", "Patient/pat-b", DOC_CATEGORY, "clinical-note"),
          ("doc-3", "Patient/pat-a", "http://example.org/doc-category", "discharge")]],
]
OBS_2 = next(r for r in DATASET if r["id"] == "obs-2")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def loaded(request, tmp_path_factory) -> Iterator[LiveGateway]:
    """A gateway holding DATASET; obs-2 is then updated, so it is the last one changed."""
    data = tmp_path_factory.mktemp("search")
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{data / 'ehr.sqlite3'}"
    else:
        url, drop = make_pg_database(request.getfixturevalue("pg_server"))
    live, stop = start_live_gateway(data / "data", url)
    try:
        transaction(live, DATASET)
        assert live.put("Observation/obs-2", OBS_2).status_code == 200
        yield live
    finally:
        stop()
        if drop:
            drop()


# -- one table: (query, the ids it must match) ----------------------------------------------

CASES: list[tuple[str, str]] = [
    # Patient: _id, identifier (token forms), strings, dates, gender, :missing, :not, OR, AND
    ("Patient?_id=pat-a", "pat-a"),
    ("Patient?_id=pat-a,pat-c", "pat-a pat-c"),
    ("Patient?identifier=urn:mrn|MRN-1", "pat-a"),
    ("Patient?identifier=MRN-1", "pat-a pat-c"),
    ("Patient?identifier=urn:mrn|", "pat-a pat-b pat-d"),
    ("Patient?identifier=|X-7", "pat-c"),
    ("Patient?identifier=X-7", "pat-c pat-d"),
    ("Patient?identifier=urn:other|MRN-1,urn:mrn|MRN-2", "pat-b pat-c"),
    ("Patient?name=an", "pat-a pat-d"),
    ("Patient?name=CARLA", "pat-c"),
    ("Patient?name=maria", "pat-a"),
    ("Patient?family=nun", "pat-a pat-b"),
    ("Patient?family=NÚÑ", "pat-a pat-b"),
    ("Patient?family=nunez", "pat-a"),
    ("Patient?family=unez", ""),
    ("Patient?family=n_n", ""),
    ("Patient?family=%", ""),
    ("Patient?family:exact=Núñez", "pat-a"),
    ("Patient?family:exact=Núñ", ""),
    ("Patient?family:exact=nunez", ""),
    ("Patient?family:contains=ERSO", "pat-d"),
    ("Patient?name:contains=arí", "pat-a"),
    ("Patient?given=nu", "pat-d"),
    ("Patient?given=ana,bob", "pat-a pat-b"),
    ("Patient?given=ana&given=mar", "pat-a"),  # both given names of one HumanName
    ("Patient?given=ana&given=bob", ""),
    ("Patient?birthdate=1961-04-02", "pat-a"),
    ("Patient?birthdate=1975", "pat-b"),
    ("Patient?birthdate=ge1975-10-20", "pat-b pat-c"),
    ("Patient?birthdate=gt1975-10-20", "pat-c"),
    ("Patient?birthdate=le1975-10-20", "pat-a pat-b"),
    ("Patient?birthdate=lt1975-10-20", "pat-a"),
    ("Patient?birthdate=ge1970&birthdate=le1980", "pat-b"),
    ("Patient?birthdate:missing=true", "pat-d"),
    ("Patient?birthdate:missing=false", "pat-a pat-b pat-c"),
    ("Patient?gender=female", "pat-a pat-c"),
    ("Patient?gender=male,other", "pat-b"),
    ("Patient?gender:not=female", "pat-b pat-d"),
    ("Patient?gender:missing=true", "pat-d"),
    ("Patient?family=nun&gender=female", "pat-a"),
    # Practitioner
    ("Practitioner?name=greg", "prac-1"),
    ("Practitioner?name=WILS", "prac-2"),
    ("Practitioner?identifier=urn:npi|222", "prac-2"),
    ("Practitioner?identifier=111", "prac-1"),
    # Observation: reference forms, tokens, dates with prefixes, status, _lastUpdated
    ("Observation?patient=pat-a", "obs-1 obs-2"),
    ("Observation?patient=Patient/pat-a", "obs-1 obs-2"),
    ("Observation?patient={base}/Patient/pat-a", "obs-1 obs-2"),
    ("Observation?patient=pat-a,pat-b", "obs-1 obs-2 obs-3"),
    ("Observation?patient=grp-1", ""),
    ("Observation?subject=Group/grp-1", "obs-4"),
    ("Observation?subject=grp-1", "obs-4"),
    ("Observation?subject=Patient/pat-b", "obs-3"),
    ("Observation?category=vital-signs", "obs-1 obs-3"),
    (f"Observation?category={OBS_CATEGORY}|laboratory", "obs-2 obs-4"),
    ("Observation?category:missing=true", "obs-5"),
    (f"Observation?code={LOINC}|8867-4", "obs-1 obs-3"),
    ("Observation?code=8867-4", "obs-1 obs-3 obs-4 obs-5"),
    ("Observation?code=http://example.org/local|", "obs-4"),
    ("Observation?code=|8867-4", "obs-5"),
    (f"Observation?code={LOINC}|8867-4,{LOINC}|2339-0", "obs-1 obs-2 obs-3"),
    (f"Observation?code:not={LOINC}|8867-4", "obs-2 obs-4 obs-5"),
    ("Observation?code=8867-4&patient=pat-a", "obs-1"),
    ("Observation?date=2024-01-10", "obs-1"),
    ("Observation?date=eq2024-02", "obs-2"),
    ("Observation?date=2024", "obs-1 obs-2 obs-3"),
    ("Observation?date=2024-01-10T08:00:00Z", "obs-1"),
    ("Observation?date=2024-01-10T09:00:00+01:00", "obs-1"),
    ("Observation?date=ge2024-02-15", "obs-2 obs-3"),
    ("Observation?date=gt2024-02-15", "obs-3"),
    ("Observation?date=le2024-01-10", "obs-1 obs-4"),
    ("Observation?date=lt2024-01-10", "obs-4"),
    ("Observation?date=ge2024-01&date=lt2024-03", "obs-1 obs-2"),
    ("Observation?date:missing=true", "obs-5"),
    ("Observation?status=final", "obs-1 obs-3 obs-4"),
    ("Observation?status=final,amended", "obs-1 obs-3 obs-4 obs-5"),
    ("Observation?status:not=final", "obs-2 obs-5"),
    ("Observation?_lastUpdated=lt2000-01-01", ""),
    ("Observation?_lastUpdated=ge2000-01-01&status=final", "obs-1 obs-3 obs-4"),
    # Appointment
    ("Appointment?patient=pat-a", "appt-1 appt-3"),
    ("Appointment?patient=Patient/pat-b", "appt-2"),
    ("Appointment?actor=Practitioner/prac-1", "appt-1 appt-2"),
    ("Appointment?actor=pat-b", "appt-2"),
    ("Appointment?date=2024-05", "appt-1 appt-2"),
    ("Appointment?date=ge2024-05-02", "appt-2 appt-3"),
    ("Appointment?status=booked", "appt-1 appt-3"),
    ("Appointment?patient=pat-a&date=lt2024-06", "appt-1"),
    ("Appointment?actor=Practitioner/prac-1&status=booked", "appt-1"),
    # Schedule and Slot
    ("Schedule?actor=Practitioner/prac-1", "sch-1"),
    ("Schedule?actor=loc-1", "sch-2"),
    ("Slot?schedule=Schedule/sch-1", "slot-1 slot-2"),
    ("Slot?schedule=sch-2", "slot-3"),
    ("Slot?start=2024-07-01", "slot-1 slot-2"),
    ("Slot?start=ge2024-07-01T10:00:00Z", "slot-2 slot-3"),
    ("Slot?status=free", "slot-1 slot-3"),
    ("Slot?schedule=sch-1&status=free", "slot-1"),
    # MedicationRequest
    ("MedicationRequest?patient=pat-a", "mr-1 mr-2"),
    ("MedicationRequest?intent=order", "mr-1"),
    ("MedicationRequest?intent=order,proposal", "mr-1 mr-3"),
    ("MedicationRequest?status=active", "mr-1 mr-3"),
    ("MedicationRequest?authoredon=2024-03", "mr-1 mr-3"),
    ("MedicationRequest?authoredon=lt2024-03-15", "mr-1"),
    # Communication
    ("Communication?patient=pat-a", "com-1 com-2"),
    ("Communication?subject=Patient/pat-b", "com-3"),
    ("Communication?sender=Practitioner/prac-1", "com-1"),
    ("Communication?sender=pat-a", "com-2"),
    ("Communication?recipient=Practitioner/prac-1", "com-2 com-3"),
    ("Communication?part-of=Communication/com-1", "com-2"),
    ("Communication?part-of=com-1", "com-2"),
    ("Communication?sent=2024-08", "com-1 com-2"),
    ("Communication?sent=gt2024-08-01", "com-2 com-3"),
    ("Communication?received=2024-08-03", "com-2"),
    ("Communication?received:missing=true", "com-3"),
    ("Communication?part-of:missing=false", "com-2"),
    # Task
    ("Task?patient=pat-a", "task-1 task-3"),
    ("Task?focus=MedicationRequest/mr-1", "task-1"),
    ("Task?owner=Practitioner/prac-2", "task-2"),
    ("Task?owner=org-1", "task-3"),
    ("Task?status=requested", "task-1 task-3"),
    ("Task?status:not=requested", "task-2"),
    # Invoice, Account
    ("Invoice?patient=pat-a", "inv-1 inv-2"),
    ("Invoice?subject=Group/grp-1", "inv-3"),
    ("Invoice?status=issued", "inv-1 inv-3"),
    ("Invoice?date=ge2024", "inv-1 inv-2"),
    ("Invoice?date=2024-05-01", "inv-2"),
    ("Account?patient=pat-a", "acc-1"),
    ("Account?patient=Patient/pat-b", "acc-2"),
    # Immunization
    ("Immunization?patient=pat-a", "imm-1 imm-2"),
    ("Immunization?date=2023-10", "imm-2 imm-3"),
    ("Immunization?date=lt2022", "imm-1"),
    ("Immunization?patient=pat-a&date=ge2023", "imm-2"),
    # Condition, AllergyIntolerance
    ("Condition?patient=pat-a", "cond-1 cond-2"),
    ("Condition?clinical-status=active", "cond-1 cond-3"),
    (f"Condition?clinical-status={CONDITION_CLINICAL}|resolved", "cond-2"),
    ("Condition?category=encounter-diagnosis", "cond-2 cond-3"),
    ("Condition?patient=pat-a&clinical-status=active", "cond-1"),
    ("AllergyIntolerance?patient=pat-c", "alg-2"),
    ("AllergyIntolerance?patient=Patient/pat-a", "alg-1"),
    # DiagnosticReport
    ("DiagnosticReport?patient=pat-a", "dr-1 dr-2"),
    ("DiagnosticReport?category=LAB", "dr-1 dr-3"),
    (f"DiagnosticReport?code={LOINC}|58410-2", "dr-1 dr-3"),
    ("DiagnosticReport?date=2024-04", "dr-2 dr-3"),
    ("DiagnosticReport?date=ge2024-04-05", "dr-3"),
    ("DiagnosticReport?date=lt2024-03", "dr-1"),
    # Encounter
    ("Encounter?patient=pat-a", "enc-1 enc-2"),
    ("Encounter?class=AMB", "enc-1 enc-3"),
    (f"Encounter?class={ACT_CODE}|IMP", "enc-2"),
    ("Encounter?date=2024-01-10", "enc-1"),
    ("Encounter?date=ge2024-03-03", "enc-2 enc-3"),
    ("Encounter?date=lt2024-03-01", "enc-1"),
    # DocumentReference
    ("DocumentReference?patient=pat-a", "doc-1 doc-3"),
    ("DocumentReference?category=clinical-note", "doc-1 doc-2"),
    ("DocumentReference?patient=pat-a&category=clinical-note", "doc-1"),
]


@pytest.mark.parametrize(("query", "expected"), [pytest.param(q, e, id=q) for q, e in CASES])
def test_search_matches(loaded, query, expected):
    """GET and POST _search find exactly the expected resources, with a matching total."""
    want = sorted(expected.split())
    for method in ("GET", "POST"):
        bundle = search(loaded, query, method)
        assert sorted(match_ids(bundle)) == want, method
        assert bundle["total"] == len(want), method
        assert {e["search"]["mode"] for e in bundle.get("entry", [])} <= {"match"}, method
        assert link(bundle, "self")


INCLUDES = [
    ("Observation?_id=obs-1,obs-3&_include=Observation:patient", "obs-1 obs-3",
     {"Patient/pat-a", "Patient/pat-b"}),
    ("Observation?_id=obs-1,obs-4&_include=Observation:subject:Patient", "obs-1 obs-4",
     {"Patient/pat-a"}),
    ("Patient?_id=pat-a&_revinclude=Observation:patient", "pat-a",
     {"Observation/obs-1", "Observation/obs-2"}),
    ("Patient?_id=pat-b&_revinclude=Observation:patient&_revinclude=Appointment:patient",
     "pat-b", {"Observation/obs-3", "Appointment/appt-2"}),
    ("Communication?_id=com-1&_revinclude=Communication:part-of", "com-1",
     {"Communication/com-2"}),
    ("MedicationRequest?patient=pat-a&_include=MedicationRequest:medication", "mr-1 mr-2",
     {"Medication/med-1"}),
    ("MedicationRequest?_id=mr-2&_include=MedicationRequest:medication", "mr-2", set()),
]


@pytest.mark.parametrize(("query", "matches", "includes"),
                         [pytest.param(*row, id=row[0]) for row in INCLUDES])
def test_include_revinclude(loaded, query, matches, includes):
    """Included resources come as `include` entries, uncounted in `total`."""
    for method in ("GET", "POST"):
        bundle = search(loaded, query, method)
        assert sorted(match_ids(bundle)) == sorted(matches.split()), method
        assert included(bundle) == includes, method
        assert bundle["total"] == len(matches.split()), method
        for entry in bundle["entry"]:
            res = entry["resource"]
            assert entry["fullUrl"] == f"{loaded.base}/{res['resourceType']}/{res['id']}"


SORTS = [
    ("Observation?date=ge2000&_sort=date", "obs-4 obs-1 obs-2 obs-3"),
    ("Observation?date=ge2000&_sort=-date", "obs-3 obs-2 obs-1 obs-4"),
    ("Observation?_sort=_lastUpdated", "obs-1 obs-3 obs-4 obs-5 obs-2"),
    ("Observation?_sort=-_lastUpdated", "obs-2 obs-5 obs-4 obs-3 obs-1"),
    ("Communication?_sort=-sent", "com-3 com-2 com-1"),
    ("Encounter?_sort=-date", "enc-3 enc-2 enc-1"),
]


@pytest.mark.parametrize(("query", "order"), [pytest.param(q, o, id=q) for q, o in SORTS])
def test_sort_order(loaded, query, order):
    """`_sort` orders the whole result; the data is stored so that no other order agrees."""
    for method in ("GET", "POST"):
        assert match_ids(search(loaded, query, method)) == order.split(), method


OTHERS = "obs-1 obs-3 obs-4 obs-5"


@pytest.mark.parametrize(("prefix", "expected"), [
    ("", "obs-2"), ("eq", "obs-2"), ("ge", "obs-2"), ("gt", ""), ("lt", OTHERS),
    ("le", f"{OTHERS} obs-2"),
])
def test_last_updated_of_a_resource(loaded, prefix, expected):
    """obs-2 was updated after the load, so its own `meta.lastUpdated` (an instant to the
    millisecond, as the server writes it) splits it from the others."""
    stamp = search(loaded, "Observation?_id=obs-2")["entry"][0]["resource"]["meta"]["lastUpdated"]
    for method in ("GET", "POST"):
        bundle = search(loaded, f"Observation?_lastUpdated={prefix}{stamp}", method)
        assert sorted(match_ids(bundle)) == sorted(expected.split()), method


def test_post_search_combines_url_and_body(loaded):
    """POST _search takes parameters from the URL and the form body together (ANDed)."""
    resp = loaded.post("Observation/_search?status=final", content="patient=pat-a",
                       headers={"Content-Type": FORM})
    assert resp.status_code == 200, resp.text
    assert match_ids(resp.json()) == ["obs-1"]


@pytest.mark.parametrize("query", ["Observation?status=final&_summary=count",
                                   "Observation?status=final&_count=0"])
def test_summary_count(loaded, query):
    """`_summary=count` and `_count=0` give the total and no entries."""
    for method in ("GET", "POST"):
        bundle = search(loaded, query, method)
        assert bundle["total"] == 3
        assert "entry" not in bundle
        assert link(bundle, "next") is None


def test_count_limits_page_size(loaded):
    bundle = search(loaded, "Observation?_count=2")
    assert len(match_ids(bundle)) == 2
    assert bundle["total"] == 5
    assert link(bundle, "next") is not None
    assert link(bundle, "previous") is None
    whole = search(loaded, "Observation?_count=1000")
    assert len(match_ids(whole)) == 5 and link(whole, "next") is None


@pytest.mark.parametrize("query", [
    "Observation?_count=1001",
    "Observation?_count=-1",
    "Observation?_count=many",
    "Observation?date=2024-13-01",
    "Observation?date=xx2024",
    "Patient?gender:exact=female",
])
def test_bad_search_is_400(loaded, query):
    for method in ("GET", "POST"):
        search(loaded, query, method, status=400)


# -- paging (each test writes, so each has a fresh gateway) ---------------------------------

def load_paging_data(gw: LiveGateway) -> list[str]:
    """23 Observations of pat-p (dates in pairs, so `_sort=date` has ties), 4 of pat-q."""
    transaction(gw, [_patient("pat-p", "Paging", ["Pat"], []),
                     _patient("pat-q", "Other", ["Quinn"], [])])
    obs = [{"resourceType": "Observation", "status": "final", "code": cc(LOINC, "8867-4"),
            "subject": ref(f"Patient/pat-{'p' if i < 23 else 'q'}"),
            "effectiveDateTime": f"2024-01-{i % 12 + 1:02d}T00:00:00Z"} for i in range(27)]
    reply = transaction(gw, obs, method="POST")
    return [e["response"]["location"].split("/")[1] for e in reply["entry"][:23]]


def walk(gw: LiveGateway, bundle: dict, relation: str = "next",
         between=None) -> list[dict]:
    """Bundles from `bundle` on along `relation`; `between(pages)` runs before each step."""
    bundles = [bundle]
    while (url := link(bundle, relation)) is not None:
        if between:
            between([match_ids(b) for b in bundles])
        bundle = follow(gw, url)
        bundles.append(bundle)
        assert len(bundles) < 50, "paging does not end"
    return bundles


def pages_of(bundles: list[dict]) -> list[list[str]]:
    return [match_ids(b) for b in bundles]


def flat(pages: list[list[str]]) -> list[str]:
    return [i for page in pages for i in page]


def new_obs(gw: LiveGateway, patient: str, when: str) -> str:
    resp = gw.post("Observation", {"resourceType": "Observation", "status": "final",
                                   "code": cc(LOINC, "8867-4"), "subject": ref(patient),
                                   "effectiveDateTime": when})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_paging_forward_and_back(gateway, method):
    """23 matches in pages of 5: next links reach each once; previous links retrace them."""
    ids = load_paging_data(gateway)
    first = search(gateway, "Observation?patient=pat-p&_count=5", method)
    assert link(first, "previous") is None
    forward = walk(gateway, first)
    pages = pages_of(forward)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert sorted(flat(pages)) == sorted(ids)
    assert [b["total"] for b in forward] == [23] * 5
    backward = walk(gateway, forward[-1], "previous")
    assert pages_of(backward) == pages[::-1]
    assert link(backward[-1], "previous") is None


@pytest.mark.parametrize("sort", ["date", "-date", "_lastUpdated", "-_lastUpdated"])
def test_paging_sorted_with_ties(gateway, sort):
    """Sorted paging over equal sort keys: each match once, in the sort's order, both ways."""
    ids = load_paging_data(gateway)
    every = search(gateway, f"Observation?patient=pat-p&_sort={sort}&_count=100")
    expected = match_ids(every)
    assert sorted(expected) == sorted(ids)
    if sort.endswith("date"):
        dates = [e["resource"]["effectiveDateTime"] for e in every["entry"]]
        assert dates == sorted(dates, reverse=sort.startswith("-"))
    forward = walk(gateway, search(gateway, f"Observation?patient=pat-p&_sort={sort}&_count=4"))
    assert flat(pages_of(forward)) == expected
    backward = walk(gateway, forward[-1], "previous")
    assert flat(pages_of(backward)[::-1]) == expected


def test_paging_stable_under_writes(gateway):
    """Mid-walk, a new match comes last (or not at all), one deleted ahead is not shown and one
    updated behind is not shown again."""
    ids = load_paging_data(gateway)
    made: list[str] = []

    def write(pages: list[list[str]]) -> None:
        if len(pages) == 2:
            made.append(new_obs(gateway, "Patient/pat-p", "2024-06-01T00:00:00Z"))
            unseen = [i for i in ids if i not in flat(pages)]
            assert gateway.delete(f"Observation/{unseen[-1]}").status_code == 204
            made.append(unseen[-1])
            seen = gateway.get(f"Observation/{pages[0][0]}").json()
            assert gateway.put(f"Observation/{seen['id']}", seen).status_code == 200

    first = search(gateway, "Observation?patient=pat-p&_count=5")
    seen = flat(pages_of(walk(gateway, first, between=write)))
    new_id, deleted = made
    assert len(seen) == len(set(seen)), "a resource came twice"
    assert deleted not in seen
    assert set(seen) - {new_id} == set(ids) - {deleted}
    assert new_id not in seen or seen[-1] == new_id


def test_paging_sorted_stable_under_writes(gateway):
    """With `_sort=date`, a match sorting before the cursor is not shown, one after comes last."""
    ids = load_paging_data(gateway)
    made: list[str] = []

    def write(pages: list[list[str]]) -> None:
        if len(pages) == 2:
            made.extend(new_obs(gateway, "Patient/pat-p", day)
                        for day in ("2023-01-01", "2025-01-01"))

    first = search(gateway, "Observation?patient=pat-p&_sort=date&_count=5")
    seen = flat(pages_of(walk(gateway, first, between=write)))
    early, late = made
    assert len(seen) == len(set(seen)), "a resource came twice"
    assert early not in seen
    assert seen[-1] == late
    assert sorted(seen[:-1]) == sorted(ids)


def test_cursor_is_bound_to_its_search(gateway):
    """A next link's cursor pasted onto another search is refused."""
    load_paging_data(gateway)
    first = search(gateway, "Observation?patient=pat-p&_count=5")
    cursor = parse_qs(urlsplit(link(first, "next")).query)["_cursor"][0]
    resp = gateway.get("Observation", params={"patient": "pat-q", "_count": "5",
                                              "_cursor": cursor})
    assert resp.status_code == 400
    assert resp.json()["resourceType"] == "OperationOutcome"
