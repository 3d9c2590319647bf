"""The patient compartment rule that both the store's narrowing and the access checks follow.

A patient-context caller may see a resource when it names no patient other than theirs and, for
types that always belong to a patient's record, names theirs. Keeping the rule here (pure) lets the
embedded store narrow a search exactly, so totals and pages hold only what the caller may see.
"""

from __future__ import annotations

from collections.abc import Set

from mappings.r4 import PATIENT_COMPARTMENT

# In the R4 compartment definition, but clinic data when its actor is a practitioner.
_OPTIONAL = frozenset({"Schedule"})


def requires_membership(resource_type: str) -> bool:
    """Must a resource of this type reference the patient to be theirs?"""
    return resource_type in PATIENT_COMPARTMENT and resource_type not in _OPTIONAL


def in_compartment(resource_type: str, resource_id: str | None, patient_ids: Set[str],
                   patient: str) -> bool:
    """The rule, given the ids of every Patient the resource references."""
    if resource_type == "Patient":
        return resource_id == patient
    if patient_ids - {patient}:
        return False
    return patient in patient_ids if requires_membership(resource_type) else True
