"""What a person sees in the terminal: a line per check as it finishes, then a table."""

from __future__ import annotations

import sys
from typing import TextIO

from conformance.model import GROUPS, Result, Status
from conformance.runner import RunReport

MARK = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.SKIP: "skip", Status.ERROR: "ERR!"}


class Progress:
    """Live progress: one line per finished check (rewritten in place on a terminal)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def __call__(self, done: int, total: int, result: Result) -> None:
        line = f"[{done:3d}/{total}] {MARK[result.status]} {result.check.id}"
        if result.status in (Status.FAIL, Status.ERROR):
            self.stream.write(("\r\033[K" if self.tty else "") + line + f": "
                              f"{result.message[:160]}\n")
        elif self.tty:
            self.stream.write("\r\033[K" + line[:100])
        else:
            self.stream.write(line + "\n")
        if self.tty and done == total:
            self.stream.write("\r\033[K")
        self.stream.flush()


def summary(report: RunReport) -> str:
    """A plain table: per group pass/fail/skip/error, then every failure in one line."""
    rows = [("group", "pass", "fail", "skip", "error")]
    for group in GROUPS:
        results = [r for r in report.results if r.check.group == group]
        if results:
            rows.append((group, *(str(sum(r.status is s for r in results)) for s in
                                  (Status.PASS, Status.FAIL, Status.SKIP, Status.ERROR))))
    c = report.counts()
    rows.append(("total", str(c["pass"]), str(c["fail"]), str(c["skip"]), str(c["error"])))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"FHIR conformance of {report.base}"
             + (f" ({report.software})" if report.software else "")]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w)
                               for j, (cell, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0 or i == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    bad = [r for r in report.results if r.status in (Status.FAIL, Status.ERROR)]
    if bad:
        lines.append("")
        for r in bad:
            lines.append(f"{MARK[r.status]} {r.check.id} ({r.check.severity.value}): "
                         f"{r.message[:200]}")
    verdict = {0: "every required check passed", 1: "required checks failed"}
    lines.append("")
    lines.append(f"Result: {verdict[report.exit_code()]}")
    return "\n".join(lines)
