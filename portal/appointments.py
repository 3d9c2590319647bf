"""Appointments: my visits (coming and past), find a time and book it, change the time,
cancel, and join a video visit, on the server's scheduling operations.

`Appointment/$find` lists free times, `$hold` keeps the chosen one while the patient confirms,
`$book` books it, `Appointment/{id}/$reschedule` moves a visit in one step, `$cancel` cancels
it and `$start-visit` opens a video visit. Every form is checked here first (dates, ids, the
reason's length) so bad input never reaches the server; every change carries a one-time
`form_id` (`portal.forms`). Choices travel in POST bodies; URLs carry opaque FHIR ids only.
"""

from __future__ import annotations

import datetime as dt
import logging

from flask import abort, redirect, render_template, request, session, url_for

from portal import records, visits
from portal.blueprint import api, bp, language, patient_id, signed_in, t
from portal.fhir_api import GatewayError, valid_id
from portal.forms import new_form_id, use_form_id
from portal.messages import EN

log = logging.getLogger("portal.appointments")
CRITERIA = ("practitioner", "visit_type", "start", "end")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _today() -> dt.date:
    return visits.today()


# -- what the server knows about the clinic ---------------------------------------------------

def _doctors() -> list[dict]:
    """The practitioners with an active Schedule the patient may see: id, name, specialty,
    and the kinds of visit they offer."""
    found: dict[str, dict] = {}
    for sched in records.only(api().search("Schedule", {"active": "true"}), "Schedule"):
        who = next((a for a in sched.get("actor") or []
                    if str(a.get("reference", "")).startswith("Practitioner/")), None)
        if who is None:
            continue
        pid = visits.ref_id(who)
        doc = found.setdefault(pid, {"id": pid, "name": who.get("display") or pid,
                                     "specialty": records.text_of(
                                         (sched.get("specialty") or [None])[0]),
                                     "kinds": set()})
        doc["kinds"].add("telehealth" if visits.is_telehealth(sched) else "in-person")
    return sorted(found.values(), key=lambda d: d["name"])


def _places() -> dict[str, dict]:
    return {loc["id"]: loc for loc in records.only(api().search("Location", {}), "Location")}


def _names() -> dict[str, str]:
    return {p["id"]: _person(p) for p in records.only(api().search("Practitioner", {}),
                                                       "Practitioner")}


def _person(practitioner: dict) -> str:
    name = (practitioner.get("name") or [{}])[0]
    if name.get("text"):
        return name["text"]
    return " ".join([*(name.get("prefix") or []), *(name.get("given") or []),
                     name.get("family", "")]).strip() or practitioner.get("id", "")


def describe(appt: dict, names: dict[str, str], places: dict[str, dict],
             now: dt.datetime) -> dict:
    """The plain facts a page shows of one Appointment, in the patient's language."""
    lang = language()
    who = visits.actor(appt, "Practitioner")
    doctor = (who or {}).get("display") or names.get(visits.ref_id(who), "")
    tele = visits.is_telehealth(appt)
    if tele:
        where = t("appt.where_video")
    else:
        loc = places.get(visits.ref_id(visits.actor(appt, "Location")), {})
        address = loc.get("address") or {}
        line = ", ".join([*(address.get("line") or []), address.get("city", "")]).strip(", ")
        where = ", ".join(p for p in (loc.get("name", ""), line) if p) or t("appt.where_clinic")
    status = appt.get("status") or "unknown"
    join = visits.join_state(appt, now)
    start = visits.moment(appt.get("start"))
    return {
        "id": appt.get("id", ""), "when": visits.when_words(appt.get("start"), lang),
        "who": doctor, "where": where, "telehealth": tele, "status": status,
        "status_words": t(f"appt.status.{status}") if f"appt.status.{status}" in EN
        else status,
        "join": join, "join_url": visits.join_link(appt),
        "opens": visits.when_words(visits.opens_at(appt), lang) if join == "later" else "",
        "can_change": status == "booked" and start is not None and start > now,
        "slot": visits.slot_id(appt),
    }


def _mine() -> list[dict]:
    return records.only(api().search("Appointment", {"patient": patient_id(),
                                                     "_count": "100"}), "Appointment")


def _read_mine(aid: str) -> dict | None:
    """The patient's own Appointment, or None (unknown, or someone else's: it looks missing)."""
    appt = api().read_or_none("Appointment", aid)
    if appt is None:
        return None
    pat = visits.actor(appt, "Patient")
    return appt if visits.ref_id(pat) == patient_id() else None


# -- my appointments --------------------------------------------------------------------------

def _list_page(error: str | None = None, status: int = 200):
    now = _now()
    names, places = _names(), _places()
    upcoming, past = visits.split(_mine(), now)
    coming = [describe(a, names, places, now) for a in upcoming]
    for row in coming:
        row["form_id"] = new_form_id() if row["join"] == "open" else ""
    notice = session.pop("appt_notice", None)
    shown = None
    if notice:
        shown = next((r for r in coming if r["id"] == notice.get("id")), None)
        if shown is None and notice.get("id"):
            found = _read_mine(notice["id"])
            shown = describe(found, names, places, now) if found else None
    return render_template("appointments.html", upcoming=coming,
                           past=[describe(a, names, places, now) for a in past],
                           notice=notice, shown=shown, error=error), status


@bp.get("/appointments")
@signed_in
def appointments():
    return _list_page()


# -- find a time ------------------------------------------------------------------------------

def _find_page(search: visits.Search | None = None, moving: dict | None = None,
               results: list | None = None, error: str | None = None, status: int = 200,
               slot_error: str | None = None, doctors: list[dict] | None = None):
    doctors = _doctors() if doctors is None else doctors
    raw = search.raw if search else {}
    if not raw and moving is not None:  # changing a visit: start from its doctor and kind
        raw = {"practitioner": visits.ref_id(visits.actor(moving["appt"], "Practitioner")),
               "visit_type": "telehealth" if moving["row"]["telehealth"] else "in-person"}
    errors = {k: t(v, **(search.values.get(k, {}) if search else {}))
              for k, v in (search.errors if search else {}).items()}
    lang = language()
    days = []
    if results is not None:
        names = {d["id"]: d["name"] for d in doctors}
        for day, appts in visits.group_by_day(results):
            times = []
            for appt in appts:
                who = visits.actor(appt, "Practitioner")
                times.append({
                    "slot": visits.slot_id(appt),
                    "time": visits.time_words(visits.moment(appt["start"]), lang),
                    "who": (who or {}).get("display") or names.get(visits.ref_id(who), ""),
                    "telehealth": visits.is_telehealth(appt)})
            days.append({"key": day.isoformat(), "words": visits.day_words(day, lang),
                         "times": times})
    return render_template(
        "appointments_find.html", doctors=doctors, raw=raw, errors=errors, days=days,
        searched=results is not None, error=error, slot_error=slot_error,
        more=visits.MAX_TIMES if results is not None and len(results) >= visits.MAX_TIMES
        else 0,
        moving=moving["row"] if moving else None, today=_today().isoformat(),
        max_days=visits.MAX_RANGE_DAYS, default_days=visits.DEFAULT_RANGE_DAYS), status


def _moving(form) -> tuple[dict | None, bool]:
    """(the visit being moved, or None; False when the form names one that is not ours)."""
    aid = form.get("appointment", "")
    if not aid:
        return None, True
    appt = _read_mine(aid)
    if appt is None or appt.get("status") != "booked":
        return None, False
    now = _now()
    return {"appt": appt, "row": describe(appt, _names(), _places(), now)}, True


def _search(form, moving: dict | None, **page):
    """Check the criteria and list the free times (or show what is wrong with them)."""
    doctors = _doctors()
    search = visits.check_search(form, {d["id"] for d in doctors}, _today())
    if search.errors:
        return _find_page(search, moving, error=page.get("error"), status=400,
                          doctors=doctors)
    found = api().bundle_entries("Appointment/$find", search.params(patient_id()))
    current = moving["row"]["slot"] if moving else None  # not "move" a visit onto itself
    results = [a for a in records.only(found, "Appointment")
               if visits.slot_id(a) and visits.slot_id(a) != current]
    return _find_page(search, moving, results, doctors=doctors, **page)


@bp.get("/appointments/find")
@signed_in
def find_time():
    return _find_page()


@bp.get("/appointments/<aid>/change")
@signed_in
def change_time(aid: str):
    appt = _read_mine(aid)
    if appt is None:
        abort(404)
    row = describe(appt, _names(), _places(), _now())
    if not row["can_change"]:
        return _list_page(t("appt.err_not_changeable"), 422)
    return _find_page(moving={"appt": appt, "row": row})


@bp.post("/appointments/find")
@signed_in
def search_times():
    moving, ok = _moving(request.form)
    if not ok:
        return _list_page(t("appt.err_unknown"), 404)
    return _search(request.form, moving)


@bp.post("/appointments/choose")
@signed_in
def choose_time():
    """Hold the chosen time (`$hold`) and ask the patient to confirm it."""
    moving, ok = _moving(request.form)
    if not ok:
        return _list_page(t("appt.err_unknown"), 404)
    slot = request.form.get("slot", "")
    if not slot:
        return _search(request.form, moving, slot_error=t("appt.err_choose"), status=400)
    if not valid_id(slot):
        return _search(request.form, moving, error=t("appt.err_unknown_slot"), status=400)
    try:
        _, proposed = api().post_operation("Appointment/$hold", [
            {"name": "slot", "valueReference": {"reference": f"Slot/{slot}"}}])
    except GatewayError as exc:
        return _refused(exc, moving)
    now = _now()
    row = describe(proposed, _names(), _places(), now)
    return render_template("appointments_confirm.html", row=row, slot=slot,
                           moving=moving["row"] if moving else None,
                           criteria={k: request.form.get(k, "") for k in CRITERIA},
                           form_id=new_form_id())


def _refused(exc: GatewayError, moving: dict | None):
    """A refusal of $hold, $book or $reschedule in the patient's words, with the times again."""
    if exc.status == 404:
        key = "appt.err_unknown" if exc.expression.startswith("Appointment") \
            else "appt.err_unknown_slot"
        return _search(request.form, moving, error=t(key), status=404)
    if exc.status == 409:
        return _search(request.form, moving, error=t("appt.err_taken"), status=409)
    if exc.status in (400, 422):
        return _search(request.form, moving, error=_words(exc), status=422)
    raise exc


def _words(exc: GatewayError) -> str:
    window = visits.window_refusal(exc.text)
    if window:
        hours, phone = window
        return (t("appt.err_window", hours=hours, phone=phone) if phone
                else t("appt.err_window_no_phone", hours=hours))
    if "Double booking" in exc.text:
        return t("appt.err_overlap")
    if "in the past" in exc.text:
        return t("appt.err_slot_past")
    return t("appt.err_refused", reason=exc.text)


@bp.post("/appointments/book")
@signed_in
def book():
    """Book the confirmed time (`$book`), or move the visit to it (`$reschedule`)."""
    slot = request.form.get("slot", "")
    aid = request.form.get("appointment", "")
    if not valid_id(slot) or (aid and not valid_id(aid)):
        return _list_page(t("appt.err_unknown_slot"), 400)
    if not use_form_id(request.form.get("form_id", "")):
        return _list_page(t("appt.err_twice"), 409)
    moving, ok = _moving(request.form)
    if not ok:
        return _list_page(t("appt.err_unknown"), 404)
    params = [{"name": "slot", "valueReference": {"reference": f"Slot/{slot}"}}]
    try:
        if moving:
            _, stored = api().post_operation(f"Appointment/{aid}/$reschedule", params)
        else:
            _, stored = api().post_operation("Appointment/$book", params)
    except GatewayError as exc:
        return _refused(exc, moving)
    session["appt_notice"] = {"kind": "moved" if moving else "booked",
                              "id": stored.get("id", "")}
    return redirect(url_for("portal.appointments"), code=303)


# -- cancel -----------------------------------------------------------------------------------

def _cancel_page(appt: dict, error: str | None = None, field_error: str | None = None,
                 reason: str = "", status: int = 200, closed: bool = False):
    row = describe(appt, _names(), _places(), _now())
    return render_template("appointments_cancel.html", row=row, error=error,
                           field_error=field_error, reason=reason, closed=closed,
                           max_reason=visits.MAX_REASON,
                           form_id=new_form_id() if row["can_change"] and not closed else ""
                           ), status


@bp.get("/appointments/<aid>/cancel")
@signed_in
def cancel_page(aid: str):
    appt = _read_mine(aid)
    if appt is None:
        abort(404)
    return _cancel_page(appt)


@bp.post("/appointments/cancel")
@signed_in
def cancel():
    aid = request.form.get("appointment", "")
    raw = request.form.get("reason", "")
    appt = _read_mine(aid)
    if appt is None:
        return _list_page(t("appt.err_unknown"), 404)
    if not use_form_id(request.form.get("form_id", "")):
        return _list_page(t("appt.err_twice"), 409)
    reason, err = visits.check_reason(raw)
    if err:
        return _cancel_page(appt, field_error=t(err, length=len(raw.strip()),
                                                max=visits.MAX_REASON),
                            reason=raw, status=400)
    try:
        api().post_operation(f"Appointment/{aid}/$cancel", [
            {"name": "reason", "valueString": reason or t("appt.cancel_default_reason")}])
    except GatewayError as exc:
        if exc.status == 404:
            return _list_page(t("appt.err_unknown"), 404)
        if exc.status in (400, 409, 422):
            closed = visits.window_refusal(exc.text) is not None
            text = t("appt.err_changed") if exc.status == 409 else _words(exc)
            return _cancel_page(appt, error=text, reason=raw, status=exc.status,
                                closed=closed)
        raise
    session["appt_notice"] = {"kind": "cancelled", "id": aid}
    return redirect(url_for("portal.appointments"), code=303)


# -- video visits -----------------------------------------------------------------------------

@bp.post("/appointments/join")
@signed_in
def join():
    """Start the video visit (`$start-visit`) and give the patient its link."""
    aid = request.form.get("appointment", "")
    appt = _read_mine(aid)
    if appt is None:
        return _list_page(t("appt.err_unknown"), 404)
    if not visits.is_telehealth(appt):
        return _list_page(t("appt.err_not_video"), 422)
    if not use_form_id(request.form.get("form_id", "")):
        return _list_page(t("appt.err_twice"), 409)
    if appt.get("status") != "arrived":
        try:
            api().post_operation(f"Appointment/{aid}/$start-visit", [])
        except GatewayError as exc:
            if exc.status == 404:
                return _list_page(t("appt.err_unknown"), 404)
            if exc.status in (409, 422):
                return _list_page(t("appt.err_join_closed"), 422)
            raise
        appt = api().read("Appointment", aid)
    row = describe(appt, _names(), _places(), _now())
    return render_template("appointments_joined.html", row=row)
