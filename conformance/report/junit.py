"""JUnit XML (one testsuite per group), the format every CI server shows."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from conformance.model import GROUPS, Status
from conformance.runner import RunReport


def _evidence_text(result) -> str:
    lines = [result.message, f"spec: {result.check.spec}"]
    for ex in result.evidence:
        lines.append(ex.summary())
        if ex.response_body:
            lines.append("  " + ex.response_body[:300])
    return "\n".join(lines)


def write_junit(report: RunReport, path: Path) -> Path:
    root = ET.Element("testsuites", name=f"FHIR conformance {report.base}")
    for group in GROUPS:
        results = [r for r in report.results if r.check.group == group]
        if not results:
            continue
        suite = ET.SubElement(root, "testsuite", name=group, tests=str(len(results)),
                              failures=str(sum(r.status is Status.FAIL for r in results)),
                              errors=str(sum(r.status is Status.ERROR for r in results)),
                              skipped=str(sum(r.status is Status.SKIP for r in results)),
                              timestamp=report.started)
        for r in results:
            case = ET.SubElement(suite, "testcase", classname=f"conformance.{group}",
                                 name=r.check.id, time=f"{r.elapsed_ms / 1000:.3f}")
            if r.status is Status.FAIL:
                el = ET.SubElement(case, "failure", message=r.message,
                                   type=r.check.severity.value)
                el.text = _evidence_text(r)
            elif r.status is Status.ERROR:
                el = ET.SubElement(case, "error", message=r.message)
                el.text = _evidence_text(r)
            elif r.status is Status.SKIP:
                ET.SubElement(case, "skipped", message=r.message)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
