"""Reading and acting on the patient's record over HTTP, with the patient's own token.

JSON in, JSON out: the portal shows a few elements of each resource, so it needs no models.
Only resource types, ids and status codes are logged, never content.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import httpx

log = logging.getLogger("portal.fhir")
FHIR_JSON = "application/fhir+json"
MAX_PAGES = 10
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: What the server answers for a resource this patient may not see: it looks missing.
HIDDEN = (403, 404, 410)


def valid_id(value: str | None) -> bool:
    """Is `value` a FHIR resource id (the only thing portal URLs carry)?"""
    return bool(value) and _FHIR_ID.fullmatch(value) is not None


#: The gateway's issue details codes (`urn:fhir-gateway:issue`): "held-back" means the change
#: was not sent at all (earlier ones still wait), so trying again later cannot double it.
GATEWAY_ISSUE = "urn:fhir-gateway:issue"


def gateway_codes(issue: dict) -> frozenset[str]:
    """The gateway's codes in an OperationOutcome issue's details."""
    return frozenset(c.get("code") for c in (issue.get("details") or {}).get("coding") or []
                     if c.get("system") == GATEWAY_ISSUE)


class GatewayError(Exception):
    """The FHIR server refused or failed; `status`, the OperationOutcome's first text, its
    expression and the gateway's codes for it."""

    def __init__(self, status: int, text: str, expression: str = "",
                 codes: frozenset[str] = frozenset()) -> None:
        super().__init__(f"{status}: {text}")
        self.status, self.text, self.expression = status, text, expression
        self.codes = codes


def _outcome(resp: httpx.Response) -> tuple[str, str, frozenset[str]]:
    try:
        body = resp.json()
    except ValueError:
        return resp.reason_phrase, "", frozenset()
    issue = (body.get("issue") or [{}])[0] if isinstance(body, dict) else {}
    if not isinstance(issue, dict):
        issue = {}
    text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
    return (text or resp.reason_phrase, ",".join(issue.get("expression") or []),
            gateway_codes(issue))


class SessionEnded(Exception):
    """The server no longer accepts this session's token and it could not be refreshed."""


class FhirApi:
    """A FHIR R4 REST client bound to one base URL and one bearer token.

    On a 401 it asks `renew(failed_token)` once for a new token (a refresh) and repeats the
    request; when there is none it raises SessionEnded.
    """

    def __init__(self, base: str, token: str, timeout: float = 20,
                 renew: Callable[[str], str | None] | None = None) -> None:
        self.base = base.rstrip("/") + "/"
        self._renew = renew
        self._http = httpx.Client(base_url=self.base, timeout=timeout, headers={
            "Authorization": f"Bearer {token}", "Accept": FHIR_JSON})

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, url: str, **kw) -> httpx.Response:
        resp = self._http.request(method, url, **kw)
        if resp.status_code != 401:
            return resp
        failed = self._http.headers["Authorization"].removeprefix("Bearer ")
        token = self._renew(failed) if self._renew else None
        if not token:
            raise SessionEnded()
        self._http.headers["Authorization"] = f"Bearer {token}"
        resp = self._http.request(method, url, **kw)
        if resp.status_code == 401:
            raise SessionEnded()
        return resp

    def _check(self, resp: httpx.Response, what: str) -> dict:
        log.info("fhir %s %s", what, resp.status_code)
        if resp.status_code >= 400:
            raise GatewayError(resp.status_code, *_outcome(resp))
        return resp.json() if resp.content else {}

    def read(self, rtype: str, rid: str) -> dict:
        """One resource."""
        return self._check(self._send("GET", f"{rtype}/{rid}"), f"read {rtype}")

    def read_or_none(self, rtype: str, rid: str) -> dict | None:
        """One resource, or None when the id is not one or the patient may not see it."""
        if not valid_id(rid):
            return None
        try:
            return self.read(rtype, rid)
        except GatewayError as exc:
            if exc.status in HIDDEN:
                return None
            raise

    def search(self, rtype: str, params: dict | list) -> list[dict]:
        """Every match of a search (following `next` links, at most MAX_PAGES pages)."""
        bundle = self._check(self._send("GET", rtype, params=params), f"search {rtype}")
        return self._collect(bundle, f"search {rtype}")

    def get_operation(self, path: str, params: dict | None = None) -> dict:
        """An operation called with GET (no side effects), e.g. `Communication/$unread`."""
        resp = self._send("GET", path, params=params or {})
        return self._check(resp, f"op {path.split('/')[-1]}")

    def bundle_entries(self, path: str, params: dict | None = None) -> list[dict]:
        """The resources of a Bundle-returning GET operation, all pages."""
        return self._collect(self.get_operation(path, params), path)

    def outbox(self) -> list[dict]:
        """The patient's writes the gateway keeps for the EHR (`GET _outbox`: a Task each, the
        newest 200); none where the gateway keeps no outbox (its EHR is its own store)."""
        resp = self._send("GET", "_outbox")
        if resp.status_code == 404:
            log.info("fhir outbox 404")
            return []
        bundle = self._check(resp, "outbox")
        return [e["resource"] for e in bundle.get("entry") or [] if "resource" in e]

    def post_operation(self, path: str, parameters: list[dict],
                       headers: dict[str, str] | None = None) -> tuple[int, dict]:
        """An operation called with POST and a Parameters body: (status, resource).
        `headers` adds request headers (e.g. `$pay`'s Idempotency-Key); they are never logged."""
        resp = self._send("POST", path, json={"resourceType": "Parameters",
                                           "parameter": parameters},
                               headers={"Content-Type": FHIR_JSON, **(headers or {})})
        body = self._check(resp, f"op {path.split('/')[-1]}")
        return resp.status_code, body

    def _collect(self, bundle: dict, what: str) -> list[dict]:
        out: list[dict] = []
        for _ in range(MAX_PAGES):
            out += [e["resource"] for e in bundle.get("entry") or [] if "resource" in e]
            nxt = next((link["url"] for link in bundle.get("link") or []
                        if link.get("relation") == "next"), None)
            if not nxt:
                break
            bundle = self._check(self._send("GET", nxt), what)
        return out
