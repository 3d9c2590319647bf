"""The vocabulary of a run: checks, their results, and the exceptions a check raises."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conformance.evidence import Exchange

if TYPE_CHECKING:
    from conformance.context import RunContext

SPEC = "https://hl7.org/fhir/R4"
SMART_SPEC = "https://hl7.org/fhir/smart-app-launch"


class Status(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"


class Severity(enum.StrEnum):
    """`required`: the spec says SHALL (a failure makes the run fail); `recommended`: SHOULD."""

    REQUIRED = "required"
    RECOMMENDED = "recommended"


class Fail(Exception):  # noqa: N818 - reads as `raise Fail("why")`
    """The server broke the rule; the message says how."""


class Skip(Exception):  # noqa: N818
    """The check cannot apply here; the message says why."""


class CannotRun(Exception):  # noqa: N818
    """The run cannot start or go on (server down, garbage); exit 2 with this one line."""


@dataclass(frozen=True)
class Check:
    """A rule the runner enforces: one small function with an id, a group and a spec URL."""

    id: str
    group: str
    severity: Severity
    spec: str
    title: str
    func: Callable[[RunContext], str | None]


@dataclass
class Result:
    check: Check
    status: Status
    message: str = ""
    evidence: list[Exchange] = field(default_factory=list)
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.check.id, "group": self.check.group, "title": self.check.title,
                "severity": self.check.severity.value, "spec": self.check.spec,
                "status": self.status.value, "message": self.message,
                "elapsed_ms": round(self.elapsed_ms, 1),
                "evidence": [e.to_dict() for e in self.evidence]}


GROUPS = ["capability", "read", "search", "write", "http", "smart", "access", "portal",
          "validity"]
REGISTRY: list[Check] = []


def check(id: str, group: str, spec: str, *, severity: Severity = Severity.REQUIRED,
          title: str = "") -> Callable[[Callable], Callable]:
    """Register the decorated function as a check. It returns None or a note on pass, and
    raises `Fail` or `Skip`; any other exception is recorded as an error."""
    assert group in GROUPS, group

    def register(func: Callable) -> Callable:
        doc = (func.__doc__ or "").strip().splitlines()
        REGISTRY.append(Check(id, group, severity, spec, title or (doc[0] if doc else id), func))
        return func

    return register


def all_checks() -> list[Check]:
    """Every check, in group order, then in the order each module declares them."""
    import conformance.checks  # noqa: F401 - registers the checks

    order = {g: i for i, g in enumerate(GROUPS)}
    return sorted(REGISTRY, key=lambda c: order[c.group])
