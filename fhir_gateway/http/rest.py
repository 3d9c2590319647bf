"""The FHIR R4 REST blueprint: HTTP in, `FhirRequest` to the service, FHIR JSON out."""

from __future__ import annotations

from flask import Blueprint, Request, Response, current_app, g, request

from fhir_gateway.access import Principal
from fhir_gateway.access.policy import patient_refs
from fhir_gateway.bundle_processing import process as process_bundle
from fhir_gateway.errors import (
    MethodNotAllowed,
    PayloadTooLarge,
    Unauthorized,
    issue,
    operation_outcome,
)
from fhir_gateway.http.negotiation import FHIR_JSON, check_body_type, render, response_mimetype
from fhir_gateway.http.shaping import shape
from fhir_gateway.request import FhirRequest, FhirResponse, parse_etag, parse_prefer
from fhir_gateway.service import FhirService
from fhir_gateway.validation import parse_json
from smart_launch.access_token import TokenError
from smart_launch.scopes import parse_scopes

bp = Blueprint("fhir", __name__)
FORM = "application/x-www-form-urlencoded"
OPERATION_HEADERS = ("idempotency-key",)


def _service() -> FhirService:
    return current_app.extensions["fhir_gateway"].service


def base_url() -> str:
    configured = current_app.extensions["fhir_gateway"].config.server.base_url
    if configured:
        return configured.rstrip("/")
    ctx = g._get_current_object()
    base = getattr(ctx, "fhir_base", None)
    if base is None:
        # scheme://host[:port]/script-root, as url_root gives it, without its IRI decoding
        req = request._get_current_object()
        base = ctx.fhir_base = f"{req.scheme}://{req.host}{req.script_root}/fhir"
    return base


def _body(req: Request) -> dict:
    check_body_type(req)
    limits = _service().limits
    data = req.get_data(cache=False)
    # A chunked body has no Content-Length for Flask to refuse up front; Flask's limit is set
    # one byte above ours, so a body cut at the limit shows here.
    if len(data) > limits.max_body_bytes:
        raise PayloadTooLarge(f"The body is larger than {limits.max_body_bytes} bytes")
    return parse_json(data, limits.max_json_depth)


def principal() -> Principal | None:
    """The caller behind the bearer token; 401 when SMART is on and there is none that works.
    None when SMART is off (local experiments only)."""
    gateway = current_app.extensions["fhir_gateway"]
    if gateway.smart is None:
        return None
    ctx = g._get_current_object()
    known = getattr(ctx, "fhir_principal", None)
    if known is not None:
        return known
    header = request.headers.get("Authorization", "")
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
        gateway.record("access", "denied", detail=str(exc))
        raise Unauthorized(str(exc)) from None
    claims = verified.claims
    ctx.fhir_principal = Principal.from_claims(claims, parse_scopes(claims.get("scope", "")))
    return ctx.fhir_principal


# Interactions that change nothing read no conditional-write headers (If-Match, If-None-Exist);
# reads of one resource read no `Prefer` either (searches do: `handling=strict`).
_READ_ONLY = frozenset({"read", "vread", "search-type", "search-system", "history-instance",
                        "history-type", "capabilities"})
_NO_PREFER = frozenset({"read", "vread", "capabilities"})


def _fhir_request(interaction: str, rtype: str | None = None, id: str | None = None,
                  **extra) -> FhirRequest:
    who = principal() if interaction != "capabilities" else None
    req = request._get_current_object()
    g._get_current_object().fhir_access = (
        f"${extra.get('operation')}" if interaction == "operation" else interaction, rtype, id)
    headers = req.headers
    writes = interaction not in _READ_ONLY
    return FhirRequest(
        interaction=interaction, resource_type=rtype, id=id, principal=who,
        params=list(req.args.items(multi=True)) if req.query_string else [],
        if_match=parse_etag(headers.get("If-Match")) if writes else None,
        if_none_exist=headers.get("If-None-Exist") if writes else None,
        prefer=parse_prefer(None if interaction in _NO_PREFER else headers.get("Prefer")),
        # Only operations read other headers.
        headers={name: value for name in OPERATION_HEADERS
                 if (value := headers.get(name)) is not None}
        if interaction == "operation" else {},
        **extra,
    )


def _respond(freq: FhirRequest) -> Response:
    mimetype = response_mimetype(request)
    resp = _service().handle(freq, base_url())
    return finish(resp, freq, mimetype)


def finish(resp: FhirResponse, freq: FhirRequest, mimetype: str) -> Response:
    """Render a response, shaped by the request's `_summary` / `_elements` / `_pretty`."""
    resource = resp.resource
    if current_app.extensions["fhir_gateway"].audit is not None:
        g.fhir_patient = _whose(resource)  # whose data this was, for the access log
    if resp.shape and resource is not None:
        summary = freq.param("_summary")
        elements = freq.param("_elements")
        fields = [e.strip() for e in elements.split(",") if e.strip()] if elements else None
        if summary in ("true", "text", "data") or fields:
            resource = _shape_all(resource, summary, fields)
    pretty = freq.param("_pretty") == "true"
    headers = resp.headers
    stale = [n for n in g.get("adapter_notices") or () if n.kind == "stale"]
    if stale and resp.status < 300:
        resource, headers = _mark_stale(resource, dict(headers), stale)
    return render(resource, resp.status, mimetype, pretty, headers)


def _mark_stale(resource: dict | None, headers: dict[str, str],
                stale: list) -> tuple[dict | None, dict[str, str]]:
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
        found = {_whose(e["resource"]) for e in resource.get("entry", []) if "resource" in e}
        found.discard(None)
        return found.pop() if len(found) == 1 else None
    if resource.get("resourceType") == "Patient":
        return resource.get("id")
    refs = patient_refs(resource)
    return next(iter(refs)) if len(refs) == 1 else None


def _shape_all(resource: dict, summary: str | None, fields: list[str] | None) -> dict:
    if resource.get("resourceType") != "Bundle":
        return shape(resource, summary, fields)
    entries = [
        dict(e, resource=shape(e["resource"], summary, fields))
        if e.get("search", {}).get("mode") == "match" else e
        for e in resource.get("entry", [])
    ]
    return dict(resource, entry=entries) if entries else resource


@bp.get("/metadata")
def metadata() -> Response:
    return _respond(_fhir_request("capabilities"))


@bp.post("/")
@bp.post("")
def bundle() -> Response:
    mimetype = response_mimetype(request)
    who = principal()
    g.fhir_access = ("bundle", None, None)
    body = _body(request)
    result = process_bundle(_service(), body, base_url(),
                            parse_prefer(request.headers.get("Prefer")), who)
    return render(result, 200, mimetype, request.args.get("_pretty") == "true")


@bp.route("/<rtype>", methods=["GET", "POST"])
def type_level(rtype: str) -> Response:
    if request.method == "GET":
        return _respond(_fhir_request("search-type", rtype))
    response_mimetype(request)
    return _respond(_fhir_request("create", rtype, body=_body(request)))


@bp.post("/<rtype>/_search")
def search_post(rtype: str) -> Response:
    check_body_type(request, also=(FORM,))
    freq = _fhir_request("search-type", rtype)
    if request.mimetype == FORM:
        freq.params += list(request.form.items(multi=True))
    return _respond(freq)


@bp.route("/<rtype>/$<op>", methods=["GET", "POST"])
def type_operation(rtype: str, op: str) -> Response:
    return _operation(rtype, None, op)


@bp.route("/<rtype>/<id>/$<op>", methods=["GET", "POST"])
def instance_operation(rtype: str, id: str, op: str) -> Response:
    return _operation(rtype, id, op)


def _operation(rtype: str, id: str | None, op: str) -> Response:
    spec = _service().operations.get(rtype, op)
    if request.method == "GET" and spec.affects_state:
        raise MethodNotAllowed(f"${op} changes data, so it takes POST, not GET",
                               expression=f"{rtype}.${op}")
    body = _body(request) if request.method == "POST" and request.content_length else None
    freq = _fhir_request("operation", rtype, id, operation=op, body=body)
    if spec.produces is None:
        return _respond(freq)
    resp = _service().handle(freq, base_url())  # a page, not FHIR: no JSON negotiation
    if resp.body is None:
        return finish(resp, freq, FHIR_JSON)
    return Response(resp.body, status=resp.status, mimetype=resp.mimetype,
                    headers=resp.headers)


@bp.get("/OperationDefinition/<definition_id>")
def operation_definition(definition_id: str) -> Response:
    spec = _service().operations.by_definition_id(definition_id)
    if spec is None:
        return _respond(_fhir_request("read", "OperationDefinition", definition_id))
    return render(spec.definition(base_url()), 200, response_mimetype(request),
                  request.args.get("_pretty") == "true")


@bp.route("/<rtype>/<id>", methods=["GET", "PUT", "DELETE", "PATCH", "POST"])
def instance(rtype: str, id: str) -> Response:
    if request.method == "GET":
        return _respond(_fhir_request("read", rtype, id))
    if request.method == "PUT":
        response_mimetype(request)
        return _respond(_fhir_request("update", rtype, id, body=_body(request)))
    if request.method == "DELETE":
        return _respond(_fhir_request("delete", rtype, id))
    raise MethodNotAllowed(f"{request.method} is not supported on {rtype}/{id}")


@bp.get("/<rtype>/<id>/_history")
def history(rtype: str, id: str) -> Response:
    return _respond(_fhir_request("history-instance", rtype, id))


@bp.get("/<rtype>/<id>/_history/<vid>")
def vread(rtype: str, id: str, vid: str) -> Response:
    return _respond(_fhir_request("vread", rtype, id, version_id=vid))
