"""Load FHIR transaction (or batch) Bundles from files through the same path as `POST /fhir`."""

from __future__ import annotations

from pathlib import Path

from fhir_gateway.bundle_processing import process
from fhir_gateway.service import FhirService
from fhir_gateway.validation import parse_json


def import_file(service: FhirService, path: Path, base: str) -> int:
    """Import one Bundle file atomically; return how many entries it stored."""
    data = parse_json(path.read_bytes(), service.limits.max_json_depth)
    result = process(service, data, base, {"return": "minimal"})
    return len(result.get("entry", []))
