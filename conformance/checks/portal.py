"""portal: the patient-portal operations (scheduling, refills, messaging, billing, trackers),
checked only where the server declares them in its CapabilityStatement."""

from __future__ import annotations

import datetime as dt
from typing import Any

from conformance.checks.util import expect_outcome, expect_resource, expect_status, matches
from conformance.client import json_body
from conformance.context import RunContext
from conformance.model import SPEC, Fail, Skip, check

OPERATIONS = f"{SPEC}/operations.html"
SCHEDULING = "https://profiles.ihe.net/ITI/SCHED/"
REFILL = f"{SPEC}/task.html"


def _declared(ctx: RunContext, *names: str) -> None:
    ops = ctx.operations()
    missing = [n for n in names if n not in ops]
    if missing:
        raise Skip(f"the server declares no ${', $'.join(missing)}")


def _patient(ctx: RunContext) -> str:
    if not ctx.patient:
        raise Skip("needs a patient in context (a patient token, or --patient)")
    return ctx.patient


def _params(**values: Any) -> dict[str, Any]:
    out = []
    for name, value in values.items():
        name = name.replace("_", "-")
        if isinstance(value, dict):
            out.append({"name": name, "valueReference": value})
        elif isinstance(value, (int, float)):
            out.append({"name": name, "valueDecimal": value})
        else:
            out.append({"name": name, "valueString": value})
    return {"resourceType": "Parameters", "parameter": out}


@check("portal.operation-definitions", "portal", f"{OPERATIONS}#defining")
def operation_definitions(ctx: RunContext) -> str | None:
    """Each declared operation's definition served by the server is an OperationDefinition"""
    ops = [op for res in ctx.rest().get("resource") or [] for op in res.get("operation") or []]
    ops += list(ctx.rest().get("operation") or [])
    local = [op for op in ops if str(op.get("definition", "")).startswith(ctx.options.base)]
    if not local:
        raise Skip("the server declares no operation defined on itself")
    for op in local:
        resp = ctx.http.get(op["definition"])
        expect_status(resp, 200, what=f"GET {op['definition']}")
        body = expect_resource(resp, "OperationDefinition")
        if body.get("code") != op.get("name", "").lstrip("$"):
            raise Fail(f"{op['definition']} defines {body.get('code')!r}, "
                       f"not {op.get('name')!r}")
    return f"{len(local)} OperationDefinitions"


def _free_slot(ctx: RunContext, skip: set[str]) -> dict[str, Any]:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    resp = ctx.http.get("Slot", params={"status": "free", "start": f"ge{soon.date()}",
                                        "_sort": "start", "_count": "20"})
    for slot in matches(json_body(resp) or {}, "Slot"):
        if slot["id"] not in skip:
            return slot
    raise Skip("found no free Slot three or more days ahead")


@check("portal.book-cancel", "portal", SCHEDULING)
def book_cancel(ctx: RunContext) -> str | None:
    """$book takes a free slot (Appointment booked, Slot busy); $cancel frees it again"""
    _declared(ctx, "book", "cancel")
    ctx.require_writes()
    pid = _patient(ctx)
    tried: set[str] = set()
    for _ in range(5):
        slot = _free_slot(ctx, tried)
        tried.add(slot["id"])
        resp = ctx.http.post("Appointment/$book", json_data=_params(
            slot={"reference": f"Slot/{slot['id']}"}, patient={"reference": f"Patient/{pid}"}))
        if resp.status_code in (409, 422):
            continue  # taken meanwhile, or overlaps this patient's own booking: another one
        break
    else:
        raise Skip("five free slots in a row could not be booked")
    expect_status(resp, 200, 201, what="$book")
    body = json_body(resp) or {}
    appt = body if body.get("resourceType") == "Appointment" else next(
        (r for r in matches(body, "Appointment")), None)
    if not appt or appt.get("status") != "booked":
        raise Fail(f"$book answered {resp.status_code} without a booked Appointment")
    busy = expect_resource(ctx.http.get(f"Slot/{slot['id']}"), "Slot")
    if busy.get("status") != "busy":
        raise Fail(f"after $book Slot/{slot['id']} is {busy.get('status')!r}, not busy")
    resp = ctx.http.post(f"Appointment/{appt['id']}/$cancel",
                         json_data=_params(reason="conformance runner: booked to test"))
    expect_status(resp, 200, what="$cancel")
    back = expect_resource(ctx.http.get(f"Appointment/{appt['id']}"), "Appointment")
    if back.get("status") != "cancelled":
        raise Fail(f"after $cancel the Appointment is {back.get('status')!r}")
    free = expect_resource(ctx.http.get(f"Slot/{slot['id']}"), "Slot")
    if free.get("status") != "free":
        raise Fail(f"after $cancel Slot/{slot['id']} is {free.get('status')!r}, not free "
                   "again")
    return f"Slot/{slot['id']} booked and freed"


@check("portal.medication-history", "portal", REFILL)
def medication_history(ctx: RunContext) -> str | None:
    """$medication-history lists the patient's own prescriptions"""
    _declared(ctx, "medication-history")
    pid = _patient(ctx)
    body = json_body(ctx.http.get("MedicationRequest/$medication-history"))
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise Fail("$medication-history did not answer a Bundle")
    for res in matches(body, "MedicationRequest"):
        if (res.get("subject") or {}).get("reference") != f"Patient/{pid}":
            raise Fail(f"$medication-history holds MedicationRequest/{res.get('id')} of "
                       f"{(res.get('subject') or {}).get('reference')}")
    return f"{len(matches(body, 'MedicationRequest'))} prescriptions"


@check("portal.refill-request", "portal", f"{REFILL}#fulfillment")
def refill_request(ctx: RunContext) -> str | None:
    """$refill-request on an active prescription gives a fulfill Task focused on it"""
    _declared(ctx, "refill-request")
    ctx.require_writes()
    _patient(ctx)
    people = [(s.patient, s.access_token) for s in ctx.sessions if s.patient] or [
        (ctx.patient, True)]
    for pid, token in people:  # the first patient with a refillable prescription
        resp = ctx.http.get("MedicationRequest", params={"patient": pid, "status": "active",
                                                         "_count": "20"}, token=token)
        for mr in matches(json_body(resp) or {}, "MedicationRequest"):
            resp = ctx.http.post(f"MedicationRequest/{mr['id']}/$refill-request",
                                 json_data=_params(), token=token)
            if resp.status_code == 422:
                continue  # no refills left, or not refillable online: try another
            expect_status(resp, 200, 201, what="$refill-request")
            task = expect_resource(resp, "Task")
            if resp.status_code == 201:
                ctx.created.append(f"Task/{task['id']}")
            focus = (task.get("focus") or {}).get("reference")
            if focus != f"MedicationRequest/{mr['id']}":
                raise Fail(f"the refill Task's focus is {focus!r}, not "
                           f"MedicationRequest/{mr['id']}")
            if task.get("status") in ("rejected", "failed", "cancelled"):
                raise Fail(f"the refill Task is {task.get('status')!r}")
            return f"Task/{task['id']} for MedicationRequest/{mr['id']}"
    raise Skip("no active prescription could be refilled")


@check("portal.unread", "portal", f"{SPEC}/communication.html")
def unread(ctx: RunContext) -> str | None:
    """Communication/$unread answers the patient's unread counts"""
    _declared(ctx, "unread")
    _patient(ctx)
    resp = ctx.http.get("Communication/$unread")
    expect_status(resp, 200)
    body = json_body(resp)
    if not isinstance(body, dict) or body.get("resourceType") not in ("Parameters", "Bundle"):
        raise Fail("$unread answered no Parameters or Bundle")
    return None


@check("portal.statement", "portal", f"{SPEC}/account.html")
def statement(ctx: RunContext) -> str | None:
    """Account/[id]/$statement of the patient's own account is a page"""
    _declared(ctx, "statement")
    pid = _patient(ctx)
    resp = ctx.http.get("Account", params={"patient": pid, "_count": "1"})
    accounts = matches(json_body(resp) or {}, "Account")
    if not accounts:
        raise Skip("the patient has no Account")
    resp = ctx.http.get(f"Account/{accounts[0]['id']}/$statement", accept="text/html")
    expect_status(resp, 200, what="$statement")
    if not resp.content:
        raise Fail("$statement answered an empty page")
    return resp.headers.get("content-type", "")


@check("portal.record-reading", "portal", f"{SPEC}/observation-vitalsigns.html")
def record_reading(ctx: RunContext) -> str | None:
    """$record-reading stores a vital-signs Observation; an implausible value is refused"""
    _declared(ctx, "record-reading")
    ctx.require_writes()
    pid = _patient(ctx)
    when = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    resp = ctx.http.post("Observation/$record-reading", json_data=_params(
        kind="weight", value=70.3, unit="kg", effective=when))
    expect_status(resp, 200, 201, what="$record-reading")
    body = json_body(resp) or {}
    obs = body if body.get("resourceType") == "Observation" else next(
        iter(matches(body, "Observation")), None)
    if not obs:
        raise Fail("$record-reading answered no Observation")
    ctx.created.append(f"Observation/{obs['id']}")
    if (obs.get("subject") or {}).get("reference") != f"Patient/{pid}":
        raise Fail(f"the reading is for {obs.get('subject')}, not Patient/{pid}")
    bad = ctx.http.post("Observation/$record-reading", json_data=_params(
        kind="weight", value=7000, unit="kg", effective=when))
    if bad.status_code in (200, 201):
        raise Fail("a weight of 7000 kg was recorded")
    expect_status(bad, 400, 422, what="an implausible reading")
    expect_outcome(bad)
    return f"Observation/{obs['id']}"
