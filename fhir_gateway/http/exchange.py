"""One exchange with the FHIR API, from the first look at the request to its log line.

Flask's hooks and views (`fhir_gateway.app`, `fhir_gateway.http.rest`) and the fast path for
reads (`fhir_gateway.http.fastpath`) both go through these functions, so both authenticate,
check, shape, render, audit and log a request alike. They need a werkzeug request, not Flask's
request context.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from werkzeug import Request, Response

from adapters.base import Notice, collect_notices
from adapters.errors import FhirError
from fhir_gateway.access import Principal
from fhir_gateway.access.policy import owner, remember_patient_refs, sole_owner
from fhir_gateway.errors import Unauthorized, issue, operation_outcome, outcome_for, status_for
from fhir_gateway.http.binary import native_response, reads_binary
from fhir_gateway.http.negotiation import FHIR_JSON, NATIVE, render
from fhir_gateway.http.shaping import shape
from fhir_gateway.logsetup import log_later
from fhir_gateway.request import FhirRequest, FhirResponse, parse_etag, parse_prefer
from mappings import frozen
from smart_launch.access_token import TokenError
from smart_launch.scopes import parse_scopes

if TYPE_CHECKING:
    from fhir_gateway.app import Gateway

log = logging.getLogger("fhir_gateway.request")
OPERATION_HEADERS = ("idempotency-key",)
# Request ids: a random prefix per process and a counter (unique, and no system call each).
_ID_PREFIX = uuid.uuid4().hex[:8]
_ID_COUNTER = itertools.count(1)
# Interactions that change nothing read no conditional-write headers (If-Match, If-None-Exist);
# reads of one resource read no `Prefer` either (searches do: `handling=strict`).
_READ_ONLY = frozenset({"read", "vread", "search-type", "search-system", "history-instance",
                        "history-type", "capabilities"})
_NO_PREFER = frozenset({"read", "vread", "capabilities"})


@dataclass(eq=False)
class Exchange:
    """What one request carries from hook to hook: its id and start, the adapter's notices,
    the caller once authenticated, what it asked for and whose data it got (the access log)."""

    gateway: Gateway
    request: Request
    request_id: str
    started: float
    notices: list[Notice] = field(default_factory=list)
    principal: Principal | None = None
    access: tuple[str, str | None, str | None] | None = None  # (interaction, type, id)
    patient: str | None = None
    base: str | None = None


def begin(gateway: Gateway, req: Request) -> Exchange:
    """Start an exchange: request id (the caller's, up to 64 characters, or a new one), clock,
    notices; memoised patient references only while nothing changes a resource (reads)."""
    request_id = req.headers.get("X-Request-Id", "")[:64] or \
        f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"
    ex = Exchange(gateway, req, request_id, time.perf_counter(), collect_notices())
    remember_patient_refs(req.method in ("GET", "HEAD"))
    return ex


def authenticate(ex: Exchange) -> Principal | None:
    """The caller behind the bearer token; 401 when SMART is on and there is none that works.
    None when SMART is off (local experiments only)."""
    gateway = ex.gateway
    if gateway.smart is None or ex.principal is not None:
        return ex.principal
    header = ex.request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthorized("This FHIR server needs a SMART access token (Authorization: Bearer)",
                           error=None)
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be 'Bearer <access token>'",
                           error="invalid_request")
    try:
        verified = gateway.smart.verifier.verify(token.strip())
    except TokenError as exc:
        gateway.record("access", "denied", detail=str(exc), request_id=ex.request_id)
        raise Unauthorized(str(exc)) from None
    claims = verified.claims
    ex.principal = Principal.from_claims(claims, parse_scopes(claims.get("scope", "")))
    return ex.principal


def base_url(ex: Exchange) -> str:
    """The FHIR base answers name: the configured public one, else as the request reached us
    (scheme://host[:port]/script-root/fhir, as url_root gives it, without its IRI decoding)."""
    configured = ex.gateway.config.server.base_url
    if configured:
        return configured.rstrip("/")
    if ex.base is None:
        req = ex.request
        ex.base = f"{req.scheme}://{req.host}{req.script_root}/fhir"
    return ex.base


def fhir_request(ex: Exchange, interaction: str, rtype: str | None = None,
                 id: str | None = None, **extra) -> FhirRequest:
    """The service's view of the request; authenticates first (except for the
    CapabilityStatement) and notes what was asked for the access log."""
    who = authenticate(ex) if interaction != "capabilities" else None
    ex.access = (f"${extra.get('operation')}" if interaction == "operation" else interaction,
                 rtype, id)
    req = ex.request
    headers = req.headers
    writes = interaction not in _READ_ONLY
    return FhirRequest(
        interaction=interaction, resource_type=rtype, id=id, principal=who,
        params=list(req.args.items(multi=True)) if req.query_string else [],
        if_match=parse_etag(headers.get("If-Match")) if writes else None,
        if_none_exist=headers.get("If-None-Exist") if writes else None,
        prefer=parse_prefer(None if interaction in _NO_PREFER else headers.get("Prefer")),
        # Only operations read other headers; looking for them walks the whole WSGI environ.
        headers={name: value for name in OPERATION_HEADERS
                 if (value := headers.get(name)) is not None}
        if interaction == "operation" else {},
        **extra,
    )


def present(ex: Exchange, resp: FhirResponse, freq: FhirRequest, mimetype: str) -> Response:
    """Render a response, shaped by the request's `_summary` / `_elements` / `_pretty`, marked
    stale when it came from the gateway's copy."""
    resource = resp.resource
    if ex.gateway.audit is not None:  # whose data this was, for the access log
        ex.patient = resp.owner if resp.owner_known else _whose(resource)
    stale = [n for n in ex.notices if n.kind == "stale"]
    if reads_binary(freq.interaction, freq.resource_type):  # two forms, chosen by Accept
        resp.headers = dict(resp.headers, Vary="Accept")
        if mimetype == NATIVE and resource is not None \
                and resource.get("resourceType") == "Binary":  # no FHIR format: its bytes
            headers = _mark_stale(None, dict(resp.headers), stale)[1] if stale else resp.headers
            return native_response(resource, resp.status, headers)
    if mimetype == NATIVE:
        mimetype = FHIR_JSON
    pretty = freq.param("_pretty") == "true"
    if resp.rendered is not None and not stale:  # a kept answer: written once per format
        body = resp.rendered.get((mimetype, pretty))
        if body is None:
            body = resp.rendered[(mimetype, pretty)] = frozen.dumps(_shaped(resp, freq), pretty)
        return render(None, resp.status, mimetype, pretty, resp.headers, body=body)
    resource = _shaped(resp, freq)
    headers = resp.headers
    if stale and resp.status < 300:
        resource, headers = _mark_stale(resource, dict(headers), stale)
    return render(resource, resp.status, mimetype, pretty, headers)


def _shaped(resp: FhirResponse, freq: FhirRequest) -> dict | None:
    """The response's resource as `_summary` / `_elements` ask (when it may be shaped)."""
    resource = resp.resource
    if resp.shape and resource is not None:
        summary = freq.param("_summary")
        elements = freq.param("_elements")
        fields = [e.strip() for e in elements.split(",") if e.strip()] if elements else None
        if summary in ("true", "text", "data") or fields:
            resource = _shape_all(resource, summary, fields)
    return resource


def error_response(exc: FhirError) -> Response:
    """A FHIR error as its OperationOutcome, with the challenge of a 401 and the wait of a 429
    or 503 (`Retry-After`, whole seconds)."""
    resp = render(outcome_for(exc), status_for(exc), FHIR_JSON, False)
    if isinstance(exc, Unauthorized):
        resp.headers["WWW-Authenticate"] = exc.challenge
    wait = getattr(exc, "retry_after", None)
    if wait is not None:
        resp.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
    return resp


def internal_error(request_id: str | None) -> Response:
    """A 500 for an error nobody expected (logged here with its traceback): an OperationOutcome
    naming only the request id, which finds the traceback in the log."""
    log.exception("unhandled error request_id=%s", request_id)
    outcome = operation_outcome([issue("fatal", "exception",
                                       f"Internal error (request id {request_id})")])
    return render(outcome, 500, FHIR_JSON, False)


def end(ex: Exchange, resp: Response, rule: str) -> Response:
    """Close the exchange: the access log entry (FHIR requests, when SMART is on), the
    `X-Request-Id` header, and one log line: method, route, status, time, request id. Never
    the query string or body, which can carry PHI (names, birth dates)."""
    gateway, status = ex.gateway, resp.status_code
    if ex.access is not None and gateway.audit is not None:
        who = ex.principal
        interaction, rtype, rid = ex.access
        gateway.record(
            interaction, "allowed" if status < 400 else "denied",
            user=who.user if who else None,
            client_id=who.client_id if who else None,
            patient=ex.patient or (who.patient if who else None),
            resource_type=rtype, resource_id=rid, status=status, request_id=ex.request_id)
    resp.headers["X-Request-Id"] = ex.request_id
    elapsed = (time.perf_counter() - ex.started) * 1000
    log_later(log, "%s %s %s %.1fms id=%s", ex.request.method, rule, status, elapsed,
              ex.request_id)
    return resp


def _mark_stale(resource: dict | None, headers: dict[str, str],
                stale: list[Notice]) -> tuple[dict | None, dict[str, str]]:
    """An answer served from the gateway's copy while the EHR is down: `Age` says how old
    (seconds), `Warning: 110` that it is stale, and a Bundle carries an OperationOutcome."""
    age = int(max(n.age or 0 for n in stale))
    headers["Age"] = str(age)
    headers["Warning"] = '110 fhir-gateway "Response is Stale"'
    if resource is not None and resource.get("resourceType") == "Bundle":
        outcome = operation_outcome([issue("warning", "informational", n.text)
                                     for n in stale[:1]])
        entry = {"resource": outcome, "search": {"mode": "outcome"}}
        resource = dict(resource, entry=[*resource.get("entry", []), entry])
    return resource, headers


def _whose(resource: dict | None) -> str | None:
    """The one patient whose data a response carries (for the audit log), if there is one."""
    if not resource:
        return None
    if resource.get("resourceType") == "Bundle":
        return sole_owner(_whose(e["resource"]) for e in resource.get("entry", [])
                          if "resource" in e)
    return owner(resource)


def _shape_all(resource: dict, summary: str | None, fields: list[str] | None) -> dict:
    if resource.get("resourceType") != "Bundle":
        return shape(resource, summary, fields)
    entries = [
        dict(e, resource=shape(e["resource"], summary, fields))
        if e.get("search", {}).get("mode") == "match" else e
        for e in resource.get("entry", [])
    ]
    return dict(resource, entry=entries) if entries else resource
