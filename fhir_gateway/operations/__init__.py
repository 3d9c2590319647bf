"""FHIR operations (`$name`) the gateway runs: one registry, one route, one access rule.

Each operation is declared once (`OperationSpec`): where it applies, what it needs from the
token, its parameters. From that the gateway serves its OperationDefinition, lists it in the
CapabilityStatement and routes `[base]/Type/$name` and `[base]/Type/id/$name` (GET and POST).
"""

from fhir_gateway.operations.registry import OperationContext, OperationSpec, Registry

__all__ = ["OperationContext", "OperationSpec", "Registry"]
