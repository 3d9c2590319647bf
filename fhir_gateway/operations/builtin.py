"""The operations the gateway ships: each module listed here exposes `SPECS`."""

from __future__ import annotations

import importlib

from fhir_gateway.operations.registry import OperationSpec

MODULES = ("everything", "summary", "trackers", "scheduling", "refills", "messaging",
           "billing", "education", "apps")


def builtin_operations() -> list[OperationSpec]:
    specs: list[OperationSpec] = []
    for name in MODULES:
        specs.extend(importlib.import_module(f"fhir_gateway.operations.{name}").SPECS)
    return specs
