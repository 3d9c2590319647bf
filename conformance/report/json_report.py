"""The run as JSON: for machines (CI dashboards, diffs between two runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conformance.runner import RunReport


def as_dict(report: RunReport) -> dict[str, Any]:
    return {"base": report.base, "started": report.started, "finished": report.finished,
            "software": report.software, "fhirVersion": report.fhir_version,
            "counts": report.counts(), "exit_code": report.exit_code(),
            "results": [r.to_dict() for r in report.results]}


def write_json(report: RunReport, path: Path) -> Path:
    path.write_text(json.dumps(as_dict(report), indent=2))
    return path
