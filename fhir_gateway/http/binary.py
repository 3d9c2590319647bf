"""A Binary read in its own format: the bytes and content type it holds, not FHIR JSON.

R4 (binary.html, "Binary resources behave slightly differently"): a read of a Binary that does
not ask for a FHIR format is answered with the content in its native mime type; so a document
viewer can fetch a DocumentReference's `attachment.url` as it is. The bytes come from the EHR
and may be anything (HTML with scripts, too), served from the origin that also holds the
sign-in pages: they never run or render there. Every answer says `nosniff`, a sandboxing
Content-Security-Policy and `no-store`, and types outside a short list of inert ones are
downloads (`Content-Disposition: attachment`). Both forms of a Binary read say `Vary: Accept`.
"""

from __future__ import annotations

import base64
import binascii
import re

from werkzeug import Response

from adapters.errors import UpstreamError
from fhir_gateway.access.policy import CONTEXT_READS

OCTETS = "application/octet-stream"
# Shown in the browser (a PDF viewer, an image, plain text); anything else is downloaded.
INLINE = frozenset(("application/pdf", "image/png", "image/jpeg", "image/gif", "text/plain"))
# type/subtype and parameters, without control characters (a header value must not break)
# (no comma either: a list of types is read as its last one by browsers, not its first)
_MIME = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+([ \t]*;[ -+\--~]*)?\Z")
SANDBOX = "sandbox; default-src 'none'"


def reads_binary(interaction: str, rtype: str | None) -> bool:
    """The request reads one Binary (read or vread, as a patient's may): it may be answered
    natively."""
    return rtype == "Binary" and interaction in CONTEXT_READS


def native_response(binary: dict, status: int, headers: dict[str, str]) -> Response:
    """The Binary's `data` as bytes, with its `contentType` (octet-stream when it has none or
    one that is not a media type), and the headers that keep it inert."""
    kind = binary.get("contentType")
    kind = kind.strip() if isinstance(kind, str) and _MIME.match(kind.strip()) else OCTETS
    data = binary.get("data") or ""
    try:  # base64Binary may wrap its lines (R4: whitespace is allowed)
        body = base64.b64decode("".join(data.split()), validate=True) \
            if isinstance(data, str) else None
    except (binascii.Error, ValueError):
        body = None
    if body is None:
        raise UpstreamError(f"Binary/{binary.get('id')} holds data that is not base64")
    resp = Response(body, status=status, content_type=kind)
    resp.headers.update(headers)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = SANDBOX
    resp.headers["Cache-Control"] = "private, no-store"  # a record's bytes: no disk cache
    if kind.split(";")[0].strip().lower() not in INLINE:
        resp.headers["Content-Disposition"] = "attachment"
    return resp
