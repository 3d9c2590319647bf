"""capability: the CapabilityStatement at /metadata, and whether the server does what it says."""

from __future__ import annotations

from conformance.checks.util import NEEDS_TOKEN, expect_outcome, matches, outcome_mentions
from conformance.client import json_body
from conformance.context import RunContext
from conformance.model import SPEC, Fail, Severity, Skip, check
from conformance.validation import validate

# A value of each search parameter type that any server must at least parse.
PROBE_VALUES = {"token": "conformance-probe", "string": "zzconformance", "date": "ge2000-01-01",
                "reference": "conformance-probe", "number": "1", "quantity": "1",
                "uri": "http://example.org/conformance-probe"}
READ_INTERACTIONS = ("read", "vread", "search-type", "history-instance", "history-type")


def _statement(ctx: RunContext) -> dict:
    if ctx.metadata_exchange is not None:
        ctx.http.sink.append(ctx.metadata_exchange)  # the answer this check judges
    if ctx.capability is None:
        raise Skip("the server serves no CapabilityStatement (see capability.metadata)")
    return ctx.capability


@check("capability.metadata", "capability", f"{SPEC}/http.html#capabilities")
def metadata(ctx: RunContext) -> str | None:
    """GET [base]/metadata answers 200 with a CapabilityStatement"""
    resp = ctx.http.get("metadata")
    body = json_body(resp)
    if resp.status_code != 200 or not isinstance(body, dict):
        raise Fail(f"GET metadata answered {resp.status_code}, not 200 with JSON")
    if body.get("resourceType") != "CapabilityStatement":
        raise Fail(f"GET metadata returned a {body.get('resourceType')!r}, "
                   "not a CapabilityStatement")
    return None


@check("capability.valid", "capability",
       f"{SPEC}/capabilitystatement.html#CapabilityStatement")
def valid(ctx: RunContext) -> str | None:
    """The CapabilityStatement validates as R4 and says kind and status"""
    cap = _statement(ctx)
    problem = validate(cap)
    if problem:
        raise Fail(f"the CapabilityStatement is not valid R4: {problem}")
    for field in ("status", "kind", "date", "fhirVersion", "format"):
        if not cap.get(field):
            raise Fail(f"the CapabilityStatement lacks the required {field}")
    return None


@check("capability.fhir-version", "capability",
       f"{SPEC}/capabilitystatement-definitions.html#CapabilityStatement.fhirVersion")
def fhir_version(ctx: RunContext) -> str | None:
    """fhirVersion is 4.0.x (R4)"""
    version = str(_statement(ctx).get("fhirVersion", ""))
    if not version.startswith("4.0."):
        raise Fail(f"fhirVersion is {version or 'missing'!r}, not 4.0.x")
    return f"fhirVersion {version}"


@check("capability.json-format", "capability",
       f"{SPEC}/capabilitystatement-definitions.html#CapabilityStatement.format")
def json_format(ctx: RunContext) -> str | None:
    """The JSON format is declared"""
    formats = [str(f).lower() for f in _statement(ctx).get("format") or []]
    if not any(f in ("json", "application/fhir+json", "application/json") for f in formats):
        raise Fail(f"format declares {formats or 'nothing'}, not json")
    return ", ".join(formats)


@check("capability.rest-server", "capability",
       f"{SPEC}/capabilitystatement-definitions.html#CapabilityStatement.rest")
def rest_server(ctx: RunContext) -> str | None:
    """A rest entry in server mode declares resources"""
    _statement(ctx)
    rest = ctx.rest()
    if not rest:
        raise Fail("the CapabilityStatement has no rest entry with mode server")
    if not rest.get("resource"):
        raise Fail("rest declares no resource types")
    return f"{len(rest['resource'])} resource types declared"


def _answered(resp, what: str) -> None:
    """A declared interaction must be answered: 2xx FHIR JSON, or a 401/403/404 refusal with
    an OperationOutcome; 405, 501 and 5xx mean the declaration is untrue."""
    body = json_body(resp)
    if resp.status_code == 200 and isinstance(body, dict) and body.get("resourceType"):
        return
    if resp.status_code == 401 and "authorization" not in resp.request.headers:
        raise Skip(NEEDS_TOKEN)
    if resp.status_code in (401, 403, 404, 410):
        expect_outcome(resp, f"{what} ({resp.status_code})")
        return
    raise Fail(f"{what} is declared but answered {resp.status_code} "
               f"{resp.headers.get('content-type', '')}".rstrip())


@check("capability.interactions-answered", "capability",
       f"{SPEC}/capabilitystatement-definitions.html#CapabilityStatement.rest.resource."
       "interaction")
def interactions_answered(ctx: RunContext) -> str | None:
    """Every declared read-side interaction (read, vread, search, history) is answered"""
    _statement(ctx)
    tried = 0
    for res in ctx.rest().get("resource") or []:
        rtype = res.get("type")
        codes = ctx.interactions(rtype)
        sample = None
        if "search-type" in codes:
            resp = ctx.http.get(rtype, params={"_count": "1"})
            _answered(resp, f"search {rtype}")
            tried += 1
            found = matches(json_body(resp) or {}, rtype) if resp.status_code == 200 else []
            sample = found[0] if found else None
        rid = (sample or {}).get("id", "conformance-missing")
        if "read" in codes:
            _answered(ctx.http.get(f"{rtype}/{rid}"), f"read {rtype}")
            tried += 1
        if "vread" in codes and sample and (sample.get("meta") or {}).get("versionId"):
            vid = sample["meta"]["versionId"]
            _answered(ctx.http.get(f"{rtype}/{rid}/_history/{vid}"), f"vread {rtype}")
            tried += 1
        if "history-instance" in codes and sample:
            _answered(ctx.http.get(f"{rtype}/{rid}/_history"), f"history {rtype}/{rid}")
            tried += 1
        if "history-type" in codes:
            _answered(ctx.http.get(f"{rtype}/_history", params={"_count": "1"}),
                      f"history {rtype}")
            tried += 1
    if not tried:
        raise Skip("no read-side interaction is declared")
    return f"{tried} declared interactions answered (writes: see the write group)"


@check("capability.search-params-answered", "capability",
       f"{SPEC}/capabilitystatement-definitions.html#CapabilityStatement.rest.resource."
       "searchParam")
def search_params_answered(ctx: RunContext) -> str | None:
    """Every declared search parameter is answered and not reported as unknown or ignored"""
    _statement(ctx)
    tried = 0
    for res in ctx.rest().get("resource") or []:
        rtype = res.get("type")
        if "search-type" not in ctx.interactions(rtype):
            continue
        probes = {}
        for param in res.get("searchParam") or []:
            name, ptype = param.get("name"), param.get("type")
            value = PROBE_VALUES.get(ptype)
            if not name or value is None or name.startswith("_") and name not in (
                    "_id", "_lastUpdated"):
                continue
            probes[name] = "ge2000-01-01" if name == "_lastUpdated" else value
        if not probes:
            continue
        # All of a type's parameters in one search first (AND); one by one only when that
        # one is not cleanly answered, to name the parameter at fault.
        resp = ctx.http.get(rtype, params={**probes, "_count": "1"})
        if resp.status_code != 200 or outcome_mentions(json_body(resp), ""):
            for name, value in probes.items():
                resp = ctx.http.get(rtype, params={name: value, "_count": "1"})
                _answered(resp, f"search {rtype}?{name}")
                if resp.status_code == 200 and outcome_mentions(json_body(resp), name):
                    raise Fail(f"{rtype}?{name} is declared, but the server's OperationOutcome "
                               "says it was not used")
        tried += len(probes)
    if not tried:
        raise Skip("no search parameter is declared")
    return f"{tried} declared search parameters answered"


@check("capability.smart-oauth-uris", "capability",
       "https://hl7.org/fhir/smart-app-launch/conformance.html",
       severity=Severity.RECOMMENDED)
def oauth_uris(ctx: RunContext) -> str | None:
    """A SMART server names its OAuth endpoints in rest.security (where fhirclient looks)"""
    _statement(ctx)
    security = ctx.rest().get("security") or {}
    exts = [e for e in security.get("extension") or []
            if e.get("url", "").endswith("/oauth-uris")]
    if not exts:
        if not ctx.smart_config and not ctx.options.smart_client:
            raise Skip("the server declares no SMART security")
        raise Fail("SMART is served but rest.security has no oauth-uris extension")
    subs = {e.get("url") for e in exts[0].get("extension") or []}
    missing = {"authorize", "token"} - subs
    if missing:
        raise Fail(f"the oauth-uris extension lacks {', '.join(sorted(missing))}")
    return None
