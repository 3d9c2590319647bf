"""One self-contained HTML page (inline CSS, no scripts or external assets): results by
group, each failure with the requests and responses that decided it."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from conformance.model import GROUPS, Status
from conformance.runner import RunReport


def render(report: RunReport) -> str:
    env = Environment(loader=PackageLoader("conformance.report", "templates"),
                      autoescape=select_autoescape(["html"]))
    groups = []
    for group in GROUPS:
        results = [r for r in report.results if r.check.group == group]
        if results:
            counts = {s.value: sum(r.status is s for r in results) for s in Status}
            groups.append({"name": group, "results": results, "counts": counts})
    return env.get_template("report.html").render(report=report, groups=groups,
                                                   counts=report.counts(),
                                                   exit_code=report.exit_code())


def write_html(report: RunReport, path: Path) -> Path:
    path.write_text(render(report), encoding="utf-8")
    return path
