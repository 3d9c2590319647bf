"""The FHIR R4 REST blueprint: HTTP in, `FhirRequest` to the service, FHIR JSON out."""

from __future__ import annotations

from flask import Blueprint, Request, Response, current_app, g, request

from fhir_gateway.access import Principal
from fhir_gateway.bundle_processing import process as process_bundle
from fhir_gateway.errors import MethodNotAllowed, PayloadTooLarge
from fhir_gateway.http import exchange
from fhir_gateway.http.binary import reads_binary
from fhir_gateway.http.exchange import Exchange
from fhir_gateway.http.negotiation import FHIR_JSON, check_body_type, render, response_mimetype
from fhir_gateway.request import FhirRequest, FhirResponse, parse_prefer
from fhir_gateway.service import FhirService
from fhir_gateway.validation import parse_json

bp = Blueprint("fhir", __name__)
FORM = "application/x-www-form-urlencoded"


def _service() -> FhirService:
    return current_app.extensions["fhir_gateway"].service


def _exchange() -> Exchange:
    return g.exchange  # begun by the app's first hook (fhir_gateway.app)


def base_url() -> str:
    return exchange.base_url(_exchange())


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
    """The caller behind the bearer token (see `exchange.authenticate`)."""
    return exchange.authenticate(_exchange())


def _fhir_request(interaction: str, rtype: str | None = None, id: str | None = None,
                  **extra) -> FhirRequest:
    return exchange.fhir_request(_exchange(), interaction, rtype, id, **extra)


def _respond(freq: FhirRequest) -> Response:
    mimetype = response_mimetype(request, reads_binary(freq.interaction, freq.resource_type))
    resp = _service().handle(freq, base_url())
    return finish(resp, freq, mimetype)


def finish(resp: FhirResponse, freq: FhirRequest, mimetype: str) -> Response:
    return exchange.present(_exchange(), resp, freq, mimetype)


@bp.get("/metadata")
def metadata() -> Response:
    return _respond(_fhir_request("capabilities"))


@bp.post("/")
@bp.post("")
def bundle() -> Response:
    mimetype = response_mimetype(request)
    who = principal()
    _exchange().access = ("bundle", None, None)
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
