"""`fhir_gateway.http.binary`: a Binary's own bytes as an HTTP answer, kept inert whatever the
EHR stored (its content type and data are the EHR's words)."""

from __future__ import annotations

import base64

import pytest

from adapters.errors import UpstreamError
from fhir_gateway.http.binary import native_response, reads_binary


def binary(kind: object, data: object) -> dict:
    return {"resourceType": "Binary", "id": "b1", "contentType": kind, "data": data}


def test_a_content_type_that_is_not_a_media_type_is_served_as_octets_to_download():
    for kind in ("text/plain\r\nSet-Cookie: a=b", "text/plain\r\n;a=b", "text/plain\n; x",
                 "text/plain;a=1, text/html", "", None, 42, "pdf", "text/\x00plain"):
        resp = native_response(binary(kind, base64.b64encode(b"x").decode()), 200, {})
        assert resp.headers["Content-Type"] == "application/octet-stream", kind
        assert resp.headers["Content-Disposition"] == "attachment"
        assert "Set-Cookie" not in resp.headers and resp.get_data() == b"x"


def test_parameters_are_kept_and_inert_types_are_shown():
    resp = native_response(binary("text/plain; charset=utf-8",
                                  base64.b64encode("é".encode()).decode()), 200,
                           {"ETag": 'W/"2"'})
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "Content-Disposition" not in resp.headers and resp.headers["ETag"] == 'W/"2"'
    assert resp.get_data() == "é".encode()


def test_wrapped_base64_is_base64():
    """R4 base64Binary allows whitespace: an EHR that wraps its lines is not refused."""
    wrapped = base64.encodebytes(b"x" * 200).decode()  # 76-character lines
    assert "\n" in wrapped
    assert native_response(binary("image/png", wrapped), 200, {}).get_data() == b"x" * 200


def test_no_data_is_an_empty_body_and_bad_base64_is_the_ehrs_error():
    assert native_response(binary("image/png", None), 200, {}).get_data() == b""
    for data in ("not base64!", 7):
        with pytest.raises(UpstreamError, match="not base64"):
            native_response(binary("image/png", data), 200, {})


def test_only_reads_of_one_binary_are_answered_natively():
    assert reads_binary("read", "Binary") and reads_binary("vread", "Binary")
    assert not reads_binary("search-type", "Binary") and not reads_binary("read", "Patient")
