"""Patient education: `Patient/{id}/$education`, and `DocumentReference/$education` (Infobutton).

`Patient/{id}/$education` gathers, with the caller's own narrowing (as `$summary` does), the
codes of the patient's active Conditions, active MedicationRequests (the coded medicine, or the
code of the Medication it references, read through the adapter) and abnormal results of the last
12 months (interpretation H, L, HH, LL, A or AA, on the Observation or a component), and answers
the matching topics of `mappings.portal.education` as a searchset Bundle of DocumentReferences.

`DocumentReference/$education` answers an HL7 Infobutton-style knowledge request: the topics for
`mainSearchCriteria.v.c` in the code system `mainSearchCriteria.v.cs` (an OID or a FHIR URI).

The DocumentReferences are built on each request and never stored: their ids are the topic ids,
and the Bundle names them by `urn:uuid:` fullUrls (stable per topic), not by server URLs that
would not resolve.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from adapters.base import SearchPage
from adapters.errors import Forbidden, Gone, Invalid, NotFound
from fhir_gateway import bundles
from fhir_gateway.operations.common import confined_search, patient_for
from fhir_gateway.operations.registry import OperationContext, OperationSpec, ParamSpec
from fhir_gateway.request import FhirResponse
from fhir_gateway.validation import validate_resource
from mappings.portal.education import Topic, as_document_reference, code_system, topics_for
from mappings.references import reference_target
from mappings.terminology import OBSERVATION_INTERPRETATION

ABNORMAL = frozenset({"H", "L", "HH", "LL", "A", "AA"})
NOT_REAL = frozenset({"entered-in-error", "refuted"})  # Condition verification statuses
CODE = "mainSearchCriteria.v.c"
CODE_SYSTEM = "mainSearchCriteria.v.cs"

Codes = list[tuple[str, str]]


def _codings(concept: object) -> Codes:
    if not isinstance(concept, dict):
        return []
    return [(c["system"], c["code"]) for c in concept.get("coding") or []
            if isinstance(c, dict) and isinstance(c.get("system"), str)
            and isinstance(c.get("code"), str)]


def _status(concept: object) -> str | None:
    return next((code for _, code in _codings(concept)), None)


def _abnormal(element: dict) -> bool:
    return any(isinstance(c, dict) and c.get("code") in ABNORMAL
               and c.get("system", OBSERVATION_INTERPRETATION) == OBSERVATION_INTERPRETATION
               for concept in element.get("interpretation") or [] if isinstance(concept, dict)
               for c in concept.get("coding") or [])


def _condition_codes(conditions: list[dict]) -> Codes:
    return [code for c in conditions
            if _status(c.get("verificationStatus")) not in NOT_REAL
            for code in _codings(c.get("code"))]


def _medication_codes(ctx: OperationContext, requests: list[dict]) -> Codes:
    """The coded medicine of each request, or the code of the Medication it references
    (contained, or read through the adapter; a missing one is skipped)."""
    codes: Codes = []
    read: dict[str, Codes] = {}
    for request in requests:
        if "medicationCodeableConcept" in request:
            codes += _codings(request["medicationCodeableConcept"])
            continue
        ref = (request.get("medicationReference") or {}).get("reference")
        if not isinstance(ref, str):
            continue
        if ref.startswith("#"):
            contained = next((r for r in request.get("contained") or []
                              if isinstance(r, dict) and r.get("resourceType") == "Medication"
                              and r.get("id") == ref[1:]), {})
            codes += _codings(contained.get("code"))
            continue
        target = reference_target(ref)
        if target is None or target[0] != "Medication":
            continue
        if target[1] not in read:
            try:
                medication = ctx.service.adapter.read("Medication", target[1])
            except (NotFound, Gone):
                medication = {}
            read[target[1]] = _codings(medication.get("code"))
        codes += read[target[1]]
    return codes


def _result_codes(observations: list[dict]) -> Codes:
    """The codes of abnormal results: the Observation's, and each abnormal component's."""
    codes: Codes = []
    for obs in observations:
        if obs.get("status") in ("entered-in-error", "cancelled"):
            continue
        parts = [p for p in obs.get("component") or [] if isinstance(p, dict) and _abnormal(p)]
        if _abnormal(obs) or parts:
            codes += _codings(obs.get("code"))
        for part in parts:
            codes += _codings(part.get("code"))
    return codes


def _bundle(ctx: OperationContext, topics: list[Topic], patient_id: str | None, path: str,
            params: list[tuple[str, str]]) -> dict:
    docs = [validate_resource(as_document_reference(t, ctx.base, patient_id), "DocumentReference")
            for t in topics]
    bundle = bundles.searchset(ctx.base, SearchPage(resources=docs, total=len(docs)),
                               bundles.page_url(ctx.base, path, params), None, None, [])
    for entry in bundle.get("entry", []):
        name = f"{ctx.base}/patient-education/{entry['resource']['id']}"
        entry["fullUrl"] = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"
    return bundle


def patient_education(ctx: OperationContext) -> FhirResponse:
    ctx.params["patient"] = [ctx.request.id]
    pid = patient_for(ctx)  # 404 unless the caller may see this patient
    since = (datetime.now(UTC) - timedelta(days=365)).date().isoformat()

    def find(rtype: str, params: list[tuple[str, str]]) -> list[dict]:
        try:
            return confined_search(ctx, rtype, [("patient", pid), *params])
        except Forbidden:
            return []  # a type the token may not read adds no topics

    codes = (_condition_codes(find("Condition", [("clinical-status", "active,recurrence,relapse")]))
             + _medication_codes(ctx, find("MedicationRequest", [("status", "active")]))
             + _result_codes(find("Observation", [("date", f"ge{since}"), ("_sort", "-date")])))
    bundle = _bundle(ctx, topics_for(codes), pid, f"Patient/{pid}/$education", [])
    return FhirResponse(200, bundle)


def infobutton(ctx: OperationContext) -> FhirResponse:
    raw_system = ctx.one(CODE_SYSTEM, required=True)
    raw_code = ctx.one(CODE, required=True)
    if not isinstance(raw_system, str) or code_system(raw_system) is None:
        raise Invalid(f"{CODE_SYSTEM} must be SNOMED CT, ICD-10-CM, RxNorm or LOINC, as an OID "
                      "(2.16.840.1.113883.6.96, .6.90, .6.88, .6.1) or a FHIR code system URI",
                      expression=CODE_SYSTEM)
    if not isinstance(raw_code, str) or not raw_code.strip():
        raise Invalid(f"{CODE} must be a code", expression=CODE)
    system = code_system(raw_system)
    topics = topics_for([(system, raw_code.strip())])
    params = [(CODE_SYSTEM, raw_system), (CODE, raw_code)]
    return FhirResponse(200, _bundle(ctx, topics, None, "DocumentReference/$education", params))


PATIENT_EDUCATION = OperationSpec(
    name="education", resource_type="Patient", handler=patient_education, instance=True,
    needs=(("Patient", "r"), ("DocumentReference", "r")),
    title="Patient education for the patient's problems, medicines and results",
    description="A searchset Bundle of plain-language patient education DocumentReferences "
                "(built on request, not stored) for the patient's active conditions, active "
                "medication requests and abnormal results of the last 12 months.",
    parameters=(ParamSpec("return", "Bundle", min=1, use="out"),),
)
INFOBUTTON = OperationSpec(
    name="education", resource_type="DocumentReference", handler=infobutton, instance=False,
    type_level=True, needs=(("DocumentReference", "r"), ("DocumentReference", "s")),
    title="Patient education for a code (Infobutton-style)",
    description="A searchset Bundle of patient education DocumentReferences for one code, "
                "asked as an HL7 Infobutton knowledge request; an empty Bundle when the "
                "catalogue has no topic for it.",
    parameters=(
        ParamSpec(CODE, "string", min=1, documentation="The code"),
        ParamSpec(CODE_SYSTEM, "string", min=1,
                  documentation="Its code system: an OID (SNOMED CT 2.16.840.1.113883.6.96, "
                                "ICD-10-CM 2.16.840.1.113883.6.90, RxNorm "
                                "2.16.840.1.113883.6.88, LOINC 2.16.840.1.113883.6.1) or the "
                                "FHIR code system URI"),
        ParamSpec("return", "Bundle", min=1, use="out"),
    ),
)

SPECS = [PATIENT_EDUCATION, INFOBUTTON]
