"""Report writers: console, JSON, JUnit XML and one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

from conformance.report.html import write_html
from conformance.report.json_report import write_json
from conformance.report.junit import write_junit
from conformance.runner import RunReport


def write_all(report: RunReport, directory: Path) -> dict[str, Path]:
    """Write report.json, junit.xml and report.html into `directory`; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    return {"json": write_json(report, directory / "report.json"),
            "junit": write_junit(report, directory / "junit.xml"),
            "html": write_html(report, directory / "report.html")}
