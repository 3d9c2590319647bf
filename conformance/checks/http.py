"""http: content negotiation, OperationOutcome on errors, CORS on discovery."""

from __future__ import annotations

from conformance.checks.util import expect_outcome, expect_resource, expect_status
from conformance.client import is_json_type
from conformance.context import RunContext
from conformance.model import SMART_SPEC, SPEC, Fail, Severity, Skip, check

MIME = f"{SPEC}/http.html#mime-type"


def _target(ctx: RunContext) -> str:
    for rtype in ("Patient", "Observation", *ctx.types()):
        if ctx.supports(rtype, "read") and ctx.samples(rtype):
            return f"{rtype}/{ctx.samples(rtype)[0]['id']}"
    return "metadata"


def _ctype(resp) -> str:
    return resp.headers.get("content-type", "").split(";")[0].strip().lower()


@check("http.content-type", "http", MIME)
def content_type(ctx: RunContext) -> str | None:
    """A JSON answer is labelled application/fhir+json"""
    path = _target(ctx)
    resp = ctx.http.get(path)
    expect_status(resp, 200)
    if _ctype(resp) != "application/fhir+json":
        raise Fail(f"GET {path} is labelled {resp.headers.get('content-type') or 'nothing'}, "
                   "not application/fhir+json")
    return None


@check("http.format-param", "http", f"{SPEC}/http.html#parameters")
def format_param(ctx: RunContext) -> str | None:
    """_format=json and _format=application/fhir+json give JSON, whatever Accept says"""
    path = _target(ctx)
    for fmt in ("json", "application/fhir+json"):
        resp = ctx.http.get(path, params={"_format": fmt}, accept="text/html")
        expect_status(resp, 200, what=f"GET {path}?_format={fmt}")
        if not is_json_type(resp.headers.get("content-type", "")):
            raise Fail(f"_format={fmt} answered {resp.headers.get('content-type')}")
        expect_resource(resp, path.split("/")[0] if "/" in path else "CapabilityStatement")
    return None


@check("http.accept-json", "http", MIME)
def accept_json(ctx: RunContext) -> str | None:
    """Accept: application/json and application/fhir+json are both served as JSON"""
    path = _target(ctx)
    for accept in ("application/json", "application/fhir+json"):
        resp = ctx.http.get(path, accept=accept)
        expect_status(resp, 200, what=f"GET {path} (Accept {accept})")
        if not is_json_type(resp.headers.get("content-type", "")):
            raise Fail(f"Accept {accept} answered {resp.headers.get('content-type')}")
    return None


@check("http.not-acceptable", "http", MIME, severity=Severity.RECOMMENDED)
def not_acceptable(ctx: RunContext) -> str | None:
    """An Accept the server cannot serve is 406 with an OperationOutcome"""
    formats = [str(f).lower() for f in (ctx.capability or {}).get("format") or []]
    if any("xml" in f for f in formats):
        wanted = "application/x-conformance-unknown"
    else:
        wanted = "application/fhir+xml"
    path = _target(ctx)
    resp = ctx.http.get(path, accept=wanted)
    expect_status(resp, 406, what=f"GET {path} with Accept {wanted}")
    expect_outcome(resp)
    return None


@check("http.unsupported-media-type", "http", MIME, severity=Severity.RECOMMENDED)
def unsupported_media(ctx: RunContext) -> str | None:
    """A body of a type the server does not take is 415 with an OperationOutcome"""
    ctx.require_writes()
    rtype = "Basic" if ctx.supports("Basic", "create") else "Observation"
    if not ctx.supports(rtype, "create"):
        raise Skip("the server declares no create for Basic or Observation")
    resp = ctx.http.post(rtype, content=b"resourceType=Basic", headers={
        "Content-Type": "text/plain"})
    if resp.status_code in (200, 201):
        ctx.created_resource(resp, rtype)
        raise Fail(f"POST {rtype} with a text/plain body was accepted ({resp.status_code})")
    expect_status(resp, 415)
    expect_outcome(resp)
    return None


@check("http.errors-have-outcome", "http", f"{SPEC}/http.html#Status-Codes")
def errors_have_outcome(ctx: RunContext) -> str | None:
    """Error answers (unknown type, unknown id, bad parameter value) carry an
    OperationOutcome"""
    probes = [("GET", "NotAResourceType/1", {}),
              ("GET", "Patient/conformance-no-such-id-0", {}),
              ("GET", "Patient", {"birthdate": "not-a-date", "_count": "1"})]
    errors = 0
    for method, path, params in probes:
        resp = ctx.http.request(method, path, params=params or None)
        if resp.status_code >= 400:
            errors += 1
            expect_outcome(resp, f"{method} {path} ({resp.status_code})")
    if not errors:
        raise Fail("none of the error probes was answered with an error status")
    return f"{errors} errors, each with an OperationOutcome"


def _origin(ctx: RunContext) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(ctx.options.redirect_uri)
    return f"{parts.scheme}://{parts.netloc}"


@check("http.cors-discovery", "http",
       f"{SMART_SPEC}/app-launch.html#considerations-for-cross-origin-resource-sharing-cors")
def cors_discovery(ctx: RunContext) -> str | None:
    """Discovery (smart-configuration and metadata) answers CORS for an app's origin"""
    origin = _origin(ctx)
    resp = ctx.http.get(".well-known/smart-configuration", token=None, accept="application/json",
                        headers={"Origin": origin})
    if resp.status_code == 404:
        raise Skip("the server serves no .well-known/smart-configuration")
    for path in (".well-known/smart-configuration", "metadata"):
        resp = ctx.http.get(path, token=None, headers={"Origin": origin})
        allowed = resp.headers.get("access-control-allow-origin")
        if allowed not in (origin, "*"):
            raise Fail(f"GET {path} from Origin {origin}: Access-Control-Allow-Origin is "
                       f"{allowed or 'missing'}")
    pre = ctx.http.request("OPTIONS", "metadata", token=None, headers={
        "Origin": origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    if pre.headers.get("access-control-allow-origin") not in (origin, "*"):
        raise Fail(f"the CORS preflight for metadata from {origin} was not allowed "
                   f"({pre.status_code})")
    return f"origin {origin}"
