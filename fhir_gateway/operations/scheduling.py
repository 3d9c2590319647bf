"""Appointment scheduling operations, after IHE ITI Scheduling ($find, $hold, $book).

`Appointment/$find` lists proposed Appointments on free Slots; `$hold` keeps a Slot for a
patient for `config.portal.hold_minutes`; `$book` stores the booked Appointment and turns the
Slot busy; `Appointment/{id}/$reschedule` and `/$cancel` move or cancel a booking online until
`config.portal.cancellation_window_hours` before it starts. Every change of a Slot is one
atomic `adapter.transaction` whose Slot entry carries `if_match` on the version that was
checked, so two patients racing for one Slot give one booking and one 409; nothing is half
done. A patient token acts only for its own patient; another patient's Appointment, Patient
or held Slot looks missing (404). Builders and rules live in `mappings.portal.scheduling`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from adapters.base import BundleEntryRequest, SearchPage
from adapters.errors import (
    Conflict,
    FhirError,
    Gone,
    Invalid,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from adapters.search import has_control_chars
from fhir_gateway.operations.registry import OperationContext, OperationSpec, ParamSpec
from fhir_gateway.request import FhirRequest, FhirResponse
from fhir_gateway.search_request import parse_count
from fhir_gateway.validation import validate_resource
from mappings.portal import scheduling as sched
from mappings.terminology import TELEHEALTH_SERVICE_TYPE

MAX_TEXT = 1000
VISIT_TYPES = ("telehealth", "in-person")
_KINDS: dict[str, type[FhirError]] = {
    "invalid": Invalid, "business-rule": Unprocessable, "conflict": Conflict,
    "not-found": NotFound,
}


def _now() -> datetime:
    return datetime.now(UTC)


def _rules(call, *args, **kw):
    """Run a `mappings` rule; its SchedulingError becomes the typed error it names."""
    try:
        return call(*args, **kw)
    except sched.SchedulingError as exc:
        raise _KINDS[exc.kind](str(exc), expression=exc.parameter) from None


def _text(ctx: OperationContext, name: str, required: bool = False) -> str | None:
    value = ctx.one(name, required=required)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{name} must be a non-empty string", expression=name)
    if len(value) > MAX_TEXT or has_control_chars(value):
        raise Invalid(f"{name} must be at most {MAX_TEXT} characters of plain text",
                      expression=name)
    return value.strip()


# -- who and what ---------------------------------------------------------------------------

def _decision(ctx: OperationContext, interaction: str, rtype: str = "Appointment"):
    return ctx.service.decide(FhirRequest(interaction, rtype, principal=ctx.request.principal))


def _patient(ctx: OperationContext, decision, value: object, parameter: str = "patient",
             required: bool = True) -> str | None:
    """The patient to act for: the token's own, or (trusted and clinician callers) any."""
    confined = decision.patient if decision is not None else None
    if value is None:
        if confined is None and required:
            raise Invalid(f"Parameter {parameter!r} is required", expression=parameter)
        return confined
    pid = _rules(sched.reference_id, value, "Patient", parameter)
    if confined is not None and pid != confined:
        raise NotFound(f"Patient/{pid} is not known", expression=parameter)
    try:
        ctx.service.adapter.read("Patient", pid)
    except (NotFound, Gone):
        raise NotFound(f"Patient/{pid} is not known", expression=parameter) from None
    return pid


def _slot(ctx: OperationContext, value: object, patient: str | None, now: datetime,
          parameter: str = "slot") -> dict:
    """The Slot; one held by another patient looks missing, like any of their data."""
    sid = _rules(sched.reference_id, value, "Slot", parameter)
    try:
        slot = ctx.service.adapter.read("Slot", sid)
    except (NotFound, Gone):
        raise NotFound(f"Slot/{sid} is not known", expression=parameter) from None
    if sched.held_by_other(slot, patient, now):
        raise NotFound(f"Slot/{sid} is not known", expression=parameter)
    return slot


def _schedule(ctx: OperationContext, slot: dict, cache: dict | None = None) -> dict:
    ref = (slot.get("schedule") or {}).get("reference", "")
    sid = ref.rsplit("/", 1)[-1]
    if cache is not None and sid in cache:
        return cache[sid]
    try:
        found = ctx.service.adapter.read("Schedule", sid)
    except (NotFound, Gone):
        found = {"resourceType": "Schedule", "id": sid, "actor": []}
    if cache is not None:
        cache[sid] = found
    return found


def _contact(ctx: OperationContext, slot: dict | None) -> str:
    """How to reach the clinic: the phone of the Schedule's Location, if it has one."""
    if slot is not None:
        for actor in _schedule(ctx, slot).get("actor") or []:
            ref = str(actor.get("reference", ""))
            if not ref.startswith("Location/"):
                continue
            try:
                location = ctx.service.adapter.read("Location", ref.split("/", 1)[1])
            except (NotFound, Gone):
                continue
            phone = next((t.get("value") for t in location.get("telecom") or []
                          if t.get("system") == "phone" and t.get("value")), None)
            if phone:
                return f"call the clinic at {phone}"
    return "call the clinic"


def _no_overlap(ctx: OperationContext, patient: str, slot: dict, ignore: str | None,
                parameter: str) -> None:
    """422 when the patient already has a booked appointment at that time."""
    start = _rules(sched.parse_instant, slot.get("start"), parameter)
    end = _rules(sched.parse_instant, slot.get("end"), parameter)
    params = [("patient", f"Patient/{patient}"), ("status", "booked"),
              ("date", f"lt{sched.instant(end)}"),
              ("date", f"ge{sched.instant(start - timedelta(days=1))}")]
    query = ctx.service.search_query("Appointment", params, strict=True).query
    query.count = ctx.service.limits.max_count
    query.with_total = False
    page = ctx.service.adapter.search("Appointment", query)
    clash = sched.overlapping(page.resources, slot["start"], slot["end"], ignore)
    if any(sched.slot_id_of(c) == slot["id"] for c in clash):  # lost a race for this slot
        raise Conflict(f"Slot/{slot['id']} is taken: choose another time", expression=parameter)
    if clash:
        raise Unprocessable(
            f"Double booking: the patient already has Appointment/{clash[0]['id']} at "
            f"{clash[0]['start']}", expression=parameter)


def _commit(ctx: OperationContext, entries: list[BundleEntryRequest], parameter: str,
            what: str) -> list:
    """One atomic write; a moved version means someone else got there first: 409."""
    for entry in entries:
        validate_resource(entry.resource, entry.resource_type)
    try:
        return ctx.service.transaction(entries)
    except (PreconditionFailed, Conflict):
        raise Conflict(f"{what}; nothing was changed", expression=parameter) from None


def _put(resource: dict, version: str | None) -> BundleEntryRequest:
    return BundleEntryRequest("PUT", resource["resourceType"], id=resource["id"],
                              resource=resource, if_match=version)


def _version(resource: dict) -> str:
    return str((resource.get("meta") or {}).get("versionId", ""))


# -- $find ------------------------------------------------------------------------------------

def find(ctx: OperationContext) -> FhirResponse:
    service = ctx.service
    now = _now()
    decision = _decision(ctx, "search-type", "Slot")  # confines a patient token like $book
    patient = _patient(ctx, decision, ctx.one("patient"), required=False)
    low, high = _rules(sched.find_range, ctx.one("start"), ctx.one("end"), now)
    raw_count = ctx.one("_count")
    count = parse_count(None if raw_count is None else str(raw_count), service.limits)
    params = [("status", "free,busy-tentative"), ("start", f"ge{sched.instant(low)}"),
              ("start", f"lt{sched.instant(high)}"), ("_sort", "start")]
    visit = ctx.one("visit-type")
    if visit is not None and visit not in VISIT_TYPES:
        raise Invalid(f"visit-type must be one of {', '.join(VISIT_TYPES)}",
                      expression="visit-type")
    if visit == "telehealth":
        tele = TELEHEALTH_SERVICE_TYPE
        params.append(("service-type", f"{tele.system}|{tele.code}"))
    specialty = ctx.one("specialty")
    if specialty is not None:
        if not isinstance(specialty, str) or not specialty.strip() or len(specialty) > 200:
            raise Invalid("specialty must be a token (system|code or code)",
                          expression="specialty")
        params.append(("specialty", specialty.strip()))
    practitioner = ctx.one("practitioner")
    if practitioner is not None:
        pid = _rules(sched.reference_id, practitioner, "Practitioner", "practitioner")
        try:
            service.adapter.read("Practitioner", pid)
        except (NotFound, Gone):
            raise NotFound(f"Practitioner/{pid} is not known",
                           expression="practitioner") from None
        squery = service.search_query("Schedule", [("actor", f"Practitioner/{pid}")],
                                      strict=True).query
        squery.count = service.limits.max_count
        schedules = service.adapter.search("Schedule", squery).resources
        if not schedules:
            return FhirResponse(200, _searchset(ctx, []))
        params.append(("schedule", ",".join(f"Schedule/{s['id']}" for s in schedules)))
    query = service.search_query("Slot", params, strict=True).query
    query.count = min(max(count, 1) * 2, service.limits.max_count)
    query.with_total = False
    found: list[dict] = []
    cache: dict[str, dict] = {}
    while len(found) < count:
        page: SearchPage = service.adapter.search("Slot", query)
        for slot in page.resources:
            if len(found) >= count:
                break
            if not sched.slot_free_for(slot, patient, now):
                continue
            if visit == "in-person" and sched.is_telehealth(slot):
                continue
            found.append(sched.proposed_appointment(slot, _schedule(ctx, slot, cache),
                                                    patient))
        if not page.next_cursor:
            break
        query.cursor = page.next_cursor
    for appt in found:
        validate_resource(appt, "Appointment")
    return FhirResponse(200, _searchset(ctx, found))


def _searchset(ctx: OperationContext, appointments: list[dict]) -> dict:
    bundle: dict = {"resourceType": "Bundle", "type": "searchset",
                    "total": len(appointments),
                    "link": [{"relation": "self", "url": f"{ctx.base}/Appointment/$find"}]}
    if appointments:
        bundle["entry"] = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": a,
                            "search": {"mode": "match"}} for a in appointments]
    return bundle


# -- $hold ------------------------------------------------------------------------------------

def hold(ctx: OperationContext) -> FhirResponse:
    now = _now()
    decision = _decision(ctx, "create")
    patient = _patient(ctx, decision, ctx.one("patient"))
    slot = _slot(ctx, ctx.one("slot", required=True), patient, now)
    _rules(sched.check_bookable, slot, patient, now)
    until = now + timedelta(minutes=ctx.service.config.portal.hold_minutes)
    held = sched.held_slot(slot, patient, until)
    proposed = sched.proposed_appointment(slot, _schedule(ctx, slot), patient)
    validate_resource(proposed, "Appointment")
    _commit(ctx, [_put(held, _version(slot))], "slot", f"Slot/{slot['id']} was just taken")
    return FhirResponse(200, proposed)


# -- $book ------------------------------------------------------------------------------------

def book(ctx: OperationContext) -> FhirResponse:
    now = _now()
    decision = _decision(ctx, "create")
    proposed = ctx.one("appointment")
    comment = _text(ctx, "comment")
    reason = _text(ctx, "reason")
    if proposed is not None:
        if ctx.params.get("slot"):
            raise Invalid("Give either appointment or slot, not both", expression="slot")
        if not isinstance(proposed, dict) or proposed.get("resourceType") != "Appointment":
            raise Invalid("appointment must be an Appointment resource",
                          expression="appointment")
        refs = proposed.get("slot") or []
        if len(refs) != 1:
            raise Invalid("appointment must name exactly one slot", expression="appointment")
        slot_value = refs[0]
        named = sched.patient_of(proposed)
        patient_value = ctx.one("patient") or (f"Patient/{named}" if named else None)
        patient = _patient(ctx, decision, patient_value, "appointment")
        if named is not None and named != patient:
            raise NotFound(f"Patient/{named} is not known", expression="appointment")
        comment = comment or _plain(proposed.get("comment"), "appointment")
        reason = reason or _plain(next((c.get("text") for c in proposed.get("reasonCode") or []
                                        if isinstance(c, dict)), None), "appointment")
        parameter = "appointment"
    else:
        patient = _patient(ctx, decision, ctx.one("patient"))
        slot_value = ctx.one("slot", required=True)
        parameter = "slot"
    slot = _slot(ctx, slot_value, patient, now, parameter)
    _rules(sched.check_bookable, slot, patient, now, parameter)
    _no_overlap(ctx, patient, slot, None, parameter)
    appointment = sched.booked_appointment(slot, _schedule(ctx, slot), patient,
                                           str(uuid.uuid4()), now, comment, reason)
    ctx.service.check_write(decision, appointment)
    results = _commit(ctx, [_put(sched.booked_slot(slot), _version(slot)),
                            _put(appointment, None)],
                      parameter, f"Slot/{slot['id']} is taken: choose another time")
    stored = results[1].resource
    location = f"{ctx.base}/Appointment/{stored['id']}/_history/{stored['meta']['versionId']}"
    return FhirResponse(201, stored, {"Location": location,
                                      "ETag": f'W/"{stored["meta"]["versionId"]}"'})


def _plain(value: object, parameter: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or has_control_chars(value):
        raise Invalid(f"{parameter} has a comment or reason that is not plain text",
                      expression=parameter)
    return value.strip() or None


# -- $reschedule and $cancel ------------------------------------------------------------------

def _booking(ctx: OperationContext) -> tuple[object, dict, str]:
    """The caller's Appointment (404 for anyone else's) and its patient."""
    service = ctx.service
    aid = service.check_id(ctx.request.id)
    decision = _decision(ctx, "update")
    try:
        appointment = service._visible(decision, "Appointment", aid)
    except Gone:
        raise service.hidden("Appointment", aid) from None
    patient = sched.patient_of(appointment)
    if patient is None:
        raise Unprocessable(f"Appointment/{aid} has no patient to act for",
                            expression="Appointment.participant")
    return decision, appointment, patient


def _current_slot(ctx: OperationContext, appointment: dict) -> dict | None:
    sid = sched.slot_id_of(appointment)
    if sid is None:
        return None
    try:
        return ctx.service.adapter.read("Slot", sid)
    except (NotFound, Gone):
        return None


def reschedule(ctx: OperationContext) -> FhirResponse:
    now = _now()
    decision, appointment, patient = _booking(ctx)
    value = ctx.one("slot", required=True)
    old = _current_slot(ctx, appointment)
    window = ctx.service.config.portal.cancellation_window_hours
    _rules(sched.check_window, appointment, now, window, "rescheduled", _contact(ctx, old),
           "Appointment.start")
    slot = _slot(ctx, value, patient, now)
    if old is not None and slot["id"] == old["id"]:
        raise Unprocessable(f"The appointment is already on Slot/{slot['id']}",
                            expression="slot")
    _rules(sched.check_bookable, slot, patient, now)
    _no_overlap(ctx, patient, slot, appointment["id"], "slot")
    moved = sched.rescheduled_appointment(appointment, slot, _schedule(ctx, slot), patient)
    ctx.service.check_write(decision, moved)
    entries = [_put(sched.booked_slot(slot), _version(slot))]
    if old is not None:
        entries.append(_put(sched.released_slot(old), _version(old)))
    entries.append(_put(moved, _version(appointment)))
    results = _commit(ctx, entries, "slot",
                      f"Slot/{slot['id']} was taken or the appointment changed meanwhile")
    return FhirResponse(200, results[-1].resource)


def cancel(ctx: OperationContext) -> FhirResponse:
    now = _now()
    decision, appointment, _ = _booking(ctx)
    reason = _text(ctx, "reason", required=True)
    slot = _current_slot(ctx, appointment)
    window = ctx.service.config.portal.cancellation_window_hours
    _rules(sched.check_window, appointment, now, window, "cancelled", _contact(ctx, slot),
           "Appointment.start")
    cancelled = sched.cancelled_appointment(appointment, reason)
    ctx.service.check_write(decision, cancelled)
    entries = [_put(cancelled, _version(appointment))]
    if slot is not None and slot.get("status") == "busy":
        entries.append(_put(sched.released_slot(slot), _version(slot)))
    results = _commit(ctx, entries, "Appointment",
                      f"Appointment/{appointment['id']} changed meanwhile")
    return FhirResponse(200, results[0].resource)


def start_visit(ctx: OperationContext) -> FhirResponse:
    """The patient arrives, or joins a telehealth visit: the Appointment becomes `arrived` and
    an in-progress Encounter (class VR for telehealth, AMB in person) is created, atomically."""
    now = _now()
    decision, appointment, patient = _booking(ctx)
    _rules(sched.check_visit_time, appointment, now, "Appointment.start")
    encounter = sched.visit_encounter(appointment, patient, now)
    encounter_decision = _decision(ctx, "create", "Encounter")
    ctx.service.check_write(encounter_decision, encounter)
    arrived = sched.arrived_appointment(appointment)
    ctx.service.check_write(decision, arrived)
    entries = [_put(arrived, _version(appointment)),
               BundleEntryRequest("POST", "Encounter", resource=encounter,
                                  full_url=f"urn:uuid:{uuid.uuid4()}")]
    results = _commit(ctx, entries, "Appointment",
                      f"Appointment/{appointment['id']} changed meanwhile")
    return FhirResponse(201, results[1].resource)


# -- registration -----------------------------------------------------------------------------

_SLOT = ParamSpec("slot", "Reference", min=1, documentation="The Slot (Slot/id)")
_PATIENT = ParamSpec("patient", "Reference",
                     documentation="The patient (Patient/id); a patient token's own by default")

SPECS = [
    OperationSpec(
        name="find", resource_type="Appointment", handler=find, instance=False,
        type_level=True, title="Find potential appointments",
        description="Proposed Appointments, one per free Slot in the range (IHE ITI-115); "
                    "nothing is stored.",
        needs=(("Slot", "s"),),
        parameters=(
            ParamSpec("practitioner", "string", documentation="Practitioner id or reference"),
            ParamSpec("specialty", "token", documentation="Specialty (system|code)"),
            ParamSpec("visit-type", "code", documentation="telehealth | in-person"),
            ParamSpec("start", "dateTime", documentation="From (default now)"),
            ParamSpec("end", "dateTime", documentation="Until (default 14 days after start)"),
            ParamSpec("_count", "integer", documentation="At most this many"),
            ParamSpec("patient", "Reference", documentation="For whom (default: the token's)"),
            ParamSpec("return", "Bundle", min=1, use="out"),
        ),
    ),
    OperationSpec(
        name="hold", resource_type="Appointment", handler=hold, instance=False,
        type_level=True, affects_state=True, title="Hold a slot",
        description="Keeps a free Slot busy-tentative for the patient for the clinic's hold "
                    "time (IHE ITI-116); returns the proposed Appointment.",
        needs=(("Slot", "r"), ("Appointment", "c")),
        parameters=(_SLOT, _PATIENT, ParamSpec("return", "Appointment", min=1, use="out")),
    ),
    OperationSpec(
        name="book", resource_type="Appointment", handler=book, instance=False,
        type_level=True, affects_state=True, title="Book an appointment",
        description="Stores the booked Appointment and turns its Slot busy in one atomic "
                    "write (IHE ITI-117); 409 when the slot was taken.",
        needs=(("Appointment", "c"), ("Slot", "r")),
        parameters=(
            ParamSpec("appointment", "Appointment",
                      documentation="A proposed Appointment from $find or $hold"),
            ParamSpec("slot", "Reference", documentation="The Slot, instead of appointment"),
            _PATIENT,
            ParamSpec("comment", "string", documentation="Note for the clinic"),
            ParamSpec("reason", "string", documentation="Reason for the visit"),
            ParamSpec("return", "Appointment", min=1, use="out"),
        ),
    ),
    OperationSpec(
        name="reschedule", resource_type="Appointment", handler=reschedule, instance=True,
        affects_state=True, title="Move an appointment to another slot",
        description="New slot booked, old slot freed and the Appointment moved, atomically; "
                    "not within the clinic's cancellation window.",
        needs=(("Appointment", "u"), ("Slot", "r")),
        parameters=(_SLOT, ParamSpec("return", "Appointment", min=1, use="out")),
    ),
    OperationSpec(
        name="cancel", resource_type="Appointment", handler=cancel, instance=True,
        affects_state=True, title="Cancel an appointment",
        description="Cancels the Appointment with the patient's reason and frees its Slot, "
                    "atomically; not within the clinic's cancellation window.",
        needs=(("Appointment", "u"),),
        parameters=(ParamSpec("reason", "string", min=1, documentation="Why, in words"),
                    ParamSpec("return", "Appointment", min=1, use="out")),
    ),
    OperationSpec(
        name="start-visit", resource_type="Appointment", handler=start_visit, instance=True,
        affects_state=True, needs=(("Appointment", "u"), ("Encounter", "c")),
        title="Start the visit",
        description="The patient arrives or joins the telehealth visit: Appointment arrived, "
                    "Encounter in-progress with class VR (telehealth) or AMB, atomically.",
        parameters=(ParamSpec("return", "Encounter", min=1, use="out"),)),
]
