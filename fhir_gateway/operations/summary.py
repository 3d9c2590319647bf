"""`Patient/{id}/$summary`: the patient's summary as an IPS-style document Bundle.

Gathers, with the caller's own narrowing: active problems, active medications, allergies,
immunizations, the latest result per lab test (last 12 months) and the latest vital sign per
code, then builds the document with `mappings.portal.summary`. Types the token may not read are
left out as empty sections rather than refused, so a narrowly-scoped app still gets a document.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from adapters.errors import Forbidden
from fhir_gateway.operations.common import confined_search, patient_for
from fhir_gateway.operations.registry import OperationContext, OperationSpec, ParamSpec
from fhir_gateway.request import FhirResponse
from mappings.portal.summary import build_summary

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category|"


def _latest_per_code(observations: list[dict]) -> list[dict]:
    latest: dict[str, dict] = {}
    for obs in observations:  # newest first
        coding = (obs.get("code", {}).get("coding") or [{}])[0]
        latest.setdefault(f"{coding.get('system')}|{coding.get('code')}", obs)
    return list(latest.values())


def summary(ctx: OperationContext) -> FhirResponse:
    ctx.params["patient"] = [ctx.request.id]
    pid = patient_for(ctx)  # 404 unless the caller may see this patient
    patient = ctx.service.adapter.read("Patient", pid)
    since = (datetime.now(UTC) - timedelta(days=365)).date().isoformat()

    def find(rtype: str, params: list[tuple[str, str]]) -> list[dict]:
        try:
            return confined_search(ctx, rtype, [("patient", pid), *params])
        except Forbidden:
            return []

    sections = {
        "problems": find("Condition", [("clinical-status", "active")]),
        "medications": find("MedicationRequest", [("status", "active")]),
        "allergies": find("AllergyIntolerance", []),
        "immunizations": find("Immunization", [("_sort", "-date")]),
        "results": _latest_per_code(find("Observation", [
            ("category", CATEGORY + "laboratory"), ("date", f"ge{since}"), ("_sort", "-date")])),
        "vital-signs": _latest_per_code(find("Observation", [
            ("category", CATEGORY + "vital-signs"), ("_sort", "-date")])),
    }
    now = datetime.now(UTC).isoformat(timespec="seconds")
    bundle = build_summary(patient, sections, base=ctx.base, document_id=str(uuid.uuid4()),
                           now=now)
    return FhirResponse(200, bundle)


SPECS = [OperationSpec(
    name="summary", resource_type="Patient", handler=summary, instance=True,
    needs=(("Patient", "r"),),
    title="Patient summary",
    description="An International Patient Summary style document Bundle: problems, "
                "medications, allergies, immunizations, recent results and vital signs.",
    parameters=(ParamSpec("return", "Bundle", min=1, use="out"),),
)]
