"""The clinic itself: its Organization, Locations, Practitioners with roles, Schedules and Slots,
and the formulary's Medication resources.

Slots are 30 minutes on weekdays over the 30 days after `today`. The telehealth practitioner's
schedule and slots carry serviceType TELEHEALTH_SERVICE_TYPE (see the package docstring); the
others are in-person office visits at the main location. Patients book some of the slots, which
turns them `busy` (the slot dicts are shared with the patient builders).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

from mappings import terminology as term

from ._common import at, concept, iso, npi, ref

ORG_ID = "org-01"
MAIN_LOCATION = "loc-01"
VIRTUAL_LOCATION = "loc-02"
ORG_NAME = "Maple Grove Family Health"
SLOT_MINUTES = 30
SLOT_DAYS = 30
IN_PERSON_TIMES = ((9, 0), (9, 30), (10, 0), (11, 0), (13, 30), (14, 0), (15, 0), (15, 30))
TELEHEALTH_TIMES = ((8, 0), (8, 30), (12, 0), (12, 30), (17, 0), (17, 30))


@dataclass(frozen=True)
class Staff:
    id: str
    given: str
    family: str
    gender: str
    specialty: str  # key of term.SPECIALTIES
    primary_care: bool = False
    telehealth: bool = False

    @property
    def number(self) -> str:
        return self.id.split("-")[1]

    @property
    def display(self) -> str:
        return f"Dr. {self.given} {self.family}"

    @property
    def location(self) -> str:
        return VIRTUAL_LOCATION if self.telehealth else MAIN_LOCATION


STAFF: tuple[Staff, ...] = (
    Staff("prac-01", "Sarah", "Mitchell", "female", "family-medicine", primary_care=True),
    Staff("prac-02", "David", "Chen", "male", "internal-medicine", primary_care=True),
    Staff("prac-03", "Maria", "Lopez", "female", "cardiology"),
    Staff("prac-04", "Robert", "Patel", "male", "endocrinology"),
    Staff("prac-05", "Karen", "Walsh", "female", "family-medicine", telehealth=True),
)


def service_type(telehealth: bool) -> dict:
    if telehealth:
        return concept(term.TELEHEALTH_SERVICE_TYPE, text=term.TELEHEALTH_SERVICE_TEXT)
    return concept(term.OFFICE_VISIT_SERVICE_TYPE, text=term.OFFICE_VISIT_SERVICE_TEXT)


def specialty_concept(key: str) -> dict:
    s = term.SPECIALTIES[key]
    return {"coding": [{"system": term.SNOMED, "code": s.snomed, "display": s.snomed_display},
                       {"system": term.NUCC, "code": s.nucc, "display": s.nucc_display}],
            "text": s.nucc_display}


@dataclass
class Clinic:
    """The clinic's resources plus what patient builders need: staff and bookable slots."""

    today: dt.date
    resources: list[dict] = field(default_factory=list)
    slots: dict[str, list[dict]] = field(default_factory=dict)  # practitioner id -> slots

    def primary_care(self) -> list[Staff]:
        return [s for s in STAFF if s.primary_care]

    def specialist(self, specialty: str) -> Staff | None:
        return next((s for s in STAFF if s.specialty == specialty and not s.primary_care
                     and not s.telehealth), None)

    def telehealth(self) -> Staff:
        return next(s for s in STAFF if s.telehealth)

    def book(self, practitioner_id: str, rng: random.Random) -> dict | None:
        """Take a free slot of a practitioner (turning it busy), keeping at least half free."""
        pool = self.slots.get(practitioner_id, [])
        free = [s for s in pool if s["status"] == "free"]
        if len(free) <= len(pool) // 2:
            return None
        slot = rng.choice(free)
        slot["status"] = "busy"
        return slot


def organization() -> dict:
    return {
        "resourceType": "Organization", "id": ORG_ID,
        "identifier": [{"system": term.NPI, "value": npi("100000001")}],
        "active": True,
        "type": [concept(term.PROVIDER_ORGANIZATION)],
        "name": ORG_NAME,
        "telecom": [{"system": "phone", "value": "(217) 555-0100", "use": "work"},
                    {"system": "url", "value": "https://portal.example.org", "use": "work"}],
        "address": [{"use": "work", "line": ["100 Main Street"], "city": "Springfield",
                     "state": "IL", "postalCode": "62701", "country": "US"}],
    }


def locations() -> list[dict]:
    main = {
        "resourceType": "Location", "id": MAIN_LOCATION, "status": "active",
        "name": f"{ORG_NAME} - Main Clinic", "mode": "instance",
        "telecom": [{"system": "phone", "value": "(217) 555-0100", "use": "work"}],
        "address": {"use": "work", "line": ["100 Main Street"], "city": "Springfield",
                    "state": "IL", "postalCode": "62701", "country": "US"},
        "physicalType": concept(term.PHYSICAL_BUILDING),
        "managingOrganization": ref("Organization", ORG_ID),
    }
    virtual = {
        "resourceType": "Location", "id": VIRTUAL_LOCATION, "status": "active",
        "name": f"{ORG_NAME} - Virtual Care", "mode": "instance",
        "description": "Telehealth video visits, joined from the patient portal.",
        "telecom": [{"system": "url", "value": "https://portal.example.org/video",
                     "use": "work"}],
        "physicalType": concept(term.PHYSICAL_VIRTUAL),
        "managingOrganization": ref("Organization", ORG_ID),
    }
    return [main, virtual]


def practitioner(s: Staff, index: int) -> dict:
    number = npi(f"1{index:03d}{index * 7919 % 100000:05d}")
    return {
        "resourceType": "Practitioner", "id": s.id,
        "identifier": [{"system": term.NPI, "value": number}],
        "active": True,
        "name": [{"use": "official", "family": s.family, "given": [s.given], "prefix": ["Dr."],
                  "suffix": ["MD"], "text": s.display}],
        "telecom": [{"system": "phone", "value": f"(217) 555-01{10 + index:02d}", "use": "work"},
                    {"system": "email", "value": f"{s.given.lower()}.{s.family.lower()}"
                                                 "@example.org", "use": "work"}],
        "gender": s.gender,
    }


def practitioner_role(s: Staff) -> dict:
    hours = ("08:00:00", "18:00:00") if s.telehealth else ("09:00:00", "16:00:00")
    role = {
        "resourceType": "PractitionerRole", "id": f"role-{s.number}", "active": True,
        "practitioner": ref("Practitioner", s.id, s.display),
        "organization": ref("Organization", ORG_ID, ORG_NAME),
        "code": [concept(term.ROLE_DOCTOR)],
        "specialty": [specialty_concept(s.specialty)],
        "location": [ref("Location", s.location)],
        "telecom": [{"system": "phone", "value": "(217) 555-0100", "use": "work"}],
        "availableTime": [{"daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                           "availableStartTime": hours[0], "availableEndTime": hours[1]}],
    }
    if s.telehealth:
        role["telecom"].append({"system": "url", "value": "https://portal.example.org/video",
                                "use": "work"})
        role["availabilityExceptions"] = "Telehealth (video) visits only."
    return role


def schedule(s: Staff, today: dt.date) -> dict:
    first = today + dt.timedelta(days=1)
    last = today + dt.timedelta(days=SLOT_DAYS)
    kind = "Telehealth" if s.telehealth else "Office"
    return {
        "resourceType": "Schedule", "id": f"sched-{s.number}", "active": True,
        "serviceType": [service_type(s.telehealth)],
        "specialty": [specialty_concept(s.specialty)],
        "actor": [ref("Practitioner", s.id, s.display), ref("Location", s.location)],
        "planningHorizon": {"start": iso(at(first, 0)),
                            "end": iso(at(last, 23, 59))},
        "comment": f"{kind} visits with {s.display}",
    }


def slots(s: Staff, today: dt.date) -> list[dict]:
    times = TELEHEALTH_TIMES if s.telehealth else IN_PERSON_TIMES
    out = []
    for offset in range(1, SLOT_DAYS + 1):
        day = today + dt.timedelta(days=offset)
        if day.weekday() >= 5:
            continue
        for hour, minute in times:
            start = at(day, hour, minute)
            out.append({
                "resourceType": "Slot",
                "id": f"slot-{s.number}-{day:%Y%m%d}-{hour:02d}{minute:02d}",
                "serviceType": [service_type(s.telehealth)],
                "specialty": [specialty_concept(s.specialty)],
                "appointmentType": concept(term.APPOINTMENT_ROUTINE),
                "schedule": ref("Schedule", f"sched-{s.number}"),
                "status": "free",
                "start": iso(start),
                "end": iso(start + dt.timedelta(minutes=SLOT_MINUTES)),
                "comment": ("Telehealth (video) visit" if s.telehealth
                            else "In-person office visit"),
            })
    return out


def medication(drug: term.Drug) -> dict:
    return {
        "resourceType": "Medication", "id": f"med-{drug.rxnorm}",
        "code": {"coding": [{"system": term.RXNORM, "code": drug.rxnorm,
                             "display": drug.display}], "text": drug.text},
        "status": "active",
    }


def build_clinic(today: dt.date) -> Clinic:
    clinic = Clinic(today)
    res = clinic.resources
    res.append(organization())
    res.extend(locations())
    res.extend(practitioner(s, i) for i, s in enumerate(STAFF, start=1))
    res.extend(practitioner_role(s) for s in STAFF)
    res.extend(schedule(s, today) for s in STAFF)
    for s in STAFF:
        clinic.slots[s.id] = slots(s, today)
        res.extend(clinic.slots[s.id])
    res.extend(medication(d) for d in term.DRUGS.values())
    return clinic
