"""Home (what is coming and what needs doing) and My record, read with the patient's token."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections import Counter

import httpx
from flask import abort, render_template

from portal import charts, records, trackers, visits, waiting
from portal.blueprint import api, bp, current, language, patient_id, signed_in, t
from portal.fhir_api import GatewayError

log = logging.getLogger("portal.pages")


def _section(load):
    """Run one loader; a failing part of the page says so instead of failing the page."""
    try:
        return load(), False
    except GatewayError as exc:
        log.warning("home section failed: %s", exc.status)
        return None, True
    except httpx.HTTPError as exc:  # the server did not answer this part in time
        log.warning("home section failed: %s", type(exc).__name__)
        return None, True


def _visits() -> list[dict]:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    found = api().search("Appointment", {"patient": patient_id(), "date": f"ge{now}",
                                         "status": "booked", "_sort": "date", "_count": "5"})
    return [{"when": visits.when_words(a.get("start"), language()),
             "what": records.text_of((a.get("serviceType") or [None])[0])
             or a.get("description", "")}
            for a in records.only(found, "Appointment")][:5]


def _unread() -> int:
    out = api().get_operation("Communication/$unread")
    return next((p.get("valueInteger", 0) for p in out.get("parameter") or []
                 if p.get("name") == "count"), 0)


def _balance() -> str | None:
    accounts = records.only(api().search("Account", {"patient": patient_id()}), "Account")
    total = sum((b for b in map(records.account_balance, accounts) if b is not None), start=0)
    return f"{total:.2f}" if total else None


def _alerts() -> list[records.Result]:
    """Out-of-range vital signs of the last 30 days; a tracker's reading named and written
    as on the tracker pages (in the unit the patient chose for it)."""
    since = (dt.date.today() - dt.timedelta(days=30)).isoformat()
    found = api().search("Observation", {"patient": patient_id(), "category": "vital-signs",
                                         "date": f"ge{since}", "_count": "100"})
    rows = []
    for obs in records.only(found, "Observation"):
        row = records.result(obs)
        if row.flag not in ("high", "low", "abnormal"):
            continue
        kind = trackers.kind_of(obs)
        shown = trackers.reading_text(kind, obs, trackers.chosen_unit(kind)) if kind else ""
        rows.append(dataclasses.replace(row, value=shown, name=t(f"trk.kind.{kind.key}"))
                    if shown else row)
    return sorted(rows, key=lambda r: r.when, reverse=True)


def _todo() -> list[tuple[str, dict]]:
    items: list[tuple[str, dict]] = []
    history = api().bundle_entries("MedicationRequest/$medication-history")
    requests, tasks = records.refill_requests(history)
    for req in requests:
        if records.open_task(tasks.get(req.get("id", ""), [])):
            items.append(("home.todo_refill", {"medicine": records.medication_name(req)}))
    labs = api().search("Observation", {"patient": patient_id(), "category": "laboratory",
                                        "_sort": "-date", "_count": "100"})
    latest: dict[str, records.Result] = {}
    for row in records.results(labs):
        latest.setdefault(row.code or row.name, row)
    abnormal = sum(1 for r in latest.values() if r.flag in ("high", "low", "abnormal"))
    if abnormal:
        items.append(("home.todo_abnormal_one", {}) if abnormal == 1
                     else ("home.todo_abnormal", {"count": abnormal}))
    return items


def _waiting() -> list[tuple[str, str]]:
    """What the gateway still keeps for the clinic, or what was not sent, as (sentence, the
    EHR's words): the gateway answers from its own database, so it shows while the EHR is
    down."""
    return [(t(line.key, what=t(line.what), when=line.when), line.reason)
            for line in waiting.lines(api().outbox(), patient_id(), dt.datetime.now(dt.UTC))]


@bp.get("/home")
@signed_in
def home():
    sections = {name: _section(load) for name, load in (
        ("waiting", _waiting), ("todo", _todo), ("visits", _visits), ("unread", _unread),
        ("balance", _balance), ("alerts", _alerts))}
    return render_template("home.html", name=current().data.get("name", ""), s=sections)


@bp.get("/record")
@signed_in
def record():
    pid = patient_id()
    search = api().search
    conditions = records.only(search("Condition", {"patient": pid}), "Condition")
    allergies = records.only(search("AllergyIntolerance", {"patient": pid}),
                             "AllergyIntolerance")
    vaccines = records.only(search("Immunization", {"patient": pid}), "Immunization")
    meds = records.only(search("MedicationRequest", {"patient": pid}), "MedicationRequest")
    labs = records.results(search("Observation", {"patient": pid, "category": "laboratory",
                                                  "_sort": "-date", "_count": "200"}))
    return render_template(
        "record.html", r=records, conditions=conditions, allergies=allergies,
        vaccines=sorted(vaccines, key=lambda i: i.get("occurrenceDateTime", ""), reverse=True),
        meds=meds, labs=labs, repeated=Counter(x.code or x.name for x in labs))




@bp.get("/record/trend/<oid>")
@signed_in
def trend(oid: str):
    """One test's results over time: a chart drawn here and the same numbers as a table.
    The URL names an opaque Observation id, never the test or the patient."""
    obs = api().read_or_none("Observation", oid)
    if obs is None:
        abort(404)
    token = records.coding_token(obs.get("code"))
    found = api().search("Observation", {"patient": patient_id(), "code": token,
                                         "_sort": "date", "_count": "200"}) if token else [obs]
    same = records.only(found, "Observation")
    rows = sorted(records.results(same), key=lambda r: r.when)
    points = records.numeric_points(same)
    low, high = records.range_bounds(obs)
    name = records.text_of(obs.get("code"))
    unit = (obs.get("valueQuantity") or {}).get("unit", "")
    chart = charts.trend_svg(points, name, unit, low, high) if len(points) >= 2 else None
    return render_template("trend.html", name=name, rows=rows, chart=chart)
