"""write (only with --allow-writes): create, update, conditional create, If-Match, delete,
invalid input rejected. Everything created is deleted at the end of the run."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from conformance.checks.util import expect_outcome, expect_resource, expect_status, version_of
from conformance.client import json_body
from conformance.context import RunContext
from conformance.model import SPEC, Fail, Skip, check

RUN_SYSTEM = "urn:fhir-conformance-runner:probe"


def _patient(ctx: RunContext) -> str:
    if ctx.patient:
        return ctx.patient
    found = ctx.samples("Patient")
    if found:
        return found[0]["id"]
    resp = ctx.http.post("Patient", json_data={
        "resourceType": "Patient", "name": [{"family": "Conformance", "given": ["Probe"]}],
        "identifier": [{"system": RUN_SYSTEM, "value": str(uuid.uuid4())}]})
    expect_status(resp, 201, 200, what="create a Patient to write for")
    return ctx.created_resource(resp, "Patient")["id"]


def observation(ctx: RunContext, identifier: str | None = None,
                value: float = 70.0) -> dict[str, Any]:
    """A small valid vital-signs Observation for the run's patient, marked as the runner's."""
    return {
        "resourceType": "Observation", "status": "final",
        "identifier": [{"system": RUN_SYSTEM, "value": identifier or str(uuid.uuid4())}],
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7",
                             "display": "Body weight"}], "text": "Body weight"},
        "subject": {"reference": f"Patient/{_patient(ctx)}"},
        "effectiveDateTime": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "valueQuantity": {"value": value, "unit": "kg", "system": "http://unitsofmeasure.org",
                          "code": "kg"},
    }


def _require(ctx: RunContext, *interactions: str) -> None:
    ctx.require_writes()
    for name in interactions:
        if not ctx.supports("Observation", name):
            raise Skip(f"the server declares no Observation {name}")


def new_resource(ctx: RunContext) -> dict[str, Any]:
    """Create one Observation and return it as the server stored it."""
    resp = ctx.http.post("Observation", json_data=observation(ctx),
                         headers={"Prefer": "return=representation"})
    expect_status(resp, 201, what="create Observation")
    return ctx.created_resource(resp, "Observation")


@check("write.create", "write", f"{SPEC}/http.html#create")
def create(ctx: RunContext) -> str | None:
    """POST [type] is 201 with a Location, and the resource reads back with a version"""
    _require(ctx, "create")
    resp = ctx.http.post("Observation", json_data=observation(ctx))
    expect_status(resp, 201)
    if not resp.headers.get("location"):
        raise Fail("201 Created without a Location header")
    res = ctx.created_resource(resp, "Observation")
    back = ctx.http.get(f"Observation/{res['id']}")
    expect_status(back, 200, what="read the created resource")
    body = expect_resource(back, "Observation")
    if not version_of(body):
        raise Fail("the created resource has no meta.versionId")
    return f"Observation/{res['id']}"


@check("write.update", "write", f"{SPEC}/http.html#update")
def update(ctx: RunContext) -> str | None:
    """PUT [type]/[id] stores the change under a new version"""
    _require(ctx, "create", "update")
    res = new_resource(ctx)
    changed = {**res, "valueQuantity": {**res["valueQuantity"], "value": 71.5}}
    resp = ctx.http.put(f"Observation/{res['id']}", json_data=changed)
    expect_status(resp, 200)
    back = expect_resource(ctx.http.get(f"Observation/{res['id']}"), "Observation")
    if (back.get("valueQuantity") or {}).get("value") != 71.5:
        raise Fail("the update was answered 200 but the read shows the old value")
    if version_of(back) == version_of(res):
        raise Fail(f"the update kept versionId {version_of(res)!r}")
    return f"version {version_of(res)} -> {version_of(back)}"


@check("write.conditional-create", "write", f"{SPEC}/http.html#ccreate")
def conditional_create(ctx: RunContext) -> str | None:
    """If-None-Exist: no match creates (201), one match returns it (200), several are 412"""
    _require(ctx, "create")
    ident = str(uuid.uuid4())
    cond = {"If-None-Exist": f"identifier={RUN_SYSTEM}|{ident}"}
    first = ctx.http.post("Observation", json_data=observation(ctx, ident), headers=cond)
    expect_status(first, 201, what="conditional create with no match")
    made = ctx.created_resource(first, "Observation")
    again = ctx.http.post("Observation", json_data=observation(ctx, ident), headers=cond)
    if again.status_code == 201:
        ctx.created_resource(again, "Observation")
        raise Fail("a conditional create with one match created a second resource (201)")
    expect_status(again, 200, 304, what="conditional create with one match")
    body = json_body(again)
    if isinstance(body, dict) and body.get("id") not in (None, made["id"]):
        raise Fail(f"one match returned {body.get('id')!r}, not the existing {made['id']!r}")
    dup = ctx.http.post("Observation", json_data=observation(ctx, ident))
    expect_status(dup, 201, what="plain create of a duplicate")
    ctx.created_resource(dup, "Observation")
    many = ctx.http.post("Observation", json_data=observation(ctx, ident), headers=cond)
    if many.status_code in (200, 201):
        if many.status_code == 201:
            ctx.created_resource(many, "Observation")
        raise Fail(f"a conditional create with two matches was answered {many.status_code}")
    expect_status(many, 412, what="conditional create with two matches")
    expect_outcome(many)
    return None


@check("write.if-match", "write", f"{SPEC}/http.html#concurrency")
def if_match(ctx: RunContext) -> str | None:
    """PUT with a stale If-Match is 412 and changes nothing; the current one succeeds"""
    _require(ctx, "create", "update")
    res = new_resource(ctx)
    vid = version_of(res)
    stale = {**res, "valueQuantity": {**res["valueQuantity"], "value": 99.0}}
    resp = ctx.http.put(f"Observation/{res['id']}", json_data=stale,
                        headers={"If-Match": f'W/"{vid}-stale"'})
    if resp.status_code in (200, 201):
        raise Fail(f"PUT with If-Match W/\"{vid}-stale\" (not the current version {vid}) was "
                   f"answered {resp.status_code}: the precondition was ignored")
    expect_status(resp, 412)
    expect_outcome(resp)
    back = expect_resource(ctx.http.get(f"Observation/{res['id']}"), "Observation")
    if (back.get("valueQuantity") or {}).get("value") == 99.0:
        raise Fail("the 412 update changed the resource anyway")
    ok = ctx.http.put(f"Observation/{res['id']}", json_data=stale,
                      headers={"If-Match": f'W/"{vid}"'})
    expect_status(ok, 200, what="PUT with the current If-Match")
    return None


@check("write.delete", "write", f"{SPEC}/http.html#delete")
def delete(ctx: RunContext) -> str | None:
    """DELETE [type]/[id] succeeds and a read afterwards is 410 or 404"""
    _require(ctx, "create", "delete")
    res = new_resource(ctx)
    resp = ctx.http.delete(f"Observation/{res['id']}")
    expect_status(resp, 200, 202, 204)
    back = ctx.http.get(f"Observation/{res['id']}")
    expect_status(back, 410, 404, what="read after delete")
    expect_outcome(back)
    return str(back.status_code)


@check("write.invalid-rejected", "write", f"{SPEC}/http.html#create")
def invalid_rejected(ctx: RunContext) -> str | None:
    """An invalid resource is refused (400/422) with an OperationOutcome, and not stored"""
    _require(ctx, "create")
    bad = observation(ctx)
    bad["status"] = "not-a-status"
    bad["valueQuantity"] = {"value": "seventy"}
    del bad["code"]
    resp = ctx.http.post("Observation", json_data=bad)
    if resp.status_code in (200, 201):
        ctx.created_resource(resp, "Observation")
        raise Fail(f"an Observation with status 'not-a-status', no code and a text value was "
                   f"stored ({resp.status_code})")
    expect_status(resp, 400, 422)
    expect_outcome(resp)
    return None
