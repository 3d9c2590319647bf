"""A patient's prescription refill request as a FHIR R4 Task (pure: no I/O).

Follows the core R4 "Refill Request" pattern (Task example3): a Task with intent `order` and
code `fulfill` (http://hl7.org/fhir/CodeSystem/task-code) whose `focus` is the
MedicationRequest, `for` and `requester` the patient and `owner` the prescriber. The refill
rules a clinic applies before such a Task may be created (order active, refills left, no
controlled substance online) live here too, so the gateway only fetches and stores.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from mappings.references import reference_target
from mappings.terminology import RXNORM, TASK_FULFILL

__all__ = [
    "MAX_NOTE",
    "OPEN_STATUSES",
    "RefillInputError",
    "RefillRefused",
    "build_refill_task",
    "check_refillable",
    "clean_note",
    "code_list",
    "group_by_request",
    "is_refill_task",
    "open_refill",
    "refills_left",
    "rxnorm_codes",
]

#: Task statuses of a refill request still waiting for the clinic.
OPEN_STATUSES = frozenset({"requested", "received", "accepted", "in-progress"})
MAX_NOTE = 1000


class RefillInputError(ValueError):
    """The request itself is malformed (HTTP 400); `expression` names the parameter."""

    def __init__(self, expression: str, message: str) -> None:
        super().__init__(message)
        self.expression = expression
        self.message = message


class RefillRefused(RefillInputError):
    """Well-formed, but the clinic's refill rules refuse it (HTTP 422)."""


def code_list(text: str | Iterable[str] | None) -> frozenset[str]:
    """A comma-separated configuration value (or an iterable) as a set of codes."""
    if text is None:
        return frozenset()
    items = text.split(",") if isinstance(text, str) else text
    return frozenset(c.strip() for c in items if c and c.strip())


def clean_note(value: object) -> str | None:
    """The optional `note` parameter: a non-blank string of at most MAX_NOTE characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RefillInputError("note", "The note must be text (valueString)")
    text = value.strip()
    if not text:
        raise RefillInputError("note", "The note is empty; leave it out or write something")
    if len(text) > MAX_NOTE:
        raise RefillInputError("note", f"The note is longer than {MAX_NOTE} characters")
    return text


def rxnorm_codes(request: dict, medication: dict | None = None) -> set[str]:
    """RxNorm codes of the drug: the request's medicationCodeableConcept, or the code of the
    Medication its medicationReference points at (pass that Medication in)."""
    concept = request.get("medicationCodeableConcept")
    if concept is None and medication is not None:
        concept = medication.get("code")
    return {c["code"] for c in (concept or {}).get("coding") or []
            if c.get("system") == RXNORM and isinstance(c.get("code"), str)}


def _focus_id(task: dict) -> str | None:
    target = reference_target((task.get("focus") or {}).get("reference", ""))
    return target[1] if target and target[0] == "MedicationRequest" else None


def is_refill_task(task: dict, request_id: str | None = None) -> bool:
    """A refill Task (code `fulfill`) focused on a MedicationRequest (on this one, if given)."""
    codings = (task.get("code") or {}).get("coding") or []
    if not any(c.get("system") == TASK_FULFILL.system and c.get("code") == TASK_FULFILL.code
               for c in codings):
        return False
    focus = _focus_id(task)
    return focus is not None and (request_id is None or focus == request_id)


def refills_left(request: dict, tasks: Iterable[dict]) -> int:
    """Repeats the order allows minus the refill Tasks for it already completed."""
    allowed = (request.get("dispenseRequest") or {}).get("numberOfRepeatsAllowed") or 0
    used = sum(1 for t in tasks
               if t.get("status") == "completed" and is_refill_task(t, request.get("id")))
    return allowed - used


def open_refill(request_id: str, tasks: Iterable[dict]) -> dict | None:
    """The newest refill Task for this order still waiting for the clinic, if any."""
    waiting = [t for t in tasks
               if t.get("status") in OPEN_STATUSES and is_refill_task(t, request_id)]
    waiting.sort(key=lambda t: t.get("authoredOn") or "", reverse=True)
    return waiting[0] if waiting else None


def _drug_text(request: dict, medication: dict | None) -> str:
    concept = request.get("medicationCodeableConcept") or (medication or {}).get("code") or {}
    coding = next(iter(concept.get("coding") or []), {})
    return (concept.get("text") or coding.get("display")
            or (request.get("medicationReference") or {}).get("display") or "this medicine")


def check_refillable(request: dict, medication: dict | None, tasks: Iterable[dict],
                     no_online_refill: frozenset[str]) -> None:
    """Raise RefillRefused (naming the element at fault) unless the patient may ask online."""
    drug = _drug_text(request, medication)
    status = request.get("status")
    if status != "active":
        raise RefillRefused("MedicationRequest.status",
                            f"The prescription for {drug} is {status or 'not active'}, not "
                            "active: it cannot be refilled. Ask your care team for a new one.")
    if rxnorm_codes(request, medication) & no_online_refill:
        raise RefillRefused("MedicationRequest.medication",
                            f"{drug} is a controlled substance: it cannot be refilled online. "
                            "Please contact your prescriber for a new prescription.")
    if refills_left(request, tasks) <= 0:
        raise RefillRefused("MedicationRequest.dispenseRequest.numberOfRepeatsAllowed",
                            f"The prescription for {drug} has no refills left. Ask your "
                            "prescriber to renew it.")


def build_refill_task(request: dict, now: datetime, note: str | None = None,
                      medication: dict | None = None) -> dict:
    """The Task asking the prescriber to refill `request`, sent by its patient at `now`."""
    when = now.isoformat(timespec="seconds")
    drug = _drug_text(request, medication)
    patient = {k: v for k, v in request["subject"].items() if k in ("reference", "display")}
    task: dict = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": TASK_FULFILL.system, "code": TASK_FULFILL.code,
                             "display": TASK_FULFILL.display}]},
        "description": f"Refill request: {drug}",
        "focus": {"reference": f"MedicationRequest/{request['id']}", "display": drug},
        "for": patient,
        "authoredOn": when,
        "lastModified": when,
        "requester": patient,
    }
    prescriber = request.get("requester")
    if prescriber and prescriber.get("reference"):
        task["owner"] = {k: v for k, v in prescriber.items() if k in ("reference", "display")}
    if note:
        task["note"] = [{"authorReference": patient, "time": when, "text": note}]
    return task


def build_refill_message(request: dict, now: datetime, note: str | None = None,
                         medication: dict | None = None) -> dict:
    """The same request as a Communication to the prescriber, for EHRs where apps cannot
    create Tasks (the gateway's documented fallback)."""
    task = build_refill_task(request, now, note, medication)
    patient = task["for"]
    text = task["description"] + (f". Note from the patient: {note}" if note else "")
    message: dict = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"text": "Refill request"}],
        "subject": patient,
        "about": [task["focus"]],
        "sender": patient,
        "sent": task["authoredOn"],
        "payload": [{"contentString": text}],
    }
    if "owner" in task:
        message["recipient"] = [task["owner"]]
    return message


def group_by_request(requests: Iterable[dict], tasks: Iterable[dict]) -> list[tuple[dict, list]]:
    """Each MedicationRequest with its refill Tasks (newest first); active orders first, then
    newest authored first."""
    requests = list(requests)
    by_id: dict[str, list[dict]] = {r["id"]: [] for r in requests}
    for task in tasks:
        focus = _focus_id(task) if is_refill_task(task) else None
        if focus in by_id:
            by_id[focus].append(task)
    for found in by_id.values():
        found.sort(key=lambda t: t.get("authoredOn") or "", reverse=True)
    requests.sort(key=lambda r: r.get("authoredOn") or "", reverse=True)
    requests.sort(key=lambda r: r.get("status") != "active")
    return [(r, by_id[r["id"]]) for r in requests]
