"""R4 validity of a resource, with the `fhir.resources` R4B models.

`fhir.resources` ships R5, R4B and STU3 but no plain R4; R4B (4.3) is the nearest and parses
the official R4 examples of the resources portals use. A resource type R4B lacks or renamed
is checked with `fhirclient.models` (generated from FHIR 4.0.1) when that is installed.
Neither library checks coded values against value sets, so neither does this.
"""

from __future__ import annotations

from typing import Any

# R4 types that R4B removed or reshaped enough that its model would reject valid R4.
R4_ONLY = {"MedicinalProduct", "MedicinalProductAuthorization", "MedicinalProductContraindication",
           "MedicinalProductIndication", "MedicinalProductIngredient",
           "MedicinalProductInteraction", "MedicinalProductManufactured",
           "MedicinalProductPackaged", "MedicinalProductPharmaceutical",
           "MedicinalProductUndesirableEffect", "SubstanceSpecification",
           "EffectEvidenceSynthesis", "RiskEvidenceSynthesis"}


def validate(resource: dict[str, Any]) -> str | None:
    """None when `resource` is valid R4 as far as the models tell, else the first problems."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return "no resourceType"
    if rtype in R4_ONLY:
        return _fhirclient(resource)
    from fhir.resources.R4B import get_fhir_model_class

    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError, AttributeError, ImportError):
        return _fhirclient(resource) if _has_fhirclient() else f"unknown resource type {rtype}"
    try:
        model.model_validate(resource)
    except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError and friends
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        return "; ".join(lines[:4])[:400]
    return None


def _has_fhirclient() -> bool:
    try:
        import fhirclient.models  # noqa: F401
    except ImportError:
        return False
    return True


def _fhirclient(resource: dict[str, Any]) -> str | None:
    try:
        from fhirclient.models import fhirelementfactory
    except ImportError:
        return None  # cannot tell: not an error of the server
    try:
        obj = fhirelementfactory.FHIRElementFactory.instantiate(resource["resourceType"],
                                                                resource)
    except Exception as exc:  # noqa: BLE001
        return str(exc)[:400]
    if type(obj).__name__ != resource["resourceType"]:
        return f"unknown resource type {resource['resourceType']}"
    return None
