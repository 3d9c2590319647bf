"""The operations the gateway ships, in one list."""

from __future__ import annotations

from fhir_gateway.operations.registry import OperationSpec


def builtin_operations() -> list[OperationSpec]:
    from fhir_gateway.operations import everything

    return [everything.SPEC]
