"""The synthetic clinic generator: determinism, validity, referential integrity and the content
the portal features rely on (vital-sign series, labs, refills, slots, messages, balances)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
from collections import Counter, defaultdict

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhir_gateway.synthetic import generate
from mappings import terminology as term

TODAY = dt.date(2025, 3, 14)  # a Friday
CLINIC_TZ = dt.timezone(dt.timedelta(hours=-5))
PATIENTS = 4
SEED = 7
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
DATETIME_WITH_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$")


@pytest.fixture(scope="module")
def resources() -> list[dict]:
    return generate(PATIENTS, SEED, TODAY)


@pytest.fixture(scope="module")
def by_type(resources) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in resources:
        out[r["resourceType"]].append(r)
    return out


@pytest.fixture(scope="module")
def index(resources) -> dict[str, dict]:
    return {f"{r['resourceType']}/{r['id']}": r for r in resources}


def _references(node: object):
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node["reference"]
        for key, value in node.items():
            if key != "reference":
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _strings(node: object):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def _of(items: list[dict], patient_id: str, key: str = "subject") -> list[dict]:
    return [r for r in items if r.get(key, {}).get("reference") == f"Patient/{patient_id}"]


def _code(concept: dict, system: str) -> str | None:
    return next((c["code"] for c in concept.get("coding", []) if c["system"] == system), None)


def _when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def _start_of_today() -> dt.datetime:
    return dt.datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=CLINIC_TZ)


def _is_telehealth(concepts: list[dict]) -> bool:
    return any(_code(c, term.SNOMED) == term.TELEHEALTH_SERVICE_TYPE.code for c in concepts)


# --- Determinism, validity, integrity --------------------------------------------------------

def test_same_arguments_give_identical_output():
    first = json.dumps(generate(3, SEED, TODAY))
    assert first == json.dumps(generate(3, SEED, TODAY))
    assert first != json.dumps(generate(3, SEED + 1, TODAY))
    assert first != json.dumps(generate(3, SEED, TODAY + dt.timedelta(days=1)))


def test_a_patient_does_not_depend_on_how_many_follow(resources):
    def own(items: list[dict]) -> list[dict]:  # everything but the clinic's resources
        first = next(i for i, r in enumerate(items) if r["resourceType"] == "Patient")
        return items[first:]

    fewer = own(generate(2, SEED, TODAY))
    assert fewer == own(resources)[:len(fewer)]


def test_today_defaults_to_the_current_date():
    out = generate(1, 1)
    slots = [r for r in out if r["resourceType"] == "Slot"]
    assert min(_when(s["start"]).date() for s in slots) > dt.date.today()


def test_every_resource_validates_as_r4b(resources):
    for r in resources:
        get_fhir_model_class(r["resourceType"]).model_validate(r)


def test_coded_values_are_in_their_required_value_sets(resources):
    from mappings.valuesets import binding_errors

    problems = [(r["id"], e) for r in resources for e in binding_errors(r)]
    assert problems == []


def test_ids_are_valid_and_unique_per_type(resources):
    seen = Counter((r["resourceType"], r["id"]) for r in resources)
    assert all(count == 1 for count in seen.values())
    assert all(ID_PATTERN.match(r["id"]) for r in resources)


def test_every_reference_resolves_to_an_earlier_resource(resources):
    emitted: set[str] = set()
    for r in resources:
        for target in _references(r):
            assert re.fullmatch(r"[A-Za-z]+/[A-Za-z0-9\-.]{1,64}", target), target
            assert target in emitted, f"{r['resourceType']}/{r['id']} -> {target}"
        emitted.add(f"{r['resourceType']}/{r['id']}")


def test_datetimes_carry_a_time_zone(resources):
    for r in resources:
        for value in _strings(r):
            if re.match(r"^\d{4}-\d{2}-\d{2}T", value):
                assert DATETIME_WITH_TIME.match(value), (r["id"], value)
                assert value.endswith("-05:00")


def test_one_hundred_patients_are_fast():
    started = time.perf_counter()
    out = generate(100, 1, TODAY)
    assert time.perf_counter() - started < 10
    assert sum(r["resourceType"] == "Patient" for r in out) == 100


# --- The clinic ------------------------------------------------------------------------------

def _npi_valid(value: str) -> bool:
    digits = [int(c) for c in "80840" + value]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return len(value) == 10 and total % 10 == 0


def test_clinic_organization_locations_and_practitioners(by_type):
    assert len(by_type["Organization"]) == 1
    assert 1 <= len(by_type["Location"]) <= 2
    practitioners = by_type["Practitioner"]
    assert len(practitioners) >= 3
    for p in practitioners:
        npis = [i["value"] for i in p["identifier"] if i["system"] == term.NPI]
        assert npis and _npi_valid(npis[0])
        assert p["name"][0]["family"] and p["name"][0]["given"]
        assert p["telecom"]
    roles = {r["practitioner"]["reference"]: r for r in by_type["PractitionerRole"]}
    assert set(roles) == {f"Practitioner/{p['id']}" for p in practitioners}
    for role in roles.values():
        systems = {c["system"] for c in role["specialty"][0]["coding"]}
        assert systems & {term.SNOMED, term.NUCC}
        assert role["availableTime"]


def test_schedules_and_free_weekday_slots_for_every_practitioner(by_type, index):
    schedules = {s["id"]: s for s in by_type["Schedule"]}
    owner = {}
    for s in schedules.values():
        actors = [a["reference"].split("/")[0] for a in s["actor"]]
        assert actors == ["Practitioner", "Location"]
        assert s["serviceType"] and s["specialty"]
        owner[s["id"]] = s["actor"][0]["reference"]
    assert sorted(owner.values()) == sorted(f"Practitioner/{p['id']}"
                                            for p in by_type["Practitioner"])
    free = Counter()
    for slot in by_type["Slot"]:
        start, end = _when(slot["start"]), _when(slot["end"])
        assert TODAY < start.date() <= TODAY + dt.timedelta(days=30)
        assert start.weekday() < 5
        assert end - start == dt.timedelta(minutes=30)
        if slot["status"] == "free":
            free[owner[slot["schedule"]["reference"].split("/")[1]]] += 1
    assert set(free) == set(owner.values())
    assert all(count >= 20 for count in free.values())


def test_exactly_one_practitioner_offers_telehealth_slots(by_type):
    owner = {s["id"]: s["actor"][0]["reference"] for s in by_type["Schedule"]}
    tele_owners = {owner[s["schedule"]["reference"].split("/")[1]] for s in by_type["Slot"]
                   if _is_telehealth(s["serviceType"])}
    assert len(tele_owners) == 1
    for slot in by_type["Slot"]:
        tele = _is_telehealth(slot["serviceType"])
        assert slot["serviceType"][0]["text"] == ("Telehealth visit" if tele else "Office visit")
        assert _code(slot["appointmentType"], term.APPOINTMENT_REASON) == "ROUTINE"
    tele_schedules = [s for s in by_type["Schedule"] if _is_telehealth(s["serviceType"])]
    assert [s["actor"][0]["reference"] for s in tele_schedules] == sorted(tele_owners)


# --- Patients --------------------------------------------------------------------------------

def test_patients_have_demographics_and_a_care_team(by_type, index):
    patients = by_type["Patient"]
    assert [p["id"] for p in patients] == [f"pat-{i:04d}" for i in range(1, PATIENTS + 1)]
    for p in patients:
        mrn = p["identifier"][0]
        assert mrn["system"] == term.CLINIC_MRN_SYSTEM and mrn["value"]
        assert p["name"][0]["family"] and p["name"][0]["given"]
        assert p["gender"] in ("male", "female")
        assert dt.date.fromisoformat(p["birthDate"]) < TODAY
        assert p["address"][0]["city"] and p["telecom"] and p["communication"]
        assert p["managingOrganization"]["reference"] == "Organization/org-01"
        gp = p["generalPractitioner"][0]["reference"]
        teams = _of(by_type["CareTeam"], p["id"])
        assert len(teams) == 1
        members = [m["member"]["reference"] for m in teams[0]["participant"]]
        assert gp in members
        assert all(m.startswith("Practitioner/") for m in members)


def test_conditions_allergies_and_immunizations(by_type):
    for p in by_type["Patient"]:
        conditions = _of(by_type["Condition"], p["id"])
        assert 1 <= len(conditions) <= 4
        for c in conditions:
            assert _code(c["code"], term.SNOMED) and _code(c["code"], term.ICD10CM)
            assert _code(c["category"][0], term.CONDITION_CATEGORY) == "problem-list-item"
            assert _code(c["clinicalStatus"], term.CONDITION_CLINICAL) in ("active", "resolved")
            assert dt.date.fromisoformat(c["onsetDateTime"]) < TODAY
        allergies = _of(by_type["AllergyIntolerance"], p["id"], "patient")
        assert len(allergies) <= 2
        for a in allergies:
            assert _code(a["code"], term.SNOMED) and a["reaction"][0]["manifestation"]
        shots = _of(by_type["Immunization"], p["id"], "patient")
        assert 3 <= len(shots) <= 6
        for s in shots:
            assert s["status"] == "completed" and _code(s["vaccineCode"], term.CVX)
            assert _when(s["occurrenceDateTime"]) < _start_of_today()
    assert by_type["AllergyIntolerance"], "some patient has an allergy"


def _series(observations: list[dict], loinc: str) -> list[dict]:
    out = [o for o in observations if _code(o["code"], term.LOINC) == loinc]
    return sorted(out, key=lambda o: o["effectiveDateTime"])


def test_vital_sign_series(by_type):
    year_ago = _start_of_today() - dt.timedelta(days=366)
    for p in by_type["Patient"]:
        vitals = [o for o in _of(by_type["Observation"], p["id"])
                  if _code(o["category"][0], term.OBSERVATION_CATEGORY) == "vital-signs"]
        for loinc in ("85354-9", "29463-7", "8867-4"):
            series = _series(vitals, loinc)
            assert len(series) >= 6, (p["id"], loinc)
            for o in series:
                assert o["status"] == "final"
                assert year_ago < _when(o["effectiveDateTime"]) < _start_of_today()
        for bp in _series(vitals, "85354-9"):
            assert "valueQuantity" not in bp
            parts = {_code(c["code"], term.LOINC): c["valueQuantity"] for c in bp["component"]}
            assert set(parts) == {"8480-6", "8462-4"}
            assert all(q["code"] == "mm[Hg]" and q["system"] == term.UCUM
                       for q in parts.values())
            assert parts["8480-6"]["value"] > parts["8462-4"]["value"]
        weights = [o["valueQuantity"] for o in _series(vitals, "29463-7")]
        assert all(w["code"] == "kg" for w in weights)
        values = [w["value"] for w in weights]
        assert max(values) - min(values) < 12  # a slow drift, not noise


def test_blood_pressure_improves_after_the_antihypertensive_starts(by_type, index):
    hypertensive = [c["subject"]["reference"].split("/")[1] for c in by_type["Condition"]
                    if _code(c["code"], term.SNOMED) == "38341003"]
    assert hypertensive
    for pid in hypertensive:
        lisinopril = [m for m in _of(by_type["MedicationRequest"], pid)
                      if m["status"] == "active" and _drug(m, index) == "314076"]
        started = min(_when(m["authoredOn"]) for m in lisinopril)
        series = _series(_of(by_type["Observation"], pid), "85354-9")
        systolic = [(_when(o["effectiveDateTime"]), o["component"][0]["valueQuantity"]["value"])
                    for o in series]
        before = [v for when, v in systolic if when <= started]
        after = [v for when, v in systolic if when > started]
        assert before and len(after) >= 3
        assert sum(after[-2:]) / 2 < sum(before) / len(before) - 10


def test_lab_results_have_ranges_interpretations_and_reports(by_type, index):
    labs = [o for o in by_type["Observation"]
            if _code(o["category"][0], term.OBSERVATION_CATEGORY) == "laboratory"]
    assert labs
    flags = Counter()
    for o in labs:
        value = o["valueQuantity"]["value"]
        rng = o["referenceRange"][0]
        assert rng["low"]["code"] == rng["high"]["code"] == o["valueQuantity"]["code"]
        assert rng["low"]["system"] == term.UCUM
        expected = term.interpretation(value, rng["low"]["value"], rng["high"]["value"])
        flag = _code(o["interpretation"][0], term.OBSERVATION_INTERPRETATION)
        assert flag == expected, o["id"]
        flags[flag] += 1
    assert flags["N"] and (flags["H"] or flags["L"])
    reported = set()
    for report in by_type["DiagnosticReport"]:
        assert _code(report["category"][0], term.DIAGNOSTIC_SERVICE_SECTION) == "LAB"
        assert report["status"] == "final" and report["issued"] and report["effectiveDateTime"]
        assert _code(report["code"], term.LOINC) in {p.loinc for p in term.LAB_PANELS.values()}
        for result in report["result"]:
            obs = index[result["reference"]]
            assert obs["subject"] == report["subject"]
            assert obs["encounter"] == report["encounter"]
            reported.add(result["reference"])
    panels = {_code(r["code"], term.LOINC) for r in by_type["DiagnosticReport"]}
    assert {"24323-8", "57698-3", "4548-4"} <= panels
    unreported = [o for o in labs if f"Observation/{o['id']}" not in reported]
    assert all(_code(o["code"], term.LOINC) == "2339-0" for o in unreported)


def test_encounters_are_finished_ambulatory_with_one_telehealth_visit(by_type, index):
    for p in by_type["Patient"]:
        encounters = _of(by_type["Encounter"], p["id"])
        classes = Counter(e["class"]["code"] for e in encounters)
        assert classes["VR"] == 1 and classes["AMB"] >= 6
        assert set(classes) == {"AMB", "VR"}
        for e in encounters:
            assert e["status"] == "finished"
            assert e["class"]["system"] == term.ACT_CODE
            assert e["participant"][0]["individual"]["reference"].startswith("Practitioner/")
            assert _when(e["period"]["end"]) < _start_of_today()
            appointment = index[e["appointment"][0]["reference"]]
            assert appointment["status"] == "fulfilled"
            assert appointment["start"] == e["period"]["start"]
            virtual = e["class"]["code"] == "VR"
            assert _is_telehealth(appointment["serviceType"]) == virtual


def _drug(request: dict, index: dict) -> str:
    if "medicationReference" in request:
        return _code(index[request["medicationReference"]["reference"]]["code"], term.RXNORM)
    return _code(request["medicationCodeableConcept"], term.RXNORM)


def test_medication_requests_cover_refill_states(by_type, index):
    requests = by_type["MedicationRequest"]
    for m in requests:
        assert m["intent"] == "order" and m["authoredOn"]
        assert m["requester"]["reference"].startswith("Practitioner/")
        assert m["subject"]["reference"].startswith("Patient/")
        assert m["dosageInstruction"][0]["text"]
        assert m["dispenseRequest"]["validityPeriod"]["start"]
        assert _drug(m, index) in {d.rxnorm for d in term.DRUGS.values()}
    active = [m for m in requests if m["status"] == "active"]
    with_refills = [m for m in active if m["dispenseRequest"]["numberOfRepeatsAllowed"] > 0]
    assert with_refills
    for m in with_refills:
        assert dt.date.fromisoformat(m["dispenseRequest"]["validityPeriod"]["end"]) > TODAY
    assert any(m["dispenseRequest"]["numberOfRepeatsAllowed"] == 0 for m in active)
    assert {"stopped", "completed"} <= {m["status"] for m in requests}
    by_reference = [m for m in requests if "medicationReference" in m]
    assert by_reference and any("medicationCodeableConcept" in m for m in requests)
    assert all(index[m["medicationReference"]["reference"]]["resourceType"] == "Medication"
               for m in by_reference)
    controlled = [m for m in requests if term.is_controlled(_drug(m, index))]
    assert controlled
    assert all(m["dispenseRequest"]["numberOfRepeatsAllowed"] == 0 for m in controlled)


def test_refill_tasks(by_type, index):
    assert by_type["Task"]
    for task in by_type["Task"]:
        assert task["status"] == "completed" and task["intent"] == "order"
        assert _code(task["code"], term.TASK_CODE) == "fulfill"
        request = index[task["focus"]["reference"]]
        assert request["resourceType"] == "MedicationRequest"
        assert task["for"] == request["subject"] == task["requester"]
        assert task["owner"]["reference"] == request["requester"]["reference"]
        assert task["authoredOn"] >= request["authoredOn"]


def test_booked_appointments_take_busy_slots(by_type, index):
    booked = [a for a in by_type["Appointment"] if a["status"] == "booked"]
    for p in by_type["Patient"]:
        assert 1 <= len(_of_participant(booked, p["id"])) <= 2
    taken = Counter()
    for appt in booked:
        slot = index[appt["slot"][0]["reference"]]
        taken[slot["id"]] += 1
        assert slot["status"] == "busy"
        assert (appt["start"], appt["end"]) == (slot["start"], slot["end"])
        assert _is_telehealth(appt["serviceType"]) == _is_telehealth(slot["serviceType"])
        assert appt["appointmentType"] == slot["appointmentType"]
        kinds = {p["actor"]["reference"].split("/")[0]: p["status"] for p in appt["participant"]}
        assert kinds == {"Patient": "accepted", "Practitioner": "accepted",
                         "Location": "accepted"}
        schedule = index[slot["schedule"]["reference"]]
        practitioner = next(p["actor"]["reference"] for p in appt["participant"]
                            if p["actor"]["reference"].startswith("Practitioner/"))
        assert schedule["actor"][0]["reference"] == practitioner
    busy = [s["id"] for s in by_type["Slot"] if s["status"] == "busy"]
    assert sorted(busy) == sorted(taken) and set(taken.values()) == {1}
    assert any(_is_telehealth(a["serviceType"]) for a in booked)


def _of_participant(appointments: list[dict], patient_id: str) -> list[dict]:
    return [a for a in appointments
            if any(p["actor"]["reference"] == f"Patient/{patient_id}" for p in a["participant"])]


def test_message_threads(by_type, index):
    comms = by_type["Communication"]
    headers = [c for c in comms if "partOf" not in c]
    assert len(headers) >= PATIENTS
    for header in headers:
        pid = header["subject"]["reference"]
        assert header["status"] == "completed" and header["topic"]["text"]
        team = {m["member"]["reference"] for t in by_type["CareTeam"]
                if t["subject"]["reference"] == pid for m in t["participant"]}
        messages = [c for c in comms
                    if c.get("partOf", [{}])[0].get("reference") == f"Communication/{header['id']}"]
        assert 2 <= len(messages) <= 4
        messages.sort(key=lambda c: c["sent"])
        assert "inResponseTo" not in messages[0]
        for prev, msg in zip(messages, messages[1:], strict=False):
            assert msg["inResponseTo"][0]["reference"] == f"Communication/{prev['id']}"
        for msg in messages:
            parties = {msg["sender"]["reference"]} | {r["reference"] for r in msg["recipient"]}
            assert pid in parties and (parties - {pid}) <= team and len(parties) == 2
            assert msg["payload"][0]["contentString"]
            assert _when(msg["sent"]) < _start_of_today()
        newest = messages[-1]
        assert newest["sender"]["reference"].startswith("Practitioner/")
        assert "received" not in newest
        assert all(_when(m["received"]) > _when(m["sent"]) for m in messages[:-1])
        assert header["sender"] == messages[0]["sender"]


def test_account_balance_matches_issued_invoices(by_type):
    for account in by_type["Account"]:
        assert account["status"] == "active" and account["name"] == "Patient account"
        assert account["owner"]["reference"] == "Organization/org-01"
        pid = account["subject"][0]["reference"]
        ext = next(e for e in account["extension"] if e["url"] == term.ACCOUNT_BALANCE_EXTENSION)
        parts = {e["url"]: e for e in ext["extension"]}
        amount = parts["amount"]["valueMoney"]
        invoices = [i for i in by_type["Invoice"] if i["subject"]["reference"] == pid]
        assert 1 <= len(invoices) <= 3
        for inv in invoices:
            assert inv["account"]["reference"] == f"Account/{account['id']}"
            assert inv["status"] in ("issued", "balanced")
            lines = sum(pc["amount"]["value"] for li in inv["lineItem"]
                        for pc in li["priceComponent"])
            assert round(lines, 2) == inv["totalNet"]["value"] == inv["totalGross"]["value"]
            assert inv["totalGross"]["currency"] == "USD"
        due = round(sum(i["totalGross"]["value"] for i in invoices if i["status"] == "issued"), 2)
        assert amount == {"value": due, "currency": "USD"} and due > 0


def test_progress_notes(by_type, index):
    for p in by_type["Patient"]:
        docs = _of(by_type["DocumentReference"], p["id"])
        assert docs
        for doc in docs:
            assert doc["status"] == "current"
            assert _code(doc["type"], term.LOINC) == "11506-3"
            assert _code(doc["category"][0], term.US_CORE_DOCREF_CATEGORY) == "clinical-note"
            attachment = doc["content"][0]["attachment"]
            assert attachment["contentType"] == "text/plain"
            text = base64.b64decode(attachment["data"]).decode("utf-8")
            assert p["name"][0]["family"] in text
            assert doc["author"][0]["reference"].startswith("Practitioner/")
            assert index[doc["context"]["encounter"][0]["reference"]]["subject"]["reference"] \
                == f"Patient/{p['id']}"
