"""What the gateway keeps for the clinic on the patient's behalf: the writes in its outbox (the
patient's own lane, as `GET _outbox` answers them with the patient's token), as lines for Home.

A write waits there while the clinic's EHR cannot take it; once stored it shows where it
belongs (the thread, the prescription) and is no longer listed here. One the EHR refused for
good (with the EHR's own words), or the clinic dropped, is listed for `REFUSED_DAYS`, so the
patient knows it was not sent and to call.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from portal.fhir_api import gateway_codes
from portal.records import local_time

REFUSED_DAYS = 30
WAITING = ("requested", "in-progress")
REASON_CHARS = 200
# What the patient did, by the outbox Task's code ("create Communication"): catalogue keys.
KINDS = {("create", "Communication"): "waiting.message", ("create", "Task"): "waiting.refill",
         ("create", "Observation"): "waiting.reading"}
OTHER = "waiting.change"


@dataclass(frozen=True)
class Line:
    key: str  # waiting.line_waiting, _refused, _refused_plain, _dropped
    what: str  # catalogue key of what it is (KINDS, OTHER)
    when: str  # when the patient made it, as the pages show a moment
    reason: str = ""  # the EHR's words, for a refusal


def _kind(task: dict) -> str:
    verb, _, target = ((task.get("code") or {}).get("text") or "").partition(" ")
    return KINDS.get((verb, target.split("/")[0]), OTHER)


def _reason(task: dict) -> str:
    """The EHR's own first words of its refusal (the outcome's first issue marked
    `ehr-refused`, its `details.text`), cut to a line; none otherwise (the gateway's own
    notes, such as how often it tried, are not for patients)."""
    words = ""
    for res in task.get("contained") or []:
        if res.get("resourceType") == "OperationOutcome":
            issue = (res.get("issue") or [{}])[0]
            if "ehr-refused" in gateway_codes(issue):
                words = (issue.get("details") or {}).get("text") or ""
            break
    words = " ".join(words.split())
    return words if len(words) <= REASON_CHARS else words[:REASON_CHARS - 1] + "\u2026"


def lines(tasks: list[dict], patient: str, now: dt.datetime) -> list[Line]:
    """For `patient` (a Patient id): waiting writes (oldest first), then those that ended
    unsent in the last REFUSED_DAYS, refused by the EHR or dropped by the clinic (newest
    first). Tasks for anyone else are left out, whatever the server listed."""
    since = (now.astimezone(dt.UTC) - dt.timedelta(days=REFUSED_DAYS)).strftime(
        "%Y-%m-%dT%H:%M:%S")
    tasks = [t for t in tasks if (t.get("for") or {}).get("reference") == f"Patient/{patient}"]
    waiting = sorted((t for t in tasks if t.get("status") in WAITING),
                     key=_order)
    unsent = sorted((t for t in tasks if t.get("status") in ("failed", "cancelled")
                     and (t.get("lastModified") or "") >= since),
                    key=_order, reverse=True)
    return ([Line("waiting.line_waiting", _kind(t), local_time(t.get("authoredOn")))
             for t in waiting]
            + [_unsent(t) for t in unsent])


def _order(task: dict) -> tuple[str, str, str]:
    return (task.get("authoredOn") or "", task.get("lastModified") or "", task.get("id") or "")


def _unsent(task: dict) -> Line:
    when = local_time(task.get("authoredOn"))
    if task.get("status") == "cancelled":
        return Line("waiting.line_dropped", _kind(task), when)
    reason = _reason(task)
    return Line("waiting.line_refused" if reason else "waiting.line_refused_plain",
                _kind(task), when, reason)
