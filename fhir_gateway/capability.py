"""The gateway's CapabilityStatement, built from what the adapter says its EHR can do."""

from __future__ import annotations

from adapters.base import Capabilities
from mappings.r4 import FHIR_VERSION

SEARCH_PARAM_BASE = "http://hl7.org/fhir/SearchParameter/"
RESULT_PARAMS = (
    ("_count", "number", "Page size"),
    ("_sort", "string", "Order of results: date, -date, _lastUpdated, -_lastUpdated"),
    ("_include", "special", "Include referenced resources"),
    ("_revinclude", "special", "Include resources that refer to the results"),
    ("_summary", "token", "true, text, data, count or false"),
    ("_elements", "string", "Comma-separated elements to return"),
)


def capability_statement(caps: Capabilities, base: str, version: str,
                         date: str) -> dict:
    resources = []
    for rtype, tc in sorted(caps.types.items()):
        entry: dict = {
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": code} for code in sorted(tc.interactions)],
            "versioning": "versioned-update" if tc.versioned else "no-version",
            "readHistory": "vread" in tc.interactions,
            "updateCreate": "update" in tc.interactions,
            "conditionalCreate": tc.conditional_create,
            "conditionalUpdate": tc.conditional_update,
            "conditionalDelete": "not-supported",
        }
        if "search-type" in tc.interactions:
            entry["searchInclude"] = [f"{rtype}:{p}" for p in tc.includes]
            revs = sorted(
                f"{src}:{p.name}" for src, other in caps.types.items()
                for p in other.search_params.values()
                if p.type == "reference" and rtype in p.targets
            )
            if revs:
                entry["searchRevInclude"] = revs
            entry["searchParam"] = [
                {"name": p.name, "type": p.type,
                 "definition": f"{SEARCH_PARAM_BASE}{_definition_id(rtype, p.name)}",
                 **({"documentation": p.documentation} if p.documentation else {})}
                for p in sorted(tc.search_params.values(), key=lambda p: p.name)
            ]
        if tc.operations:
            entry["operation"] = [{"name": op, "definition": f"{base}/OperationDefinition/{op}"}
                                  for op in sorted(tc.operations)]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "id": "fhir-gateway",
        "url": f"{base}/metadata",
        "version": version,
        "name": "FhirGateway",
        "title": "FHIR R4 gateway for patient portals",
        "status": "active",
        "experimental": False,
        "date": date,
        "publisher": "fhir-gateway",
        "kind": "instance",
        "software": {"name": "fhir-gateway", "version": version},
        "implementation": {"description": f"FHIR R4 gateway over {caps.software}", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": [],
        "rest": [{
            "mode": "server",
            "documentation": "Search results page with opaque signed cursors (_cursor).",
            "resource": resources,
            "interaction": [{"code": c} for c in sorted(caps.system_interactions)],
            "searchParam": [{"name": n, "type": t, "documentation": d}
                            for n, t, d in RESULT_PARAMS],
        }],
    }


def _definition_id(rtype: str, name: str) -> str:
    if name.startswith("_"):
        return f"Resource-{name[1:]}"
    if name == "patient" and rtype not in ("Patient",):
        return f"clinical-{name}"
    return f"{rtype}-{name}"
