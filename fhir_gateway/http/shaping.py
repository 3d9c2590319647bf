"""`_summary` and `_elements`: return part of a resource, marked SUBSETTED as FHIR asks."""

from __future__ import annotations

import functools

from fhir_gateway.validation import _r4b_model

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED", "display": "Resource encoded in summary mode"}
ALWAYS = ("resourceType", "id", "meta")


@functools.cache
def _flagged(resource_type: str, flag: str) -> frozenset[str]:
    """Top-level element names whose model metadata carries `flag`."""
    model = _r4b_model(resource_type)
    if model is None:
        return frozenset()
    return frozenset(info.alias or name for name, info in model.model_fields.items()
                     if isinstance(info.json_schema_extra, dict)
                     and info.json_schema_extra.get(flag))


def summary_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements marked isSummary in R4."""
    return _flagged(resource_type, "summary_element_property")


def mandatory_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements with a minimum cardinality of 1."""
    return _flagged(resource_type, "element_required")


def _mark(resource: dict) -> dict:
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    resource["meta"] = meta
    return resource


def _keep(resource: dict, names: frozenset[str] | set[str]) -> dict:
    """Keep the named elements (and their `_name` primitive extensions)."""
    return {k: v for k, v in resource.items()
            if k in ALWAYS or k in names or (k.startswith("_") and k[1:] in names)}


def shape(resource: dict, summary: str | None, elements: list[str] | None) -> dict:
    """The resource as `_summary` / `_elements` ask; unchanged when neither is given."""
    rtype = resource.get("resourceType", "")
    if summary == "true":
        return _mark(_keep(resource, summary_elements(rtype)))
    if summary == "text":
        return _mark(_keep(resource, {"text"} | mandatory_elements(rtype)))
    if summary == "data":
        return _mark({k: v for k, v in resource.items() if k != "text"})
    if elements:
        return _mark(_keep(resource, set(elements) | mandatory_elements(rtype)))
    return resource
