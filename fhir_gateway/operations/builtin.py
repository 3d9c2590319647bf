"""The operations the gateway ships: every module listed here exposes `SPECS`."""

from __future__ import annotations

import importlib

from fhir_gateway.operations.registry import OperationSpec

MODULES = ("everything", "summary", "trackers", "scheduling", "refills", "messaging", "billing")


def builtin_operations() -> list[OperationSpec]:
    specs: list[OperationSpec] = []
    for name in MODULES:
        try:
            module = importlib.import_module(f"fhir_gateway.operations.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"fhir_gateway.operations.{name}":
                raise
            continue  # not written yet
        specs.extend(module.SPECS)
    return specs
