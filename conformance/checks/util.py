"""Small helpers checks share: asserting statuses, OperationOutcomes and Bundles."""

from __future__ import annotations

from typing import Any

import httpx

from conformance.client import is_json_type, json_body
from conformance.model import Fail, Skip

NEEDS_TOKEN = "the server wants a token (401 without one): give --token or --smart-client"


def expect_status(resp: httpx.Response, *wanted: int, what: str = "") -> None:
    """Fail unless the status is one of `wanted`; a 401 to a request sent without a token is
    a skip (the run has no token), not a failure."""
    if resp.status_code == 401 and 401 not in wanted and \
            "authorization" not in resp.request.headers:
        raise Skip(NEEDS_TOKEN)
    if resp.status_code not in wanted:
        want = " or ".join(str(w) for w in wanted)
        raise Fail(f"{what or resp.request.method + ' ' + resp.request.url.path}: expected "
                   f"{want}, got {resp.status_code}")


def expect_resource(resp: httpx.Response, rtype: str, what: str = "") -> dict[str, Any]:
    """The response body as a resource of `rtype`, or a Fail saying what came instead."""
    body = json_body(resp)
    label = what or f"{resp.request.method} {resp.request.url.path}"
    if not isinstance(body, dict):
        raise Fail(f"{label}: the body is not JSON "
                   f"({resp.headers.get('content-type', 'no content type')})")
    if body.get("resourceType") != rtype:
        raise Fail(f"{label}: expected a {rtype}, got {body.get('resourceType')!r}")
    return body


def expect_outcome(resp: httpx.Response, what: str = "") -> dict[str, Any]:
    """An error response must carry an OperationOutcome with at least one issue."""
    label = what or f"{resp.request.method} {resp.request.url.path} ({resp.status_code})"
    if not is_json_type(resp.headers.get("content-type", "")):
        raise Fail(f"{label}: the error body is "
                   f"{resp.headers.get('content-type') or 'untyped'}, not an OperationOutcome")
    body = expect_resource(resp, "OperationOutcome", label)
    if not body.get("issue"):
        raise Fail(f"{label}: the OperationOutcome has no issue")
    return body


def bundle(resp: httpx.Response, what: str = "") -> dict[str, Any]:
    expect_status(resp, 200, what=what)
    body = expect_resource(resp, "Bundle", what)
    return body


def matches(body: dict[str, Any], rtype: str | None = None) -> list[dict[str, Any]]:
    """The resources a searchset Bundle returns as matches (not includes or outcomes)."""
    out = []
    for entry in body.get("entry") or []:
        res = entry.get("resource") or {}
        mode = (entry.get("search") or {}).get("mode", "match")
        if mode == "match" and (rtype is None or res.get("resourceType") == rtype):
            out.append(res)
    return out


def ids(resources: list[dict[str, Any]]) -> list[str]:
    return [f"{r.get('resourceType')}/{r.get('id')}" for r in resources]


def link(body: dict[str, Any], relation: str) -> str | None:
    for ln in body.get("link") or []:
        if ln.get("relation") == relation:
            return ln.get("url")
    return None


def outcome_mentions(body: dict[str, Any], word: str) -> bool:
    """Whether a Bundle's OperationOutcome entries say something about `word` (anything at
    all for an empty word)."""
    if not isinstance(body, dict):
        return False
    for entry in body.get("entry") or []:
        res = entry.get("resource") or {}
        if res.get("resourceType") == "OperationOutcome":
            if word in str(res.get("issue")):
                return True
    return False


def version_of(res: dict[str, Any]) -> str | None:
    return (res.get("meta") or {}).get("versionId")


def etag_version(etag: str | None) -> str | None:
    if not etag:
        return None
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')
