"""Search parameters the embedded store indexes, per resource type, with the element paths.

A path is dotted; a segment ending in `[x]` matches a choice element (`effective[x]` finds
`effectiveDateTime` or `effectivePeriod`). For references, `targets` limits what is indexed:
`patient` indexes only references to Patient, so `patient=123` and `patient=Patient/123` agree.
Every type also has `_id` and `_lastUpdated`, served from the resource table itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.search import SearchParamDef


@dataclass(frozen=True)
class IndexedParam:
    name: str
    type: str
    paths: tuple[str, ...]
    targets: tuple[str, ...] = ()
    documentation: str = ""

    def definition(self) -> SearchParamDef:
        return SearchParamDef(self.name, self.type, self.documentation, self.targets)


def _p(name: str, type_: str, *paths: str, targets: tuple[str, ...] = (), doc: str = ""):
    return IndexedParam(name, type_, paths, targets, doc)


PATIENT = ("Patient",)


def _patient(path: str) -> IndexedParam:
    return _p("patient", "reference", path, targets=PATIENT, doc="The patient the record is about")


def _subject(path: str = "subject") -> list[IndexedParam]:
    return [_patient(path), _p("subject", "reference", path, doc="Who or what it is about")]


PARAMS: dict[str, list[IndexedParam]] = {
    "Patient": [
        _p("identifier", "token", "identifier"),
        _p("name", "string", "name"),
        _p("family", "string", "name.family"),
        _p("given", "string", "name.given"),
        _p("birthdate", "date", "birthDate"),
        _p("gender", "token", "gender"),
        _p("general-practitioner", "reference", "generalPractitioner"),
        _p("organization", "reference", "managingOrganization"),
    ],
    "Observation": [
        *_subject(),
        _p("category", "token", "category"),
        _p("code", "token", "code"),
        _p("date", "date", "effective[x]"),
        _p("status", "token", "status"),
        _p("encounter", "reference", "encounter", targets=("Encounter",)),
        _p("performer", "reference", "performer"),
        _p("based-on", "reference", "basedOn"),
    ],
    "Appointment": [
        _patient("participant.actor"),
        _p("actor", "reference", "participant.actor"),
        _p("practitioner", "reference", "participant.actor", targets=("Practitioner",)),
        _p("location", "reference", "participant.actor", targets=("Location",)),
        _p("date", "date", "start"),
        _p("status", "token", "status"),
        _p("slot", "reference", "slot", targets=("Slot",)),
        _p("service-type", "token", "serviceType"),
        _p("appointment-type", "token", "appointmentType"),
        _p("specialty", "token", "specialty"),
        _p("identifier", "token", "identifier"),
    ],
    "Slot": [
        _p("schedule", "reference", "schedule", targets=("Schedule",)),
        _p("start", "date", "start"),
        _p("status", "token", "status"),
        _p("service-type", "token", "serviceType"),
        _p("appointment-type", "token", "appointmentType"),
        _p("specialty", "token", "specialty"),
    ],
    "Schedule": [
        _p("actor", "reference", "actor"),
        _p("active", "token", "active"),
        _p("service-type", "token", "serviceType"),
        _p("specialty", "token", "specialty"),
        _p("date", "date", "planningHorizon"),
    ],
    "MedicationRequest": [
        *_subject(),
        _p("intent", "token", "intent"),
        _p("status", "token", "status"),
        _p("authoredon", "date", "authoredOn"),
        _p("medication", "reference", "medicationReference", targets=("Medication",)),
        _p("code", "token", "medicationCodeableConcept"),
        _p("requester", "reference", "requester"),
        _p("encounter", "reference", "encounter", targets=("Encounter",)),
        _p("identifier", "token", "identifier"),
    ],
    "Medication": [_p("code", "token", "code"), _p("status", "token", "status")],
    "Communication": [
        *_subject(),
        _p("sender", "reference", "sender"),
        _p("recipient", "reference", "recipient"),
        _p("part-of", "reference", "partOf", targets=("Communication",)),
        _p("sent", "date", "sent"),
        _p("received", "date", "received"),
        _p("status", "token", "status"),
        _p("category", "token", "category"),
        _p("encounter", "reference", "encounter", targets=("Encounter",)),
        _p("based-on", "reference", "basedOn"),
        _p("identifier", "token", "identifier"),
    ],
    "Task": [
        _p("patient", "reference", "for", targets=PATIENT),
        _p("subject", "reference", "for"),
        _p("focus", "reference", "focus"),
        _p("owner", "reference", "owner"),
        _p("requester", "reference", "requester"),
        _p("status", "token", "status"),
        _p("code", "token", "code"),
        _p("intent", "token", "intent"),
        _p("authored-on", "date", "authoredOn"),
        _p("part-of", "reference", "partOf", targets=("Task",)),
        _p("identifier", "token", "identifier"),
    ],
    "Invoice": [
        *_subject(),
        _p("status", "token", "status"),
        _p("date", "date", "date"),
        _p("account", "reference", "account", targets=("Account",)),
        _p("issuer", "reference", "issuer"),
        _p("identifier", "token", "identifier"),
    ],
    "Account": [
        *_subject(),
        _p("status", "token", "status"),
        _p("owner", "reference", "owner"),
        _p("identifier", "token", "identifier"),
    ],
    "Immunization": [
        _patient("patient"),
        _p("date", "date", "occurrence[x]"),
        _p("vaccine-code", "token", "vaccineCode"),
        _p("status", "token", "status"),
    ],
    "Condition": [
        *_subject(),
        _p("clinical-status", "token", "clinicalStatus"),
        _p("verification-status", "token", "verificationStatus"),
        _p("category", "token", "category"),
        _p("code", "token", "code"),
        _p("onset-date", "date", "onset[x]"),
        _p("encounter", "reference", "encounter", targets=("Encounter",)),
    ],
    "AllergyIntolerance": [
        _patient("patient"),
        _p("clinical-status", "token", "clinicalStatus"),
        _p("code", "token", "code"),
    ],
    "DiagnosticReport": [
        *_subject(),
        _p("category", "token", "category"),
        _p("code", "token", "code"),
        _p("date", "date", "effective[x]"),
        _p("status", "token", "status"),
        _p("result", "reference", "result", targets=("Observation",)),
        _p("encounter", "reference", "encounter", targets=("Encounter",)),
    ],
    "Encounter": [
        *_subject(),
        _p("date", "date", "period"),
        _p("class", "token", "class"),
        _p("status", "token", "status"),
        _p("type", "token", "type"),
        _p("practitioner", "reference", "participant.individual", targets=("Practitioner",)),
        _p("participant", "reference", "participant.individual"),
        _p("appointment", "reference", "appointment", targets=("Appointment",)),
        _p("service-provider", "reference", "serviceProvider"),
    ],
    "Practitioner": [
        _p("name", "string", "name"),
        _p("family", "string", "name.family"),
        _p("given", "string", "name.given"),
        _p("identifier", "token", "identifier"),
    ],
    "PractitionerRole": [
        _p("practitioner", "reference", "practitioner"),
        _p("organization", "reference", "organization"),
        _p("location", "reference", "location"),
        _p("specialty", "token", "specialty"),
        _p("role", "token", "code"),
    ],
    "Organization": [_p("name", "string", "name"), _p("identifier", "token", "identifier")],
    "Location": [_p("name", "string", "name"), _p("organization", "reference",
                                                   "managingOrganization")],
    "CareTeam": [
        *_subject(),
        _p("participant", "reference", "participant.member"),
        _p("status", "token", "status"),
        _p("category", "token", "category"),
    ],
    "DocumentReference": [
        *_subject(),
        _p("category", "token", "category"),
        _p("type", "token", "type"),
        _p("date", "date", "date"),
        _p("status", "token", "status"),
        _p("author", "reference", "author"),
    ],
    "Procedure": [*_subject(), _p("date", "date", "performed[x]"), _p("code", "token", "code")],
    "CarePlan": [*_subject(), _p("status", "token", "status"), _p("category", "token", "category")],
    "Goal": [*_subject()],
    "Claim": [_patient("patient")],
    "ExplanationOfBenefit": [_patient("patient")],
    "MedicationAdministration": [*_subject()],
    "MedicationStatement": [*_subject()],
    "ImagingStudy": [*_subject()],
    "Device": [_patient("patient")],
    "Provenance": [_p("target", "reference", "target"), _patient("target")],
    "Coverage": [_p("beneficiary", "reference", "beneficiary"), _patient("beneficiary")],
    "ServiceRequest": [*_subject()],
    "PaymentNotice": [_p("request", "reference", "request"), _p("created", "date", "created")],
    "AppointmentResponse": [
        _p("appointment", "reference", "appointment", targets=("Appointment",)),
        _patient("actor"),
        _p("actor", "reference", "actor"),
    ],
    "AuditEvent": [_p("date", "date", "recorded"), _patient("entity.what")],
}

# The date parameter that `_sort=date` (or its own name) orders by, per type.
SORT_DATE: dict[str, str] = {
    "Patient": "birthdate",
    "Observation": "date",
    "Appointment": "date",
    "Slot": "start",
    "MedicationRequest": "authoredon",
    "Communication": "sent",
    "Task": "authored-on",
    "Invoice": "date",
    "Immunization": "date",
    "Condition": "onset-date",
    "DiagnosticReport": "date",
    "Encounter": "date",
    "DocumentReference": "date",
    "Procedure": "date",
    "Schedule": "date",
    "PaymentNotice": "created",
    "AuditEvent": "date",
}


# Every type can be found by `identifier` (types without the element simply index nothing):
# the REST adapter's outbox relies on it for conditional creates on the identifier it assigns.
IDENTIFIER = _p("identifier", "token", "identifier", doc="A business identifier")


def params_for(resource_type: str) -> dict[str, IndexedParam]:
    return {"identifier": IDENTIFIER, **{p.name: p for p in PARAMS.get(resource_type, ())}}
