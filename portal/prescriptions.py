"""Prescriptions: the list with each refill request's status, and asking for a refill.

The refill goes to the server's `MedicationRequest/{id}/$refill-request` operation. The note is
checked here first (the same limits the operation states), so bad input never reaches the
server. Each form carries a one-time `form_id` (`portal.forms`) against double submits.
"""

from __future__ import annotations

import logging

from flask import redirect, render_template, request, session, url_for

from portal import records
from portal.blueprint import api, bp, busy_page, signed_in, t
from portal.fhir_api import GatewayError, valid_id
from portal.forms import new_form_id, use_form_id
from portal.messages import EN

log = logging.getLogger("portal.prescriptions")
MAX_NOTE = 1000


def check_note(raw: str) -> tuple[str | None, str | None]:
    """(note to send or None, error text or None)."""
    if raw == "":
        return None, None
    if not raw.strip():
        return None, t("rx.err_note_blank")
    note = raw.strip()
    if len(note) > MAX_NOTE:
        return None, t("rx.err_note_long", length=len(note), max=MAX_NOTE)
    return note, None


def _refusal(exc: GatewayError) -> str:
    """The server's refusal in the patient's language where the portal knows the rule (by the
    OperationOutcome's `expression`), else the server's own words."""
    key = f"rx.refused.{exc.expression}"
    return t(key) if key in EN else t("rx.err_refused", reason=exc.text)


def _page(errors: dict[str, str] | None = None, values: dict[str, str] | None = None,
          status: int = 200):
    history = api().bundle_entries("MedicationRequest/$medication-history")
    meds, tasks = records.refill_requests(history)
    meds.sort(key=lambda m: (m.get("status") != "active", records.medication_name(m)))
    rows = []
    for med in meds:
        mine = tasks.get(med.get("id", ""), [])
        left = records.refills_left(med, mine)
        can_ask = (med.get("status") == "active" and left > 0
                   and records.open_task(mine) is None)
        rows.append({"med": med, "tasks": mine, "can_ask": can_ask, "left": left,
                     "form_id": new_form_id() if can_ask else ""})
    notice = session.pop("rx_notice", None)
    return render_template("prescriptions.html", rows=rows, r=records, max_note=MAX_NOTE,
                           errors=errors or {}, values=values or {}, notice=notice), status


@bp.get("/prescriptions")
@signed_in
def prescriptions():
    return _page()


@bp.post("/prescriptions/refill")
@signed_in
def refill():
    """Ask for a refill of one prescription; errors are shown next to the form's field."""
    rid = request.form.get("prescription", "")
    raw = request.form.get("note", "")
    if not valid_id(rid):
        return _page({"_page": t("rx.err_unknown")}, status=400)
    if not use_form_id(request.form.get("form_id", "")):
        return _page({rid: t("rx.err_twice")}, {rid: raw}, status=409)
    note, error = check_note(raw)
    if error:
        return _page({rid: error}, {rid: raw}, status=400)
    params = [{"name": "note", "valueString": note}] if note else []
    try:
        status, _ = api().post_operation(f"MedicationRequest/{rid}/$refill-request", params)
    except GatewayError as exc:
        if exc.status == 404:
            return _page({"_page": t("rx.err_unknown")}, status=404)
        if exc.status in (400, 422):
            return _page({rid: _refusal(exc)}, {rid: raw}, status=422)
        if exc.status == 503:
            return busy_page(lambda: _page({rid: t("rx.err_busy")}, {rid: raw}, status=503), exc)
        raise
    # 201 a new request; 202 the gateway keeps it until the EHR takes it; 200 the open
    # request already there
    session["rx_notice"] = {200: "rx.already", 202: "rx.queued"}.get(status, "rx.sent")
    return redirect(url_for("portal.prescriptions"), code=303)
