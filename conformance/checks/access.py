"""access: with two patients' tokens, neither may read, search, _include or write the
other's data. Known test kits never try this; it is the leak that matters most."""

from __future__ import annotations

import json
from typing import Any

from conformance.checks.util import matches
from conformance.client import json_body
from conformance.context import RunContext, Session
from conformance.model import SMART_SPEC, Fail, Skip, check

SCOPES = f"{SMART_SPEC}/scopes-and-launch-context.html#patient-specific-scopes"
COMPARTMENT = "https://hl7.org/fhir/R4/compartmentdefinition-patient.html"
TYPES = ("Observation", "Condition", "MedicationRequest", "Encounter", "AllergyIntolerance",
         "Immunization")


def _pair(ctx: RunContext) -> tuple[Session, Session]:
    if len(ctx.sessions) < 2:
        raise Skip("needs two patients' tokens (two --patient-login, or --token and --token2)")
    a, b = ctx.sessions[0], ctx.sessions[1]
    if not a.patient or not b.patient:
        raise Skip("a token names no patient (give --patient/--patient2)")
    if a.patient == b.patient:
        raise Skip("both tokens are for the same patient")
    return a, b


def _belongs(res: dict[str, Any], pid: str) -> bool:
    """Whether a resource is patient `pid` or points at it anywhere."""
    if res.get("resourceType") == "Patient" and res.get("id") == pid:
        return True
    text = json.dumps(res)
    return f'"Patient/{pid}"' in text or f'/Patient/{pid}"' in text


def _leaks(body: Any, pid: str) -> list[str]:
    if not isinstance(body, dict):
        return []
    resources = [body] if body.get("resourceType") != "Bundle" else [
        e.get("resource") or {} for e in body.get("entry") or []]
    return [f"{r.get('resourceType')}/{r.get('id')}" for r in resources
            if r.get("resourceType") != "OperationOutcome" and _belongs(r, pid)]


def _own(ctx: RunContext, owner: Session) -> tuple[str, dict] | None:
    """One compartment resource of `owner`, found with owner's own token."""
    for rtype in TYPES:
        if not ctx.supports(rtype, "search-type"):
            continue
        resp = ctx.http.get(rtype, params={"patient": owner.patient, "_count": "1"},
                            token=owner.access_token)
        found = matches(json_body(resp) or {}, rtype) if resp.status_code == 200 else []
        if found:
            return rtype, found[0]
    return None


def _probe(ctx: RunContext, me: Session, other: Session,
           probes: list[tuple[str, dict]], verb: str) -> int:
    """Run each search with `me`'s token; Fail on the first that shows `other`'s data."""
    for rtype, params in probes:
        resp = ctx.http.get(rtype, params={**params, "_count": "50"}, token=me.access_token)
        leaks = _leaks(json_body(resp), other.patient) if resp.status_code == 200 else []
        if leaks:
            raise Fail(f"{me.patient}'s search {rtype}?{params} {verb} {other.patient}'s "
                       f"{leaks[:3]}")
    return len(probes)


def _both_ways(ctx: RunContext):
    a, b = _pair(ctx)
    return ((a, b), (b, a))


@check("access.read-other-patient", "access", SCOPES)
def read_other_patient(ctx: RunContext) -> str | None:
    """A patient's token cannot read another patient's Patient resource"""
    for me, other in _both_ways(ctx):
        resp = ctx.http.get(f"Patient/{other.patient}", token=me.access_token)
        if resp.status_code == 200:
            raise Fail(f"{me.patient}'s token read Patient/{other.patient} (200)")
        if resp.status_code not in (401, 403, 404):
            raise Fail(f"{me.patient}'s read of Patient/{other.patient} answered "
                       f"{resp.status_code}, not a refusal")
    return "refused both ways"


@check("access.read-other-data", "access", COMPARTMENT)
def read_other_data(ctx: RunContext) -> str | None:
    """A patient's token cannot read, vread or see the history of another patient's data"""
    tried = 0
    for me, other in _both_ways(ctx):
        found = _own(ctx, other)
        if not found:
            continue
        rtype, res = found
        paths = [f"{rtype}/{res['id']}", f"{rtype}/{res['id']}/_history"]
        if (res.get("meta") or {}).get("versionId"):
            paths.append(f"{rtype}/{res['id']}/_history/{res['meta']['versionId']}")
        for path in paths:
            resp = ctx.http.get(path, token=me.access_token)
            if resp.status_code == 200 and _leaks(json_body(resp), other.patient):
                raise Fail(f"{me.patient}'s token got {path}, {other.patient}'s data")
            tried += 1
    if not tried:
        raise Skip("found no compartment data of either patient")
    return f"{tried} reads refused"


@check("access.search-other-patient", "access", COMPARTMENT)
def search_other(ctx: RunContext) -> str | None:
    """A patient's searches never return another patient's data, however they are asked"""
    tried = 0
    for me, other in _both_ways(ctx):
        found = _own(ctx, other)
        probes = [("Patient", {"_id": other.patient}), ("Patient", {})]
        for rtype in TYPES:
            if ctx.supports(rtype, "search-type"):
                probes += [(rtype, {"patient": other.patient}),
                           (rtype, {"subject": f"Patient/{other.patient}"})]
                break
        if found:
            probes.append((found[0], {"_id": found[1]["id"]}))
        tried += _probe(ctx, me, other, probes, "returned")
        resp = ctx.http.post(f"{probes[-1][0]}/_search", data=probes[-1][1],
                             token=me.access_token)
        if resp.status_code == 200 and _leaks(json_body(resp), other.patient):
            raise Fail(f"{me.patient}'s POST _search returned {other.patient}'s data")
    return f"{tried} searches kept to their patient"


@check("access.include-other-patient", "access", COMPARTMENT)
def include_other(ctx: RunContext) -> str | None:
    """_include and _revinclude never pull in another patient's data"""
    tried = 0
    for me, other in _both_ways(ctx):
        probes = [("Patient", {"_revinclude": "Observation:subject"}),
                  ("Patient", {"_id": other.patient, "_revinclude": "Observation:patient"})]
        for rtype in TYPES:
            if not ctx.supports(rtype, "search-type"):
                continue
            for inc in (ctx.declared(rtype) or {}).get("searchInclude") or \
                    [f"{rtype}:subject", f"{rtype}:patient"]:
                probes.append((rtype, {"_include": inc}))
            break
        found = _own(ctx, other)
        if found and found[0] in TYPES:
            probes.append((found[0], {"_id": found[1]["id"],
                                      "_include": f"{found[0]}:subject"}))
        tried += _probe(ctx, me, other, probes, "included")
    return f"{tried} include searches kept to their patient"


@check("access.write-other-patient", "access", SCOPES)
def write_other(ctx: RunContext) -> str | None:
    """A patient's token cannot create data for, or change data of, another patient"""
    ctx.require_writes()
    from conformance.checks.write import observation

    for me, other in _both_ways(ctx):
        obs = observation(ctx)
        obs["subject"] = {"reference": f"Patient/{other.patient}"}
        resp = ctx.http.post("Observation", json_data=obs, token=me.access_token)
        if resp.status_code in (200, 201):
            ctx.created_resource(resp, "Observation")
            raise Fail(f"{me.patient}'s token created an Observation for {other.patient} "
                       f"({resp.status_code})")
        found = _own(ctx, other)
        if found:
            rtype, res = found
            resp = ctx.http.put(f"{rtype}/{res['id']}", json_data=res, token=me.access_token)
            if resp.status_code in (200, 201):
                raise Fail(f"{me.patient}'s token updated {rtype}/{res['id']} of "
                           f"{other.patient} ({resp.status_code})")
            resp = ctx.http.delete(f"{rtype}/{res['id']}", token=me.access_token)
            if resp.status_code in (200, 202, 204):
                check_back = ctx.http.get(f"{rtype}/{res['id']}", token=other.access_token)
                if check_back.status_code != 200:
                    raise Fail(f"{me.patient}'s token deleted {rtype}/{res['id']} of "
                               f"{other.patient} ({resp.status_code})")
    return "refused both ways"
