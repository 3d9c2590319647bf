"""Appointment scheduling for the patient portal, after the IHE ITI Scheduling profile.

IHE ITI Scheduling (which grew from the Argonaut Scheduling IG) has a client find potential
appointments (`Appointment/$find`, ITI-115), hold one (`$hold`, ITI-116) and book it (`$book`,
ITI-117). This module holds the pure part: builders of the R4 Appointments those operations
return or store (a *proposed* one per free Slot, the *booked* one, its cancellation and move),
the Slot states a booking moves through, and the clinic's rules (no past slots, no double
booking, a cancellation window). The gateway does the I/O and the atomic write.

Slot holds: a held Slot has status `busy-tentative` and the extension `HOLD_EXTENSION` with
sub-extensions `holder` (valueReference to the Patient) and `expires` (valueDateTime). A hold
whose `expires` has passed counts as free. The holder is a Reference on purpose: it puts the
held Slot in that patient's compartment, so other patients' tokens cannot see who holds it.

Telehealth: an Appointment whose serviceType carries `TELEHEALTH_SERVICE_TYPE` gets its join
link as R5 `Appointment.virtualService`, in R4 the cross-version extension
`VIRTUAL_SERVICE_EXTENSION` with sub-extensions `address` (valueUrl, R5
`VirtualServiceDetail.address[x]`) and `additionalInfo` (valueUrl).

Pure: standard library plus `mappings.terminology`, no I/O; `now` is always passed in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mappings.terminology import TELEHEALTH_SERVICE_TYPE

__all__ = [
    "CANCEL_REASON_SYSTEM",
    "HOLD_EXTENSION",
    "JOIN_BASE",
    "VIRTUAL_SERVICE_EXTENSION",
    "Hold",
    "SchedulingError",
    "booked_appointment",
    "booked_slot",
    "cancelled_appointment",
    "check_bookable",
    "check_window",
    "find_range",
    "held_by_other",
    "held_slot",
    "hold_of",
    "instant",
    "is_telehealth",
    "join_link",
    "overlapping",
    "parse_instant",
    "patient_of",
    "practitioner_of",
    "proposed_appointment",
    "reference_id",
    "released_slot",
    "rescheduled_appointment",
    "slot_free_for",
    "slot_id_of",
]

HOLD_EXTENSION = "https://example.org/fhir/StructureDefinition/slot-hold"
VIRTUAL_SERVICE_EXTENSION = (
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService")
JOIN_BASE = "https://telehealth.example.org/join/"
CANCEL_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"
#: Default length of the `$find` range when `end` is not given.
FIND_DAYS = 14


class SchedulingError(ValueError):
    """A request the clinic's rules refuse.

    `parameter` names the operation parameter at fault; `kind` is `invalid` (malformed, 400),
    `business-rule` (422), `conflict` (the slot is taken, 409) or `not-found` (404)."""

    def __init__(self, message: str, parameter: str, kind: str = "business-rule") -> None:
        super().__init__(message)
        self.parameter = parameter
        self.kind = kind


@dataclass(frozen=True)
class Hold:
    patient: str  # Patient id
    expires: datetime


# -- small parsers -------------------------------------------------------------------------

def parse_instant(value: object, parameter: str) -> datetime:
    """A FHIR date or dateTime (a date means its start, UTC when no offset is given)."""
    if not isinstance(value, str) or not value.strip():
        raise SchedulingError(f"{parameter} must be a date or dateTime", parameter, "invalid")
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise SchedulingError(f"{parameter} {value!r} is not a date or dateTime", parameter,
                              "invalid") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reference_id(value: object, rtype: str, parameter: str) -> str:
    """The id in `Type/id`, a bare id, an absolute URL or a Reference dict; Invalid otherwise."""
    if isinstance(value, dict):
        value = value.get("reference")
    if not isinstance(value, str) or not value.strip():
        raise SchedulingError(f"{parameter} must reference a {rtype}", parameter, "invalid")
    parts = value.strip().rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    rid = parts[-1]
    if len(parts) > 1 and parts[-2] != rtype:
        raise SchedulingError(f"{parameter} must reference a {rtype}, not {parts[-2]}",
                              parameter, "invalid")
    if not rid or len(rid) > 64 or not all(c.isalnum() or c in "-." for c in rid):
        raise SchedulingError(f"{parameter} {value!r} is not a valid {rtype} reference",
                              parameter, "invalid")
    return rid


def find_range(start: object, end: object, now: datetime,
               days: int = FIND_DAYS) -> tuple[datetime, datetime]:
    """The `$find` range: from `start` (default now) to `end` (default `days` later)."""
    low = parse_instant(start, "start") if start is not None else now
    high = parse_instant(end, "end") if end is not None else low + timedelta(days=days)
    if high <= low:
        raise SchedulingError("end must be after start", "end", "invalid")
    return max(low, now), high


# -- slots ---------------------------------------------------------------------------------

def is_telehealth(resource: dict) -> bool:
    """Does a Slot, Schedule or Appointment's serviceType say telehealth?"""
    return any(c.get("system") == TELEHEALTH_SERVICE_TYPE.system
               and c.get("code") == TELEHEALTH_SERVICE_TYPE.code
               for concept in resource.get("serviceType") or []
               for c in concept.get("coding") or [])


def hold_of(slot: dict) -> Hold | None:
    """The hold recorded on a Slot, if any (expired or not)."""
    for ext in slot.get("extension") or []:
        if ext.get("url") != HOLD_EXTENSION:
            continue
        parts = {e.get("url"): e for e in ext.get("extension") or []}
        holder = (parts.get("holder") or {}).get("valueReference") or {}
        expires = (parts.get("expires") or {}).get("valueDateTime")
        try:
            pid = reference_id(holder, "Patient", "holder")
            until = parse_instant(expires, "expires")
        except SchedulingError:
            return None
        return Hold(pid, until)
    return None


def _active_hold(slot: dict, now: datetime) -> Hold | None:
    hold = hold_of(slot)
    if slot.get("status") != "busy-tentative" or hold is None or hold.expires <= now:
        return None
    return hold


def slot_free_for(slot: dict, patient: str | None, now: datetime) -> bool:
    """Free, or held under an expired hold, or held by this patient."""
    status = slot.get("status")
    if status == "free":
        return True
    if status != "busy-tentative":
        return False
    hold = hold_of(slot)
    if hold is None:
        return False  # tentatively busy in the EHR itself, not by a portal hold
    return hold.expires <= now or hold.patient == patient


def held_by_other(slot: dict, patient: str | None, now: datetime) -> bool:
    hold = _active_hold(slot, now)
    return hold is not None and hold.patient != patient


def _without_hold(slot: dict) -> dict:
    out = {k: copy.deepcopy(v) for k, v in slot.items() if k not in ("meta", "extension")}
    rest = [e for e in slot.get("extension") or [] if e.get("url") != HOLD_EXTENSION]
    if rest:
        out["extension"] = copy.deepcopy(rest)
    return out


def held_slot(slot: dict, patient: str, until: datetime) -> dict:
    """The Slot `busy-tentative`, held for `patient` until `until`."""
    out = _without_hold(slot)
    out["status"] = "busy-tentative"
    out["extension"] = [*out.get("extension", []), {
        "url": HOLD_EXTENSION,
        "extension": [
            {"url": "holder", "valueReference": {"reference": f"Patient/{patient}"}},
            {"url": "expires", "valueDateTime": instant(until)},
        ]}]
    return out


def booked_slot(slot: dict) -> dict:
    """The Slot `busy`, without any hold."""
    return dict(_without_hold(slot), status="busy")


def released_slot(slot: dict) -> dict:
    """The Slot `free` again, without any hold."""
    return dict(_without_hold(slot), status="free")


def check_bookable(slot: dict, patient: str | None, now: datetime,
                   parameter: str = "slot") -> None:
    """Refuse a Slot in the past (422) or not free for this patient (409)."""
    if parse_instant(slot.get("start"), parameter) <= now:
        raise SchedulingError(f"Slot/{slot.get('id')} starts in the past", parameter)
    if not slot_free_for(slot, patient, now):
        raise SchedulingError(f"Slot/{slot.get('id')} is taken: choose another time",
                              parameter, "conflict")


# -- appointments --------------------------------------------------------------------------

def practitioner_of(schedule: dict) -> dict | None:
    """The Schedule's first Practitioner actor, as a Reference."""
    return next((dict(a) for a in schedule.get("actor") or []
                 if str(a.get("reference", "")).split("/")[-2:-1] == ["Practitioner"]), None)


def _location_of(schedule: dict) -> dict | None:
    return next((dict(a) for a in schedule.get("actor") or []
                 if str(a.get("reference", "")).split("/")[-2:-1] == ["Location"]), None)


def _participants(patient: str | None, schedule: dict, status: str) -> list[dict]:
    out = [] if patient is None else [
        {"actor": {"reference": f"Patient/{patient}"}, "required": "required",
         "status": status}]
    for actor in (practitioner_of(schedule), _location_of(schedule)):
        if actor is not None:
            out.append({"actor": actor, "required": "required", "status": status})
    return out


def _times(slot: dict) -> dict:
    start = parse_instant(slot.get("start"), "slot")
    end = parse_instant(slot.get("end"), "slot")
    return {"start": slot["start"], "end": slot["end"],
            "minutesDuration": max(int((end - start).total_seconds() // 60), 1)}


def _copied(slot: dict) -> dict:
    return {k: copy.deepcopy(slot[k]) for k in ("serviceType", "specialty", "appointmentType")
            if slot.get(k)}


def proposed_appointment(slot: dict, schedule: dict, patient: str | None) -> dict:
    """What `$find` and `$hold` return: a proposed Appointment on the Slot (never stored)."""
    return {
        "resourceType": "Appointment", "status": "proposed", **_copied(slot), **_times(slot),
        "slot": [{"reference": f"Slot/{slot['id']}"}],
        "participant": _participants(patient, schedule, "needs-action"),
    }


def join_link(appointment_id: str) -> str:
    return JOIN_BASE + appointment_id


def _virtual_service(appointment_id: str) -> dict:
    return {"url": VIRTUAL_SERVICE_EXTENSION, "extension": [
        {"url": "address", "valueUrl": join_link(appointment_id)},
        {"url": "additionalInfo", "valueUrl": "https://telehealth.example.org/help"},
    ]}


def booked_appointment(slot: dict, schedule: dict, patient: str, appointment_id: str,
                       now: datetime, comment: str | None = None,
                       reason: str | None = None) -> dict:
    """The booked Appointment; a telehealth one carries its join link (virtualService)."""
    out: dict = {"resourceType": "Appointment", "id": appointment_id}
    if is_telehealth(slot):
        out["extension"] = [_virtual_service(appointment_id)]
    out.update({"status": "booked", **_copied(slot)})
    if reason:
        out["reasonCode"] = [{"text": reason}]
    out.update({
        **_times(slot), "created": instant(now),
        "slot": [{"reference": f"Slot/{slot['id']}"}],
    })
    if comment:
        out["comment"] = comment
    out["participant"] = _participants(patient, schedule, "accepted")
    return out


def rescheduled_appointment(appointment: dict, slot: dict, schedule: dict,
                            patient: str) -> dict:
    """The Appointment moved to another Slot (its time, practitioner and telehealth link)."""
    out = {k: copy.deepcopy(v) for k, v in appointment.items() if k != "meta"}
    for key in ("serviceType", "specialty", "appointmentType"):
        out.pop(key, None)
    out.update(_copied(slot))
    out.update(_times(slot))
    out["slot"] = [{"reference": f"Slot/{slot['id']}"}]
    out["participant"] = _participants(patient, schedule, "accepted")
    rest = [e for e in out.get("extension") or [] if e.get("url") != VIRTUAL_SERVICE_EXTENSION]
    if is_telehealth(slot):
        rest.append(_virtual_service(out["id"]))
    if rest:
        out["extension"] = rest
    else:
        out.pop("extension", None)
    return _ordered(out)


def cancelled_appointment(appointment: dict, reason: str) -> dict:
    """The Appointment `cancelled` by the patient, with the reason in their words."""
    out = {k: copy.deepcopy(v) for k, v in appointment.items() if k != "meta"}
    out["status"] = "cancelled"
    out["cancelationReason"] = {
        "coding": [{"system": CANCEL_REASON_SYSTEM, "code": "pat", "display": "Patient"}],
        "text": reason}
    return _ordered(out)


_ORDER = ("resourceType", "id", "extension", "status", "cancelationReason", "serviceType",
          "specialty", "appointmentType", "reasonCode")


def _ordered(resource: dict) -> dict:
    """FHIR's element order for readability (JSON does not require it)."""
    head = {k: resource[k] for k in _ORDER if k in resource}
    return {**head, **{k: v for k, v in resource.items() if k not in head}}


def slot_id_of(appointment: dict) -> str | None:
    refs = appointment.get("slot") or []
    if not refs:
        return None
    try:
        return reference_id(refs[0], "Slot", "slot")
    except SchedulingError:
        return None


def patient_of(appointment: dict) -> str | None:
    for part in appointment.get("participant") or []:
        ref = str((part.get("actor") or {}).get("reference", ""))
        if ref.split("/")[-2:-1] == ["Patient"]:
            return ref.rsplit("/", 1)[-1]
    return None


def overlapping(appointments: list[dict], start: str, end: str,
                ignore: str | None = None) -> list[dict]:
    """The booked appointments among `appointments` that overlap [start, end)."""
    low, high = parse_instant(start, "start"), parse_instant(end, "end")
    found = []
    for appt in appointments:
        if appt.get("status") != "booked" or appt.get("id") == ignore:
            continue
        if not appt.get("start") or not appt.get("end"):
            continue
        if parse_instant(appt["start"], "start") < high and parse_instant(appt["end"], "end") > low:
            found.append(appt)
    return found


def check_window(appointment: dict, now: datetime, window_hours: int, action: str,
                 contact: str, parameter: str) -> None:
    """Refuse to change a booked Appointment online within the clinic's window of its start."""
    if appointment.get("status") != "booked":
        raise SchedulingError(
            f"Appointment/{appointment.get('id')} is {appointment.get('status')}; only a "
            f"booked appointment can be {action}", parameter)
    start = parse_instant(appointment.get("start"), parameter)
    if start - now < timedelta(hours=window_hours):
        raise SchedulingError(
            f"Appointments can be {action} online until {window_hours} hours before they "
            f"start; this one starts at {instant(start)}. Please {contact} to change it.",
            parameter)


# -- the visit ------------------------------------------------------------------------------

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
VISIT_EARLY_MINUTES = 30


def check_visit_time(appointment: dict, now: datetime, parameter: str) -> None:
    """A visit starts from `VISIT_EARLY_MINUTES` before the booked time until its end."""
    if appointment.get("status") != "booked":
        raise SchedulingError(
            f"Appointment/{appointment.get('id')} is {appointment.get('status')}; only a "
            "booked appointment can start", parameter)
    start = parse_instant(appointment.get("start"), parameter)
    end = parse_instant(appointment.get("end") or appointment.get("start"), parameter)
    if now < start - timedelta(minutes=VISIT_EARLY_MINUTES) or now > end:
        raise SchedulingError(
            f"This visit can start from {VISIT_EARLY_MINUTES} minutes before "
            f"{instant(start)} until {instant(end)}", parameter)


def visit_encounter(appointment: dict, patient: str, now: datetime) -> dict:
    """The Encounter of a visit that is starting: class VR (virtual) for telehealth, else AMB."""
    virtual = is_telehealth(appointment)
    encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": ACT_CODE, "code": "VR" if virtual else "AMB",
                  "display": "virtual" if virtual else "ambulatory"},
        "subject": {"reference": f"Patient/{patient}"},
        "appointment": [{"reference": f"Appointment/{appointment['id']}"}],
        "period": {"start": instant(now)},
    }
    if appointment.get("serviceType"):
        encounter["serviceType"] = appointment["serviceType"][0]
    practitioners = [p["actor"] for p in appointment.get("participant", [])
                     if str(p.get("actor", {}).get("reference", "")).startswith("Practitioner/")]
    if practitioners:
        encounter["participant"] = [{"individual": ref} for ref in practitioners]
    return encounter


def arrived_appointment(appointment: dict) -> dict:
    """The Appointment once the patient has arrived (or joined the video visit)."""
    return _ordered({**appointment, "status": "arrived"})
