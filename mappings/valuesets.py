"""Required bindings of FHIR R4 that the gateway enforces on every write.

The model libraries check structure but not coded values (`gender: "xyz"` passes them), so the
codes that drive behaviour - genders, statuses, intents - are checked here against the R4 value
sets. Each rule: resource type, a dotted path (lists are walked), the allowed codes, and for
CodeableConcepts the code system whose codings must come from the set.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Binding:
    resource_type: str
    path: str
    codes: frozenset[str]
    system: str | None = None  # set when the element is a CodeableConcept


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


GENDER = _codes("male female other unknown")
REQUEST_STATUS = _codes("draft active on-hold revoked completed entered-in-error unknown")
REQUEST_PRIORITY = _codes("routine urgent asap stat")
EVENT_STATUS = _codes(
    "preparation in-progress not-done on-hold stopped completed entered-in-error unknown"
)
_CLINICAL = "http://terminology.hl7.org/CodeSystem/"

BINDINGS: tuple[Binding, ...] = (
    Binding("Patient", "gender", GENDER),
    Binding("Patient", "contact.gender", GENDER),
    Binding("Practitioner", "gender", GENDER),
    Binding("RelatedPerson", "gender", GENDER),
    Binding("Person", "gender", GENDER),
    Binding("Observation", "status",
            _codes("registered preliminary final amended corrected cancelled entered-in-error "
                   "unknown")),
    Binding("DiagnosticReport", "status",
            _codes("registered partial preliminary final amended corrected appended cancelled "
                   "entered-in-error unknown")),
    Binding("Appointment", "status",
            _codes("proposed pending booked arrived fulfilled cancelled noshow entered-in-error "
                   "checked-in waitlist")),
    Binding("Appointment", "participant.status",
            _codes("accepted declined tentative needs-action")),
    Binding("Appointment", "participant.required",
            _codes("required optional information-only")),
    Binding("AppointmentResponse", "participantStatus",
            _codes("accepted declined tentative needs-action")),
    Binding("Slot", "status", _codes("busy free busy-unavailable busy-tentative entered-in-error")),
    Binding("MedicationRequest", "status",
            _codes("active on-hold cancelled completed entered-in-error stopped draft unknown")),
    Binding("MedicationRequest", "intent",
            _codes("proposal plan order original-order reflex-order filler-order instance-order "
                   "option")),
    Binding("MedicationRequest", "priority", REQUEST_PRIORITY),
    Binding("Task", "status",
            _codes("draft requested received accepted rejected ready cancelled in-progress "
                   "on-hold failed completed entered-in-error")),
    Binding("Task", "intent",
            _codes("unknown proposal plan order original-order reflex-order filler-order "
                   "instance-order option")),
    Binding("Task", "priority", REQUEST_PRIORITY),
    Binding("Communication", "status", EVENT_STATUS),
    Binding("Communication", "priority", REQUEST_PRIORITY),
    Binding("CommunicationRequest", "status", REQUEST_STATUS),
    Binding("Invoice", "status", _codes("draft issued balanced cancelled entered-in-error")),
    Binding("Invoice", "lineItem.priceComponent.type",
            _codes("base surcharge deduction discount tax informational")),
    Binding("Account", "status", _codes("active inactive entered-in-error on-hold unknown")),
    Binding("Immunization", "status", _codes("completed entered-in-error not-done")),
    Binding("Encounter", "status",
            _codes("planned arrived triaged in-progress onleave finished cancelled "
                   "entered-in-error unknown")),
    Binding("DocumentReference", "status", _codes("current superseded entered-in-error")),
    Binding("Schedule", "active", frozenset({"true", "false"})),
    Binding("CareTeam", "status",
            _codes("proposed active suspended inactive entered-in-error")),
    Binding("AllergyIntolerance", "type", _codes("allergy intolerance")),
    Binding("AllergyIntolerance", "criticality", _codes("low high unable-to-assess")),
    Binding("AllergyIntolerance", "clinicalStatus", _codes("active inactive resolved"),
            system=_CLINICAL + "allergyintolerance-clinical"),
    Binding("AllergyIntolerance", "verificationStatus",
            _codes("unconfirmed confirmed refuted entered-in-error"),
            system=_CLINICAL + "allergyintolerance-verification"),
    Binding("Condition", "clinicalStatus",
            _codes("active recurrence relapse inactive remission resolved"),
            system=_CLINICAL + "condition-clinical"),
    Binding("Condition", "verificationStatus",
            _codes("unconfirmed provisional differential confirmed refuted entered-in-error"),
            system=_CLINICAL + "condition-ver-status"),
    Binding("PaymentNotice", "status", _codes("active cancelled draft entered-in-error")),
)

_BY_TYPE: dict[str, list[Binding]] = {}
for _b in BINDINGS:
    _BY_TYPE.setdefault(_b.resource_type, []).append(_b)


def _walk(node: object, parts: list[str]):
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, parts)
        return
    if not parts:
        yield node
        return
    if isinstance(node, dict) and parts[0] in node:
        yield from _walk(node[parts[0]], parts[1:])


def binding_errors(resource: dict) -> list[tuple[str, str]]:
    """(expression, message) for each coded value outside its required R4 value set."""
    rtype = resource.get("resourceType", "")
    errors: list[tuple[str, str]] = []
    for b in _BY_TYPE.get(rtype, ()):
        for value in _walk(resource, b.path.split(".")):
            if b.system is None:
                shown = str(value).lower() if isinstance(value, bool) else value
                if shown not in b.codes:
                    errors.append((f"{rtype}.{b.path}",
                                   f"{value!r} is not in the required value set "
                                   f"({', '.join(sorted(b.codes))})"))
                continue
            for coding in (value or {}).get("coding", []) if isinstance(value, dict) else []:
                if coding.get("system") == b.system and coding.get("code") not in b.codes:
                    errors.append((f"{rtype}.{b.path}",
                                   f"{coding.get('code')!r} is not a code of {b.system}"))
    return errors
