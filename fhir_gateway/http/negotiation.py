"""Content negotiation: JSON FHIR in and out, `_format`, 406 and 415, `_pretty`."""

from __future__ import annotations

from flask import Request, Response

from fhir_gateway.errors import NotAcceptable, UnsupportedMediaType
from mappings import frozen

FHIR_JSON = "application/fhir+json"
JSON = "application/json"
SERVED = (FHIR_JSON, JSON)
# "application/fhir json": an unencoded "+" in a query string arrives as a space.
_FORMAT_ALIASES = {"json": FHIR_JSON, FHIR_JSON: FHIR_JSON, "application/fhir json": FHIR_JSON,
                   JSON: JSON, "text/json": JSON}
_XML_LIKE = ("xml", "text/xml", "application/xml", "application/fhir+xml", "ttl",
             "application/fhir+turtle", "text/turtle", "html", "text/html")


_ACCEPTED: dict[str, str] = {}  # Accept header -> the JSON flavour chosen for it
# A read of a Binary that names no FHIR format is answered with the Binary's own bytes and
# content type (R4 binary.html: "the content should be returned using the native mime type").
NATIVE = "native"
_FHIR_FORMATS = frozenset((FHIR_JSON, JSON, "application/fhir+xml", "application/xml+fhir",
                           "application/json+fhir"))


def response_mimetype(request: Request, binary: bool = False) -> str:
    """The JSON flavour to answer with, or NotAcceptable for a format this server lacks; for
    the read of a Binary (`binary`) that names no FHIR format (no `_format`, no FHIR or JSON
    type in Accept, `*/*` included), NATIVE."""
    fmt = request.args.get("_format") if request.query_string else None
    if binary and fmt is None and not any(
            q > 0 and _media_type(value)[0] in _FHIR_FORMATS
            for value, q in request.accept_mimetypes):
        return NATIVE
    if fmt is not None:
        key = fmt.split(";")[0].strip().lower()
        if key in _FORMAT_ALIASES:
            return _FORMAT_ALIASES[key]
        raise NotAcceptable(
            f"_format={fmt} is not served; this server speaks application/fhir+json only",
            expression="_format")
    header = request.headers.get("Accept")
    if not header:
        return FHIR_JSON
    known = _ACCEPTED.get(header)
    if known is not None:
        return known
    accept = request.accept_mimetypes
    if not accept:
        return FHIR_JSON
    fhir, plain = _quality(accept, FHIR_JSON), _quality(accept, JSON)
    if fhir <= 0 and plain <= 0:
        raise NotAcceptable(
            f"Accept: {request.headers.get('Accept')} cannot be met; this server answers "
            "application/fhir+json or application/json (FHIR 4.0)", expression="Accept")
    chosen = FHIR_JSON if fhir >= plain else JSON
    if len(_ACCEPTED) < 256:  # clients send few distinct Accept headers; keep it bounded
        _ACCEPTED[header] = chosen
    return chosen


def _media_type(value: str) -> tuple[str, str]:
    """An Accept value's type (lower case) and its parameters: werkzeug keeps them together."""
    kind, _, params = value.lower().partition(";")
    return kind.strip(), params


def _quality(accept, offer: str) -> float:
    """How much the Accept header wants `offer`: the q of the most specific range that covers
    it (itself, then `type/*`, then `*/*`; RFC 9110 12.5.1: `application/json;q=0, */*` refuses
    JSON). Parameters do not stop a match, as they do in werkzeug's own matching
    (`application/fhir+json; fhirVersion=4.0`, R4 http.html's version parameter, would be 406
    there), except a `fhirVersion` other than 4.0: this server has no other."""
    ranges = (offer, offer.split("/")[0] + "/*", "*/*")
    best: tuple[int, float] = (-1, 0.0)  # (specificity, q)
    for value, q in accept:
        kind, params = _media_type(value)
        if kind not in ranges:
            continue
        version = next((v.strip() for k, _, v in (p.partition("=") for p in params.split(";"))
                        if k.strip() == "fhirversion"), None)
        if version is not None and not version.startswith("4.0"):
            continue
        best = max(best, (len(ranges) - ranges.index(kind), q))
    return best[1]


def check_body_type(request: Request, also: tuple[str, ...] = ()) -> None:
    """UnsupportedMediaType unless the body is FHIR JSON (or one of `also`)."""
    mimetype = (request.mimetype or "").lower()
    if mimetype in SERVED or mimetype in also:
        return
    shown = request.headers.get("Content-Type") or "no Content-Type"
    raise UnsupportedMediaType(
        f"Cannot read a body of type {shown}; send application/fhir+json",
        expression="Content-Type")


def render(resource: dict | None, status: int, mimetype: str, pretty: bool,
           headers: dict[str, str] | None = None, body: bytes | None = None) -> Response:
    """The response for a resource (None: no body), or for its JSON `body` written before."""
    if body is not None:
        resp = Response(body, status=status, content_type=f"{mimetype}; charset=utf-8")
    elif resource is None:
        resp = Response(b"", status=status, mimetype=mimetype)
    else:
        resp = Response(frozen.dumps(resource, pretty),
                        status=status, content_type=f"{mimetype}; charset=utf-8")
    if headers:
        resp.headers.update(headers)  # each replaces any header of its name
    return resp

