"""Appointment scheduling ($find, $hold, $book, $reschedule, $cancel) over HTTP with SMART
patient tokens, checked against what the store holds; refusals change nothing; concurrent
bookings of one slot give one booking; a property test over book/reschedule/cancel sequences.

The seeded clinic's slots lie around 2026-06-15 (the past by the time these tests run), so each
test adds its own future Slots on the seeded Schedules (`sched-01` in person, `sched-05`
telehealth), each at its own time so that no two tests' bookings overlap.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.embedded import EmbeddedAdapter
from fhir_gateway.config import Config
from fhir_gateway.paging import CursorSigner
from fhir_gateway.request import FhirRequest
from fhir_gateway.service import FhirService
from mappings.portal import scheduling as sched
from mappings.terminology import SNOMED, TELEHEALTH_SERVICE_TYPE

FHIR_JSON = "application/fhir+json"
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
# Every slot gets its own 30 minutes, from three days ahead (outside the cancellation window)
_times = itertools.count()
_ids = itertools.count(1)
IN_PERSON = {"coding": [{"system": SNOMED, "code": "11429006",
                         "display": "Consultation (procedure)"}], "text": "Office visit"}
TELEHEALTH = {"coding": [{"system": TELEHEALTH_SERVICE_TYPE.system,
                          "code": TELEHEALTH_SERVICE_TYPE.code,
                          "display": TELEHEALTH_SERVICE_TYPE.display}],
              "text": "Telehealth visit"}


def slot_body(start: datetime, *, tele: bool = False, schedule: str | None = None,
              status: str = "free") -> dict:
    return {
        "resourceType": "Slot", "id": f"tslot-{next(_ids):04d}-{uuid.uuid4().hex[:6]}",
        "serviceType": [TELEHEALTH if tele else IN_PERSON],
        "schedule": {"reference": f"Schedule/{schedule or ('sched-05' if tele else 'sched-01')}"},
        "status": status, "start": sched.instant(start),
        "end": sched.instant(start + timedelta(minutes=30)),
    }


def next_start() -> datetime:
    return NOW + timedelta(days=3, minutes=30 * next(_times))


def add_slot(env, start: datetime | None = None, **kw) -> dict:
    body = slot_body(start or next_start(), **kw)
    env.live.adapter.load([body])
    return env.live.adapter.read("Slot", body["id"])


def params(**values) -> dict:
    out = []
    for name, value in values.items():
        name = name.replace("_", "-") if name != "_count" else name
        if isinstance(value, dict):
            out.append({"name": name, "resource": value})
        elif name in ("slot", "patient"):
            out.append({"name": name, "valueReference": {"reference": value}})
        else:
            out.append({"name": name, "valueString": value})
    return {"resourceType": "Parameters", "parameter": out}


def post(client, path: str, **values):
    return client.post(path, content=orjson.dumps(params(**values)),
                       headers={"Content-Type": FHIR_JSON})


def outcome(resp, status: int, expression: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    assert expression in body["issue"][0].get("expression", []), body
    return body


@pytest.fixture(scope="module")
def env(smart_env):
    ann = smart_env.patient_token("app-public", "ann")["access_token"]
    bob = smart_env.patient_token("app-public", "bob")["access_token"]
    smart_env.ann = smart_env.fhir(ann)
    smart_env.bob = smart_env.fhir(bob)
    yield smart_env
    smart_env.ann.close()
    smart_env.bob.close()


def book(env, client, slot_id: str, patient: str = "Patient/pat-0001"):
    return post(client, "Appointment/$book", slot=f"Slot/{slot_id}", patient=patient)


def stored(env, rtype: str, rid: str) -> dict:
    return env.live.adapter.read(rtype, rid)


def refused(env, call, status: int, expression: str) -> dict:
    """The request is refused with `status` naming `expression`, and nothing was written."""
    before = env.live.fingerprint()
    body = outcome(call(), status, expression)
    assert env.live.fingerprint() == before
    return body


# -- $find ----------------------------------------------------------------------------------------

def test_find_lists_proposed_appointments_on_free_slots(env):
    start = NOW + timedelta(days=1, hours=2)
    office = [add_slot(env, start + timedelta(hours=i)) for i in range(2)]
    busy = add_slot(env, start + timedelta(hours=3), status="busy")
    tele = add_slot(env, start + timedelta(hours=4), tele=True)
    before = env.live.fingerprint()
    resp = env.ann.get("Appointment/$find", params={"practitioner": "prac-01"})
    assert resp.status_code == 200, resp.text
    bundle = resp.json()
    assert bundle["type"] == "searchset"
    appts = [e["resource"] for e in bundle.get("entry", [])]
    by_slot = {a["slot"][0]["reference"]: a for a in appts}
    assert {f"Slot/{s['id']}" for s in office} <= set(by_slot)
    assert f"Slot/{busy['id']}" not in by_slot and f"Slot/{tele['id']}" not in by_slot
    first = by_slot[f"Slot/{office[0]['id']}"]
    assert first["status"] == "proposed" and "id" not in first
    assert (first["start"], first["end"]) == (office[0]["start"], office[0]["end"])
    actors = [p["actor"]["reference"] for p in first["participant"]]
    assert actors[:2] == ["Patient/pat-0001", "Practitioner/prac-01"]
    assert first["serviceType"] == office[0]["serviceType"]
    assert env.live.fingerprint() == before  # $find stores nothing

    tele_only = env.ann.post("Appointment/$find", content=orjson.dumps(
        params(**{"visit_type": "telehealth"})), headers={"Content-Type": FHIR_JSON}).json()
    refs = [e["resource"]["slot"][0]["reference"] for e in tele_only.get("entry", [])]
    assert f"Slot/{tele['id']}" in refs and f"Slot/{office[0]['id']}" not in refs
    in_person = env.ann.get("Appointment/$find", params={"visit-type": "in-person"}).json()
    refs = [e["resource"]["slot"][0]["reference"] for e in in_person.get("entry", [])]
    assert f"Slot/{office[0]['id']}" in refs and f"Slot/{tele['id']}" not in refs
    one = env.ann.get("Appointment/$find", params={"_count": "1"}).json()
    assert len(one["entry"]) == 1
    later = env.ann.get("Appointment/$find", params={
        "start": sched.instant(NOW + timedelta(days=40)),
        "end": sched.instant(NOW + timedelta(days=41))}).json()
    assert not later.get("entry")


def test_find_refuses_bad_parameters(env):
    refused(env, lambda: env.ann.get("Appointment/$find", params={"visit-type": "home"}),
            400, "visit-type")
    refused(env, lambda: env.ann.get("Appointment/$find", params={"start": "tomorrow"}),
            400, "start")
    refused(env, lambda: env.ann.get("Appointment/$find", params={
        "start": "2030-01-02", "end": "2030-01-01"}), 400, "end")
    refused(env, lambda: env.ann.get("Appointment/$find", params={"practitioner": "prac-99"}),
            404, "practitioner")
    refused(env, lambda: env.ann.get("Appointment/$find", params={"_count": "x"}), 400, "_count")
    refused(env, lambda: env.ann.get("Appointment/$find", params={"patient": "pat-0002"}),
            404, "patient")
    no_token = env.live.client.get(env.live.url("Appointment/$find"))
    assert no_token.status_code == 401


# -- $hold ----------------------------------------------------------------------------------------

def test_hold_keeps_the_slot_for_its_patient_only(env):
    slot = add_slot(env)
    resp = post(env.ann, "Appointment/$hold", slot=f"Slot/{slot['id']}",
                patient="Patient/pat-0001")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "proposed"
    held = stored(env, "Slot", slot["id"])
    assert held["status"] == "busy-tentative"
    hold = sched.hold_of(held)
    assert hold.patient == "pat-0001"
    minutes = env.live.config.portal.hold_minutes
    assert abs((hold.expires - datetime.now(UTC)) - timedelta(minutes=minutes)) \
        < timedelta(minutes=1)
    # For bob the held slot is missing: not found, not listed, not readable
    refused(env, lambda: book(env, env.bob, slot["id"], "Patient/pat-0002"), 404, "slot")
    refused(env, lambda: post(env.bob, "Appointment/$hold", slot=f"Slot/{slot['id']}",
                              patient="Patient/pat-0002"), 404, "slot")
    assert env.bob.get(f"Slot/{slot['id']}").status_code == 404
    found = env.bob.get("Appointment/$find", params={"_count": "1000"}).json()
    assert f"Slot/{slot['id']}" not in [e["resource"]["slot"][0]["reference"]
                                         for e in found.get("entry", [])]
    # ann books what she holds; the hold is gone
    resp = book(env, env.ann, slot["id"])
    assert resp.status_code == 201, resp.text
    after = stored(env, "Slot", slot["id"])
    assert after["status"] == "busy" and sched.hold_of(after) is None


def test_an_expired_hold_counts_as_free(env):
    body = sched.held_slot(slot_body(next_start()), "pat-0001",
                           datetime.now(UTC) - timedelta(minutes=1))
    env.live.adapter.load([body])
    resp = book(env, env.bob, body["id"], "Patient/pat-0002")
    assert resp.status_code == 201, resp.text
    assert stored(env, "Slot", body["id"])["status"] == "busy"


def test_hold_refusals(env):
    busy = add_slot(env, status="busy")
    refused(env, lambda: post(env.ann, "Appointment/$hold", slot=f"Slot/{busy['id']}",
                              patient="Patient/pat-0001"), 409, "slot")
    past = add_slot(env, NOW - timedelta(days=1))
    refused(env, lambda: post(env.ann, "Appointment/$hold", slot=f"Slot/{past['id']}"),
            422, "slot")
    refused(env, lambda: post(env.ann, "Appointment/$hold", patient="Patient/pat-0001"),
            400, "slot")


# -- $book ----------------------------------------------------------------------------------------

def test_book_telehealth_slot_stores_appointment_and_busy_slot(env):
    slot = add_slot(env, tele=True)
    resp = post(env.ann, "Appointment/$book", slot=f"Slot/{slot['id']}",
                patient="Patient/pat-0001", comment="Please call if late",
                reason="Blood pressure review")
    assert resp.status_code == 201, resp.text
    made = resp.json()
    appt = stored(env, "Appointment", made["id"])
    assert appt == made
    assert appt["status"] == "booked"
    assert appt["slot"] == [{"reference": f"Slot/{slot['id']}"}]
    assert (appt["start"], appt["end"]) == (slot["start"], slot["end"])
    assert appt["comment"] == "Please call if late"
    assert appt["reasonCode"] == [{"text": "Blood pressure review"}]
    parts = {p["actor"]["reference"]: p["status"] for p in appt["participant"]}
    assert parts["Patient/pat-0001"] == "accepted"
    assert parts["Practitioner/prac-05"] == "accepted"
    (virtual,) = [e for e in appt["extension"] if e["url"] == sched.VIRTUAL_SERVICE_EXTENSION]
    address = next(e["valueUrl"] for e in virtual["extension"] if e["url"] == "address")
    assert address == f"https://telehealth.example.org/join/{appt['id']}"
    assert stored(env, "Slot", slot["id"])["status"] == "busy"
    assert env.ann.get(f"Appointment/{appt['id']}").status_code == 200
    assert env.bob.get(f"Appointment/{appt['id']}").status_code == 404


def test_book_from_a_proposed_appointment(env):
    slot = add_slot(env, NOW + timedelta(days=2, hours=5, minutes=15))
    found = env.ann.get("Appointment/$find", params={
        "start": slot["start"], "end": slot["end"], "practitioner": "Practitioner/prac-01"})
    (entry,) = found.json()["entry"]
    proposed = entry["resource"]
    resp = post(env.ann, "Appointment/$book", appointment=proposed)
    assert resp.status_code == 201, resp.text
    appt = stored(env, "Appointment", resp.json()["id"])
    assert appt["status"] == "booked" and "extension" not in appt  # in person: no join link
    assert stored(env, "Slot", slot["id"])["status"] == "busy"
    other = dict(proposed, participant=[{"actor": {"reference": "Patient/pat-0002"},
                                         "status": "needs-action"}])
    refused(env, lambda: post(env.ann, "Appointment/$book", appointment=other),
            404, "appointment")


def test_book_refusals_change_nothing(env):
    taken = add_slot(env)
    assert book(env, env.bob, taken["id"], "Patient/pat-0002").status_code == 201
    body = refused(env, lambda: book(env, env.ann, taken["id"]), 409, "slot")
    assert "taken" in body["issue"][0]["diagnostics"]
    past = add_slot(env, NOW - timedelta(hours=2))
    refused(env, lambda: book(env, env.ann, past["id"]), 422, "slot")
    # double booking: ann already has a visit at that time with another practitioner
    start = next_start()
    first, second = add_slot(env, start), add_slot(env, start, tele=True)
    assert book(env, env.ann, first["id"]).status_code == 201
    body = refused(env, lambda: book(env, env.ann, second["id"]), 422, "slot")
    assert "Double booking" in body["issue"][0]["diagnostics"]
    free = add_slot(env)
    refused(env, lambda: book(env, env.ann, free["id"], "Patient/pat-0002"), 404, "patient")
    refused(env, lambda: book(env, env.ann, "no-such-slot"), 404, "slot")
    refused(env, lambda: post(env.ann, "Appointment/$book", patient="Patient/pat-0001"),
            400, "slot")
    refused(env, lambda: post(env.ann, "Appointment/$book", slot="Patient/pat-0001"),
            400, "slot")
    refused(env, lambda: post(env.ann, "Appointment/$book", slot=f"Slot/{free['id']}",
                              comment="bad\x01text"), 400, "comment")
    assert stored(env, "Slot", free["id"])["status"] == "free"


# -- $cancel and $reschedule ----------------------------------------------------------------------

def test_book_then_cancel_frees_the_slot(env):
    slot = add_slot(env)
    appt = book(env, env.ann, slot["id"]).json()
    refused(env, lambda: post(env.ann, f"Appointment/{appt['id']}/$cancel"), 400, "reason")
    refused(env, lambda: post(env.bob, f"Appointment/{appt['id']}/$cancel", reason="x"),
            404, "Appointment")
    resp = post(env.ann, f"Appointment/{appt['id']}/$cancel", reason="Feeling better")
    assert resp.status_code == 200, resp.text
    cancelled = stored(env, "Appointment", appt["id"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelationReason"]["text"] == "Feeling better"
    freed = stored(env, "Slot", slot["id"])
    assert freed["status"] == "free"
    # the slot can be booked again; the cancelled appointment cannot be cancelled again
    assert book(env, env.bob, slot["id"], "Patient/pat-0002").status_code == 201
    refused(env, lambda: post(env.ann, f"Appointment/{appt['id']}/$cancel", reason="again"),
            422, "Appointment.start")


def test_cancel_inside_the_window_is_refused_with_how_to_reach_the_clinic(env):
    slot = add_slot(env, datetime.now(UTC) + timedelta(hours=3))
    appt = book(env, env.ann, slot["id"]).json()
    body = refused(env, lambda: post(env.ann, f"Appointment/{appt['id']}/$cancel",
                                     reason="Busy"), 422, "Appointment.start")
    text = body["issue"][0]["diagnostics"]
    assert "24 hours" in text and "(217) 555-0100" in text
    other = add_slot(env)
    refused(env, lambda: post(env.ann, f"Appointment/{appt['id']}/$reschedule",
                              slot=f"Slot/{other['id']}"), 422, "Appointment.start")
    assert stored(env, "Appointment", appt["id"])["status"] == "booked"


def test_reschedule_moves_atomically(env):
    old, new, taken = add_slot(env), add_slot(env, tele=True), add_slot(env)
    appt = book(env, env.ann, old["id"]).json()
    assert book(env, env.bob, taken["id"], "Patient/pat-0002").status_code == 201
    refused(env, lambda: post(env.ann, f"Appointment/{appt['id']}/$reschedule",
                              slot=f"Slot/{taken['id']}"), 409, "slot")
    refused(env, lambda: post(env.bob, f"Appointment/{appt['id']}/$reschedule",
                              slot=f"Slot/{new['id']}"), 404, "Appointment")
    refused(env, lambda: post(env.ann, f"Appointment/{appt['id']}/$reschedule"), 400, "slot")
    refused(env, lambda: post(env.ann, f"Appointment/{appt['id']}/$reschedule",
                              slot=f"Slot/{old['id']}"), 422, "slot")
    resp = post(env.ann, f"Appointment/{appt['id']}/$reschedule", slot=f"Slot/{new['id']}")
    assert resp.status_code == 200, resp.text
    moved = stored(env, "Appointment", appt["id"])
    assert moved["status"] == "booked"
    assert moved["slot"] == [{"reference": f"Slot/{new['id']}"}]
    assert (moved["start"], moved["end"]) == (new["start"], new["end"])
    assert {p["actor"]["reference"] for p in moved["participant"]} >= {
        "Patient/pat-0001", "Practitioner/prac-05"}
    assert any(e["url"] == sched.VIRTUAL_SERVICE_EXTENSION for e in moved["extension"])
    assert stored(env, "Slot", old["id"])["status"] == "free"
    assert stored(env, "Slot", new["id"])["status"] == "busy"


# -- concurrency ----------------------------------------------------------------------------------

def test_twenty_concurrent_bookings_of_one_slot_give_one(env):
    slot = add_slot(env)
    barrier = threading.Barrier(20)
    statuses: list[int] = []
    clients = [env.ann if i % 2 == 0 else env.bob for i in range(20)]
    patients = ["Patient/pat-0001" if i % 2 == 0 else "Patient/pat-0002" for i in range(20)]

    def run(i: int) -> None:
        barrier.wait()
        statuses.append(book(env, clients[i], slot["id"], patients[i]).status_code)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [201] + [409] * 19, statuses
    assert stored(env, "Slot", slot["id"])["status"] == "busy"
    assert len(env.live.adapter.history("Slot", slot["id"], 10).entries) == 2  # busy once
    query = env.live.app.extensions["fhir_gateway"].service.search_query(
        "Appointment", [("slot", f"Slot/{slot['id']}")], strict=True).query
    assert len(env.live.adapter.search("Appointment", query).resources) == 1


# -- every built resource is R4 -------------------------------------------------------------------

def _valid_r4(resource: dict) -> None:
    from fhir.resources.R4B import get_fhir_model_class
    from fhirclient.models.fhirelementfactory import FHIRElementFactory

    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    FHIRElementFactory.instantiate(resource["resourceType"], resource)


def test_built_resources_validate_as_r4b_and_fhir_4_0_1():
    schedule = {"resourceType": "Schedule", "id": "sched-05", "actor": [
        {"reference": "Practitioner/prac-05", "display": "Dr X"}, {"reference": "Location/l"}]}
    slot = slot_body(NOW + timedelta(days=5), tele=True)
    now = datetime.now(UTC)
    built = [
        sched.proposed_appointment(slot, schedule, "pat-0001"),
        sched.proposed_appointment(slot, schedule, None),
        sched.held_slot(slot, "pat-0001", now),
        sched.booked_slot(sched.held_slot(slot, "pat-0001", now)),
        sched.released_slot(slot),
    ]
    appt = sched.booked_appointment(slot, schedule, "pat-0001", "a1", now, "note", "why")
    other = slot_body(NOW + timedelta(days=6))
    built += [appt, sched.cancelled_appointment(appt, "no longer needed"),
              sched.rescheduled_appointment(appt, other, schedule, "pat-0001")]
    for resource in built:
        _valid_r4(resource)
    assert "extension" not in built[-1]  # moved to an office visit: no join link
    assert sched.hold_of(built[3]) is None and built[3]["status"] == "busy"


# -- property: no sequence double-books a slot or leaves a booking without its busy slot ---------

@pytest.fixture(scope="module")
def service(tmp_path_factory):
    path = tmp_path_factory.mktemp("sched-prop") / "ehr.sqlite3"
    adapter = EmbeddedAdapter(f"sqlite:///{path}")
    adapter.load([
        {"resourceType": "Patient", "id": "p1"}, {"resourceType": "Patient", "id": "p2"},
        {"resourceType": "Practitioner", "id": "dr"},
        {"resourceType": "Schedule", "id": "sched-01",
         "actor": [{"reference": "Practitioner/dr"}]},
        {"resourceType": "Schedule", "id": "sched-05",
         "actor": [{"reference": "Practitioner/dr"}]},
    ])
    yield FhirService(adapter, Config(), CursorSigner(b"k" * 32))
    adapter.close()


def _op(service, name: str, rid: str | None = None, **values):
    req = FhirRequest("operation", "Appointment", rid, body=params(**values), operation=name)
    try:
        return service.handle(req, "http://test/fhir").resource
    except Exception as exc:  # noqa: BLE001 - a refusal is a valid outcome of a random step
        from adapters.errors import FhirError

        assert isinstance(exc, FhirError), exc
        return None


_day = itertools.count()
STEP = st.tuples(st.sampled_from(["book", "reschedule", "cancel"]),
                 st.integers(0, 3), st.integers(0, 1), st.integers(0, 7), st.booleans())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, min_size=1, max_size=8))
def test_no_sequence_double_books_or_orphans(service, steps):
    adapter = service.adapter
    base = NOW + timedelta(days=60 + next(_day))
    slots = [slot_body(base + timedelta(minutes=30 * (i % 3)), tele=i == 3) for i in range(4)]
    adapter.load(slots)
    ids = [s["id"] for s in slots]
    booked: list[str] = []

    def step(kind: str, slot: int, patient: int, which: int) -> None:
        pid = f"Patient/p{patient + 1}"
        if kind == "book" or not booked:
            made = _op(service, "book", slot=f"Slot/{ids[slot]}", patient=pid)
            if made:
                booked.append(made["id"])
        elif kind == "reschedule":
            _op(service, "reschedule", booked[which % len(booked)], slot=f"Slot/{ids[slot]}")
        else:
            _op(service, "cancel", booked[which % len(booked)], reason="changed plans")

    pending = list(steps)
    while pending:
        kind, slot, patient, which, paired = pending.pop(0)
        if paired and pending:  # run this step and the next one at the same time
            other = pending.pop(0)
            threads = [threading.Thread(target=step, args=s[:4])
                       for s in ((kind, slot, patient, which), other)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        else:
            step(kind, slot, patient, which)
        appts = [adapter.read("Appointment", a) for a in booked]
        live = [a for a in appts if a["status"] == "booked"]
        on_slot = [sched.slot_id_of(a) for a in live]
        assert len(on_slot) == len(set(on_slot)), "a slot is double-booked"
        for sid in ids:
            status = adapter.read("Slot", sid)["status"]
            assert (status == "busy") == (sid in on_slot), (sid, status, on_slot)


# -- the same race on PostgreSQL, over HTTP with SMART on -----------------------------------------

@pytest.fixture
def pg_env(pg_server, tmp_path):
    from fhir_gateway.synthetic import generate
    from tests.conftest import SEED_TODAY, make_pg_database, start_live_gateway
    from tests.smart_support import PASSWORD, REDIRECT, SmartEnv

    url, drop = make_pg_database(pg_server)
    live, stop = start_live_gateway(tmp_path, url, auth=True)
    live.adapter.load(generate(2, 7, SEED_TODAY))
    smart = live.app.extensions["smart"]
    smart.clients.add("app-public", "public", redirect_uris=[REDIRECT])
    smart.accounts.add("ann", PASSWORD, fhir_user="Patient/pat-0001", patients=["pat-0001"])
    smart.accounts.add("bob", PASSWORD, fhir_user="Patient/pat-0002", patients=["pat-0002"])
    env = SmartEnv(live, smart)
    env.ann = env.fhir(env.patient_token("app-public", "ann")["access_token"])
    env.bob = env.fhir(env.patient_token("app-public", "bob")["access_token"])
    yield env
    env.ann.close()
    env.bob.close()
    env.browser.close()
    stop()
    drop()


def test_twenty_concurrent_bookings_on_postgresql(pg_env):
    test_twenty_concurrent_bookings_of_one_slot_give_one(pg_env)
