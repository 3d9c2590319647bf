"""Health trackers: record a reading, and the R4 trend operations `$lastn` and `$stats`.

`Observation/$record-reading` turns what a patient entered (any accepted unit) into vital-signs
Observations through `mappings.portal.trackers`: checked, converted to UCUM, BMI added when
weight and height are both known, not stored twice, and, when an alert rule fires, flagged
(interpretation AA, "critical abnormal") with a Communication to the patient's care team, all in
one atomic write. `$lastn` returns the newest N readings per code; `$stats` summarises a period.
"""

from __future__ import annotations

import statistics
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from adapters.base import BundleEntryRequest, SearchPage
from adapters.errors import Invalid, Unprocessable
from fhir_gateway import bundles
from fhir_gateway.operations.common import confined_search, int_param, patient_for
from fhir_gateway.operations.registry import OperationContext, OperationSpec, ParamSpec
from fhir_gateway.request import FhirRequest, FhirResponse
from fhir_gateway.validation import validate_resource
from mappings.portal import trackers

VITALS = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
CRITICAL = {"coding": [{
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
    "code": "AA", "display": "Critical abnormal"}], "text": "Alert"}
STATISTICS = {"average": statistics.fmean, "minimum": min, "maximum": max, "count": len,
              "median": statistics.median}


def _latest_value(ctx: OperationContext, pid: str, loinc: str) -> float | None:
    found = confined_search(ctx, "Observation", [("patient", pid), ("code", f"http://loinc.org|{loinc}"),
                                         ("_sort", "-date"), ("_count", "1")])
    quantity = found[0].get("valueQuantity") if found else None
    return float(quantity["value"]) if quantity and "value" in quantity else None


def record_reading(ctx: OperationContext) -> FhirResponse:
    service = ctx.service
    pid = patient_for(ctx)
    fields = {k: ctx.one(k) for k in ("kind", "effective", "value", "unit", "systolic",
                                      "diastolic", "device", "note") if ctx.one(k) is not None}
    fields.setdefault("effective", datetime.now(UTC).isoformat(timespec="seconds"))
    try:
        reading = trackers.parse_reading(fields)
        height = _latest_value(ctx, pid, "8302-2") if reading.kind == "weight" else None
        weight = _latest_value(ctx, pid, "29463-7") if reading.kind == "height" else None
        built = trackers.build_observations(
            reading, pid, datetime.now(UTC),
            height_m=height / 100 if height else None, weight_kg=weight)
    except trackers.ReadingError as exc:
        raise Invalid(exc.message, expression=exc.field) from None
    primary = built[0]
    key = trackers.duplicate_key(primary)
    code = primary["code"]["coding"][0]["code"]
    for stored in confined_search(ctx, "Observation", [("patient", pid),
                                                ("code", f"http://loinc.org|{code}")]):
        if trackers.duplicate_key(stored) == key:
            raise Unprocessable("This reading is already recorded (same measurement, time, "
                                "value and device)", expression="effective",
                                code="duplicate")
    fired = trackers.alerts(primary)
    entries: list[BundleEntryRequest] = []
    for i, obs in enumerate(built):
        if i == 0 and fired:
            obs["interpretation"] = [CRITICAL]
        validate_resource(obs, "Observation")
        service.check_write(service.decide(FhirRequest("create", "Observation",
                                                       principal=ctx.request.principal)), obs)
        entries.append(BundleEntryRequest("POST", "Observation", resource=obs,
                                          full_url=f"urn:uuid:{uuid.uuid4()}"))
    if fired:
        message = _alert_message(ctx, pid, fired, entries[0].full_url)
        if message is not None:
            entries.append(BundleEntryRequest("POST", "Communication", resource=message,
                                              full_url=f"urn:uuid:{uuid.uuid4()}"))
    results = service.transaction(entries)
    stored = [r.resource for r in results]
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": f"{ctx.base}/{r['resourceType']}/{r['id']}", "resource": r}
                        for r in stored]}
    return FhirResponse(201, bundle)


def _alert_message(ctx: OperationContext, pid: str, fired: list[str], obs_url: str) -> dict:
    """A Communication from the patient's record to their care team about the reading."""
    team = confined_search(ctx, "CareTeam", [("patient", pid)])
    recipients = [p["member"] for t in team for p in t.get("participant", [])
                  if "member" in p and not p["member"].get("reference", "").startswith("Patient")]
    message = {
        "resourceType": "Communication", "status": "completed",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/communication-category",
            "code": "alert", "display": "Alert"}]}],
        "priority": "urgent", "subject": {"reference": f"Patient/{pid}"},
        "about": [{"reference": obs_url}], "sent": datetime.now(UTC).isoformat(),
        "sender": {"reference": f"Patient/{pid}"},
        "payload": [{"contentString": "Health tracker alert: " + " ".join(fired)}],
    }
    if recipients:
        message["recipient"] = recipients
    return validate_resource(message, "Communication")


def lastn(ctx: OperationContext) -> FhirResponse:
    pid = patient_for(ctx)
    maximum = int_param(ctx, "max", 1, 1, 100)
    params = [("patient", pid), ("_sort", "-date")]
    category = ctx.one("category") or VITALS
    params.append(("category", str(category)))
    if ctx.one("code"):
        params.append(("code", str(ctx.one("code"))))
    per_code: dict[str, list[dict]] = defaultdict(list)
    for obs in confined_search(ctx, "Observation", params):
        coding = (obs.get("code", {}).get("coding") or [{}])[0]
        key = f"{coding.get('system')}|{coding.get('code')}"
        if len(per_code[key]) < maximum:
            per_code[key].append(obs)
    found = [o for group in per_code.values() for o in group]
    page = SearchPage(resources=found, total=len(found))
    bundle = bundles.searchset(ctx.base, page, f"{ctx.base}/Observation/$lastn", None, None, [])
    return FhirResponse(200, bundle)


def stats(ctx: OperationContext) -> FhirResponse:
    pid = patient_for(ctx, "subject")
    codes = [c for c in str(ctx.one("code", required=True)).split(",") if c]
    system = str(ctx.one("system") or "http://loinc.org")
    wanted = [s for s in str(ctx.one("statistic", required=True)).split(",") if s]
    unknown = [s for s in wanted if s not in STATISTICS]
    if unknown:
        raise Invalid(f"statistic {', '.join(unknown)} is not one of "
                      f"{', '.join(STATISTICS)}", expression="statistic")
    days = int_param(ctx, "duration", 30, 1, 3650)
    start = datetime.now(UTC) - timedelta(days=days)
    out = []
    for code in codes:
        values = []
        params = [("patient", pid), ("code", f"{system}|{code}"),
                  ("date", f"ge{start.date().isoformat()}")]
        for obs in confined_search(ctx, "Observation", params):
            quantity = obs.get("valueQuantity")
            if quantity and "value" in quantity:
                values.append((float(quantity["value"]), quantity))
        summary = {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": system, "code": code}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectivePeriod": {"start": start.isoformat(timespec="seconds"),
                                "end": datetime.now(UTC).isoformat(timespec="seconds")},
            "component": [],
        }
        for name in wanted:
            if not values and name != "count":
                continue
            result = STATISTICS[name]([v for v, _ in values])
            unit = values[0][1] if values and name != "count" else None
            component = {"code": {"coding": [{
                "system": "http://hl7.org/fhir/observation-statistics", "code": name}]}}
            component["valueQuantity"] = {"value": round(result, 2)} if unit is None else {
                "value": round(result, 2), "unit": unit.get("unit"), "system": unit.get("system"),
                "code": unit.get("code")}
            summary["component"].append(component)
        if not summary["component"]:
            del summary["component"]
        out.append({"name": "statistic", "resource": summary})
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": out})


def _p(name: str, type_: str, doc: str, min_: int = 0) -> ParamSpec:
    return ParamSpec(name, type_, min=min_, documentation=doc)


SPECS = [
    OperationSpec(
        name="record-reading", resource_type="Observation", handler=record_reading,
        instance=False, type_level=True, affects_state=True, needs=(("Observation", "c"),),
        title="Record a health-tracker reading",
        description="Stores a patient's reading as vital-signs Observation(s) in UCUM units; "
                    "refuses implausible values and duplicates; alerts the care team.",
        parameters=(
            _p("patient", "string", "Patient id (default: the token's patient)"),
            _p("kind", "code", "blood-pressure, weight, height, bmi, heart-rate, spo2, "
                               "temperature, glucose or steps", 1),
            _p("effective", "dateTime", "When it was measured (default now)"),
            _p("value", "decimal", "The value (not for blood pressure)"),
            _p("unit", "string", "Unit as entered: kg, lb, cm, in, Cel, degF, mg/dL, mmol/L..."),
            _p("systolic", "decimal", "Blood pressure, mm Hg"),
            _p("diastolic", "decimal", "Blood pressure, mm Hg"),
            _p("device", "string", "Device/<id> that measured it"),
            _p("note", "string", "A note from the patient"),
            ParamSpec("return", "Bundle", min=1, use="out"),
        )),
    OperationSpec(
        name="lastn", resource_type="Observation", handler=lastn, instance=False,
        type_level=True, needs=(("Observation", "s"),),
        title="Last N observations", description="The newest `max` Observations per code.",
        parameters=(_p("patient", "string", "Patient id"), _p("category", "token", "Category"),
                    _p("code", "token", "Code(s)"), _p("max", "positiveInt", "Per code"),
                    ParamSpec("return", "Bundle", min=1, use="out"))),
    OperationSpec(
        name="stats", resource_type="Observation", handler=stats, instance=False,
        type_level=True, needs=(("Observation", "s"),),
        title="Observation statistics",
        description="average, minimum, maximum, count, median of a code over `duration` days.",
        parameters=(_p("subject", "string", "Patient id"), _p("code", "string", "Codes", 1),
                    _p("system", "uri", "Code system (default LOINC)"),
                    _p("duration", "decimal", "Days back from now (default 30)"),
                    _p("statistic", "code", "Comma-separated statistics", 1),
                    ParamSpec("statistic", "Observation", max="*", use="out"))),
]
