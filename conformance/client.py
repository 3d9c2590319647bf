"""The runner's only way to the server: an httpx client that records every exchange.

A check never calls httpx itself; it calls `Http.request` (or `get`/`post`/...), which
records an `Exchange` into the current check's evidence and hands every FHIR resource in the
response to the validity collector.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

import httpx

from conformance.evidence import Exchange, excerpt, mask_headers, mask_text

FHIR_JSON = "application/fhir+json"


def json_body(resp: httpx.Response) -> Any:
    """The response's JSON, or None when it is not JSON."""
    try:
        return json.loads(resp.content)
    except (ValueError, UnicodeDecodeError):
        return None


def is_json_type(content_type: str) -> bool:
    ctype = content_type.split(";")[0].strip().lower()
    return ctype in ("application/fhir+json", "application/json", "application/json+fhir")


class Http:
    """A recording HTTP client for one FHIR base (absolute URLs pass through)."""

    def __init__(self, base: str, *, token: str | None = None, timeout: float = 30.0,
                 client: httpx.Client | None = None) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.client = client or httpx.Client(timeout=timeout, follow_redirects=False)
        self.sink: list[Exchange] = []
        self.on_response: Callable[[httpx.Response, Exchange], None] | None = None
        self.last: Exchange | None = None
        self.count = 0
        self.secrets: set[str] = set()  # literal values (passwords) never to be recorded

    def redact(self, text: str) -> str:
        """`text` with every known secret, plain or form-encoded, replaced by ***."""
        from urllib.parse import quote, quote_plus

        for secret in self.secrets:
            for form in {secret, quote_plus(secret), quote(secret)}:
                text = text.replace(form, "***")
        return text

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return urljoin(self.base + "/", path.lstrip("/"))

    def request(self, method: str, path: str, *, params: Any = None,
                headers: dict[str, str] | None = None, json_data: Any = None,
                content: bytes | str | None = None, data: Any = None,
                token: str | None | bool = True, accept: str | None = FHIR_JSON,
                auth: tuple[str, str] | None = None) -> httpx.Response:
        """Send one request; `token=True` uses the run's token, a string another one,
        None/False none at all. Transport errors propagate after being recorded."""
        hdrs: dict[str, str] = {}
        if accept:
            hdrs["Accept"] = accept
        bearer = self.token if token is True else (token or None)
        if bearer:
            hdrs["Authorization"] = f"Bearer {bearer}"
        if json_data is not None:
            content = json.dumps(json_data)
            hdrs["Content-Type"] = FHIR_JSON
        if auth:
            hdrs.update(_basic(auth))
        hdrs.update(headers or {})
        req = self.client.build_request(method, self.url(path), params=params, headers=hdrs,
                                        content=content, data=data)
        body = req.content if req.method not in ("GET", "HEAD", "DELETE") else b""
        ex = Exchange(method=req.method, url=self.redact(mask_text(str(req.url))),
                      request_headers=mask_headers({k: v for k, v in req.headers.items()
                                                    if k.lower() not in _BORING}),
                      request_body=self.redact(excerpt(body, 400)))
        self.count += 1
        self.last = ex
        self.sink.append(ex)
        started = time.perf_counter()
        try:
            resp = self.client.send(req)
            resp.read()
        except httpx.HTTPError as exc:
            ex.error = f"{type(exc).__name__}: {exc}"
            ex.elapsed_ms = (time.perf_counter() - started) * 1000
            raise
        ex.elapsed_ms = (time.perf_counter() - started) * 1000
        ex.status = resp.status_code
        ex.response_headers = mask_headers({k.lower(): v for k, v in resp.headers.items()})
        ex.response_body = self.redact(excerpt(resp.content))
        if self.on_response is not None:
            self.on_response(resp, ex)
        return resp

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    def close(self) -> None:
        self.client.close()


_BORING = {"host", "accept-encoding", "connection", "user-agent", "content-length"}


def _basic(auth: tuple[str, str]) -> dict[str, str]:
    import base64

    raw = f"{auth[0]}:{auth[1]}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
