"""An International Patient Summary style document Bundle, built from a patient's resources.

Follows the shape of the HL7 IPS (Bundle type `document`, first entry a Composition of type LOINC
60591-5 "Patient summary Document", one section per topic with the IPS section LOINC codes, an
`emptyReason` where a section has nothing). It is built for viewing and exchange, not claimed
conformant to the IPS profiles (those also require coded "no known" statements). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

LOINC = "http://loinc.org"
EMPTY_REASON = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason",
                            "code": "nilknown", "display": "Nil Known"}]}


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    loinc: str
    display: str


SECTIONS = (
    Section("problems", "Active problems", "11450-4", "Problem list - Reported"),
    Section("medications", "Medications", "10160-0", "History of Medication use Narrative"),
    Section("allergies", "Allergies and intolerances", "48765-2",
            "Allergies and adverse reactions Document"),
    Section("immunizations", "Immunizations", "11369-6", "History of Immunization Narrative"),
    Section("results", "Recent results", "30954-2",
            "Relevant diagnostic tests/laboratory data Narrative"),
    Section("vital-signs", "Vital signs", "8716-3", "Vital signs"),
)


def build_summary(patient: dict, sections: dict[str, list[dict]], *, base: str,
                  document_id: str, now: str) -> dict:
    """The document Bundle: Composition, the Patient, then every resource a section cites."""
    pid = patient["id"]
    full = f"{base}/Patient/{pid}"
    entries = []
    composition_sections = []
    for section in SECTIONS:
        resources = sections.get(section.key, [])
        item: dict = {
            "title": section.title,
            "code": {"coding": [{"system": LOINC, "code": section.loinc,
                                 "display": section.display}]},
            "text": {"status": "generated",
                     "div": _div(section.title, len(resources))},
        }
        if resources:
            item["entry"] = [{"reference": f"{base}/{r['resourceType']}/{r['id']}"}
                             for r in resources]
            entries += resources
        else:
            item["emptyReason"] = EMPTY_REASON
        composition_sections.append(item)
    composition = {
        "resourceType": "Composition",
        "id": document_id,
        "status": "final",
        "type": {"coding": [{"system": LOINC, "code": "60591-5",
                             "display": "Patient summary Document"}]},
        "subject": {"reference": full},
        "date": now,
        "author": [{"display": "fhir-gateway patient summary"}],
        "title": "Patient summary",
        "confidentiality": "N",
        "section": composition_sections,
    }
    seen = set()
    unique = []
    for resource in entries:
        key = (resource["resourceType"], resource["id"])
        if key not in seen:
            seen.add(key)
            unique.append(resource)
    return {
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{document_id}"},
        "type": "document",
        "timestamp": now,
        "entry": [{"fullUrl": f"{base}/Composition/{document_id}", "resource": composition},
                  {"fullUrl": full, "resource": patient}]
        + [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r} for r in unique],
    }


def _div(title: str, count: int) -> str:
    words = "Nothing recorded" if count == 0 else f"{count} item{'s' if count != 1 else ''}"
    return f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{title}: {words}.</p></div>'
