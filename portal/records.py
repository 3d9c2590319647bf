"""Pure functions turning FHIR R4 JSON into the few plain facts a page shows.

No I/O and no Flask here, so every rule (what counts as out of range, which name to show) is
tested on plain dicts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

#: Observation.interpretation codes (v3 ObservationInterpretation) that mean out of range.
HIGH_CODES = {"H", "HH", "HU"}
LOW_CODES = {"L", "LL", "LU"}
ABNORMAL_CODES = {"A", "AA"} | HIGH_CODES | LOW_CODES
#: Refill Task statuses that mean "still being handled" (the operation's own open set).
OPEN_TASK_STATUSES = {"requested", "received", "accepted", "in-progress"}
BALANCE_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Account.balance"


def text_of(concept: dict | None) -> str:
    """A CodeableConcept's words: its text, else the first coding's display, else its code."""
    if not concept:
        return ""
    if concept.get("text"):
        return concept["text"]
    for coding in concept.get("coding") or []:
        if coding.get("display"):
            return coding["display"]
    codings = concept.get("coding") or [{}]
    return codings[0].get("code", "")


def code_of(concept: dict | None) -> str:
    """The first code of a CodeableConcept ('' when none)."""
    return ((concept or {}).get("coding") or [{}])[0].get("code", "")


def patient_name(patient: dict) -> str:
    """The name a person is called by: official (else first) name, given then family."""
    names = patient.get("name") or []
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    if name.get("text"):
        return name["text"]
    return " ".join([*(name.get("given") or []), name.get("family", "")]).strip()


def local_time(value: str | None) -> str:
    """A FHIR dateTime as the pages show a moment: 'YYYY-MM-DD HH:MM' in the portal's time zone
    (the browser's is unknown without script); one without an offset as written."""
    raw = value or ""
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        return raw[:16].replace("T", " ")
    if when.tzinfo is not None:
        when = when.astimezone()
    return when.strftime("%Y-%m-%d %H:%M")


def day(value: str | None) -> str:
    """The date part of a FHIR date or dateTime."""
    return (value or "")[:10]


def medication_name(request: dict) -> str:
    """What the medicine is called on a MedicationRequest."""
    if "medicationCodeableConcept" in request:
        return text_of(request["medicationCodeableConcept"])
    return (request.get("medicationReference") or {}).get("display", "")


def _number(value: object) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


@dataclass(frozen=True)
class Result:
    """One test result as shown: `flag` is 'high', 'low', 'abnormal', 'normal' or ''."""

    id: str
    code: str
    name: str
    when: str
    value: str
    range: str
    flag: str


def _quantity_text(q: dict) -> str:
    unit = q.get("unit") or q.get("code") or ""
    return f"{q.get('value', '')} {unit}".strip()


def result_flag(obs: dict) -> str:
    """Out of range? From the interpretation code, else by comparing with the range."""
    codes = {c.get("code") for i in obs.get("interpretation") or [] for c in i.get("coding") or []}
    if codes & HIGH_CODES:
        return "high"
    if codes & LOW_CODES:
        return "low"
    if codes & ABNORMAL_CODES:
        return "abnormal"
    value = _number((obs.get("valueQuantity") or {}).get("value"))
    ranges = obs.get("referenceRange") or []
    if value is None or not ranges:
        return "normal" if "N" in codes else ""
    low = _number((ranges[0].get("low") or {}).get("value"))
    high = _number((ranges[0].get("high") or {}).get("value"))
    if high is not None and value > high:
        return "high"
    if low is not None and value < low:
        return "low"
    return "normal"


def range_text(obs: dict) -> str:
    """The first reference range in words, e.g. '3.5 - 5.1 mmol/L' ('' when none)."""
    ranges = obs.get("referenceRange") or []
    if not ranges:
        return ""
    r = ranges[0]
    if r.get("text"):
        return r["text"]
    low, high = r.get("low"), r.get("high")
    if low and high:
        return f"{low.get('value')} - {_quantity_text(high)}"
    if low:
        return f">= {_quantity_text(low)}"
    if high:
        return f"<= {_quantity_text(high)}"
    return ""


def result(obs: dict) -> Result:
    """An Observation as a result row."""
    if "valueQuantity" in obs:
        value = _quantity_text(obs["valueQuantity"])
    elif "valueCodeableConcept" in obs:
        value = text_of(obs["valueCodeableConcept"])
    elif "valueString" in obs:
        value = obs["valueString"]
    elif obs.get("component"):
        value = " / ".join(_quantity_text(c.get("valueQuantity") or {})
                           for c in obs["component"])
    else:
        value = ""
    return Result(obs.get("id", ""), code_of(obs.get("code")), text_of(obs.get("code")),
                  day(obs.get("effectiveDateTime") or obs.get("issued")), value,
                  range_text(obs), result_flag(obs))


def numeric_points(observations: list[dict]) -> list[tuple[str, Decimal]]:
    """(date, value) of the numeric results, oldest first: the data of a trend chart."""
    points = [(day(o.get("effectiveDateTime") or o.get("issued")),
               _number((o.get("valueQuantity") or {}).get("value"))) for o in observations
              if o.get("resourceType") == "Observation"]
    return sorted((w, v) for w, v in points if v is not None)


def range_bounds(obs: dict) -> tuple[Decimal | None, Decimal | None]:
    """The first reference range's low and high values."""
    r = (obs.get("referenceRange") or [{}])[0]
    return (_number((r.get("low") or {}).get("value")),
            _number((r.get("high") or {}).get("value")))


def coding_token(concept: dict | None) -> str:
    """`system|code` of the first coding, for a `code=` search."""
    coding = ((concept or {}).get("coding") or [{}])[0]
    if not coding.get("code"):
        return ""
    system = coding.get("system")
    return f"{system}|{coding['code']}" if system else coding["code"]


def results(observations: list[dict]) -> list[Result]:
    """Result rows, newest first."""
    rows = [result(o) for o in observations if o.get("resourceType") == "Observation"]
    return sorted(rows, key=lambda r: r.when, reverse=True)


def only(resources: list[dict], rtype: str) -> list[dict]:
    """The resources of one type (a search Bundle may also hold OperationOutcomes)."""
    return [r for r in resources if r.get("resourceType") == rtype]


def status_code(resource: dict, element: str) -> str:
    """A status that is either a code (`status`) or a CodeableConcept (`clinicalStatus`)."""
    value = resource.get(element)
    return code_of(value) if isinstance(value, dict) else (value or "")


def refill_requests(bundle_resources: list[dict]) -> tuple[list[dict], dict[str, list[dict]]]:
    """From `$medication-history`: (MedicationRequests, their refill Tasks by request id,
    newest first)."""
    requests = only(bundle_resources, "MedicationRequest")
    tasks: dict[str, list[dict]] = {}
    for task in only(bundle_resources, "Task"):
        ref = (task.get("focus") or {}).get("reference", "")
        tasks.setdefault(ref.rsplit("/", 1)[-1], []).append(task)
    for items in tasks.values():
        items.sort(key=lambda t: t.get("authoredOn", ""), reverse=True)
    return requests, tasks


def refills_left(request: dict, tasks: list[dict]) -> int:
    """The repeats the order allows minus its refill requests already completed: the rule
    `$refill-request` states ("no refills left"), so the portal offers only what it accepts."""
    allowed = int((request.get("dispenseRequest") or {}).get("numberOfRepeatsAllowed") or 0)
    return max(0, allowed - sum(1 for t in tasks if t.get("status") == "completed"))


def open_task(tasks: list[dict]) -> dict | None:
    """The refill request still being handled, if any."""
    return next((t for t in tasks if t.get("status") in OPEN_TASK_STATUSES), None)


def account_balance(account: dict) -> Decimal | None:
    """The balance due, from the R5 Account.balance cross-version extension."""
    for ext in account.get("extension") or []:
        if ext.get("url") != BALANCE_EXTENSION:
            continue
        for sub in ext.get("extension") or []:
            if "valueMoney" in sub:
                return _number(sub["valueMoney"].get("value"))
    return None


def dosage_text(request: dict) -> str:
    """The first dosage instruction's text."""
    return ((request.get("dosageInstruction") or [{}])[0]).get("text", "")
