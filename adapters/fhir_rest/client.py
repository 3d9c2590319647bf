"""One pooled HTTP client per EHR: timeouts, retries, circuit breaker, and strict reading of
what comes back (FHIR JSON of version R4, or a clear error naming what was wrong).

Answers of 500 and above, timeouts and refused connections become `UpstreamUnavailable` (the
EHR cannot take the request now: a write may be queued); a body that is not FHIR JSON becomes
`UpstreamError`. Client mistakes the EHR reports (4xx) keep their meaning.
"""

from __future__ import annotations

import re
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import orjson

from adapters.errors import (
    Conflict,
    FhirError,
    Gone,
    Invalid,
    NotFound,
    NotSupported,
    PreconditionFailed,
    Unprocessable,
    UpstreamError,
    UpstreamUnavailable,
    WrongFhirVersion,
    gateway_details,
)
from adapters.fhir_rest.auth import make_auth
from adapters.fhir_rest.outbound import Answer, Headers, HttpxWire, Wire
from adapters.fhir_rest.resilience import (
    RETRY_STATUSES,
    Backoff,
    CircuitBreaker,
    CircuitOpen,
    retry_after_seconds,
)
from adapters.fhir_rest.settings import TRANSPORTS, RestSettings

FHIR_JSON = "application/fhir+json"
JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
MAX_DIAGNOSTICS = 300
# The characters a request target may hold as it is (RFC 3986: unreserved, sub-delims, `:@/?`
# and `%`); a fragment (`#`) or anything else goes through httpx.URL
_PLAIN_TARGET = re.compile(r"[A-Za-z0-9\-._~:/?@!$&'()*+,;=%]*\Z")
ACCEPT_ENCODING = "gzip, deflate"  # decoded by httpx's decoders, whatever the wire
USER_AGENT = f"python-httpx/{httpx.__version__}"  # what the EHR saw from httpx.Client


@dataclass
class UpstreamResponse:
    status: int
    headers: Headers
    body: dict | None  # the FHIR JSON, None for an empty body
    raw: bytes
    url: str  # the EHR's address of the request (never shown to apps)


def make_transport(settings: RestSettings) -> httpx.BaseTransport:
    """The outbound wire `settings.transport` names: libcurl (default) or httpx's httpcore."""
    if settings.transport == "curl":
        from adapters.fhir_rest.wire import CurlTransport

        return CurlTransport(max_connections=settings.max_connections,
                             timeout=_timeout(settings), cainfo=settings.ca_file or None)
    if settings.transport == "httpx":
        verify = ssl.create_default_context(cafile=settings.ca_file) if settings.ca_file \
            else True
        return httpx.HTTPTransport(limits=httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections), retries=0, verify=verify)
    raise ValueError(f"unknown fhir_rest transport {settings.transport!r}; choose one of "
                     f"{', '.join(TRANSPORTS)}")


def _timeout(settings: RestSettings) -> httpx.Timeout:
    return httpx.Timeout(connect=settings.connect_timeout, read=settings.read_timeout,
                         write=settings.write_timeout, pool=settings.pool_timeout)


class UpstreamClient:
    """Requests go straight to a wire (no `httpx.Client` on the request path, nor its request
    and response objects: they cost more CPU than the wire). There is no cookie jar on
    purpose: the gateway never carries an EHR's cookies from one patient's request to
    another's."""

    def __init__(self, settings: RestSettings, transport: httpx.BaseTransport | None = None,
                 sleep=time.sleep) -> None:
        self.settings = settings
        self.base = settings.base_url.rstrip("/") + "/"
        self._base_url = httpx.URL(self.base)
        timeout = _timeout(settings)
        self._timeout = timeout.as_dict()  # the extension httpx.Client would set
        self._owns_transport = transport is None
        self.transport = transport or make_transport(settings)
        from adapters.fhir_rest.wire import CurlTransport

        self.wire: Wire = self.transport if isinstance(self.transport, CurlTransport) \
            else HttpxWire(self.transport)
        limits = httpx.Limits(max_connections=settings.max_connections,
                              max_keepalive_connections=settings.max_connections)
        # Token requests are rare: an httpx.Client (form bodies, .json()) over its own wire of
        # the same kind, or over the explicit transport a test gave.
        self._token_http = httpx.Client(
            timeout=timeout, limits=limits, follow_redirects=False,
            transport=transport or make_transport(settings))
        self.auth = make_auth(settings, self._token_http)
        self._headers = [("Accept", FHIR_JSON), ("Accept-Encoding", ACCEPT_ENCODING),
                         ("User-Agent", USER_AGENT)]
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset)
        self.backoff = Backoff(settings.backoff)
        self._sleep = sleep

    def close(self) -> None:
        if self._owns_transport:
            self.transport.close()
        self._token_http.close()

    def url(self, path: str, params: list[tuple[str, str]] | None = None) -> str:
        """`path` against the EHR's base with `params` in its query, as httpx.Client(base_url=
        ...) would join them. A relative path without a query (the common case) is joined as
        strings; a URL with anything else than RFC 3986's characters (a space, a quote, raw
        non-ASCII in an EHR's link) or a dot segment is written by httpx, percent-encoded and
        normalised."""
        if "://" not in path and not path.startswith("//") and "?" not in path:
            url = self.base + path.lstrip("/")
            if params:
                url = f"{url}?{urlencode(params)}"
        else:
            joined = httpx.URL(path)
            if joined.is_relative_url:
                joined = self._base_url.copy_with(
                    raw_path=self._base_url.raw_path + joined.raw_path.lstrip(b"/"))
            if params:
                joined = joined.copy_merge_params(params)
            url = str(joined)
        return url if _PLAIN_TARGET.match(url) and "/." not in url else str(httpx.URL(url))

    def _exchange(self, method: str, url: str, headers: list[tuple[str, str]],
                  content: bytes | None) -> Answer:
        """Send through the auth (which may answer a 401 with a renewed token and one more
        try); return the last answer."""
        renew = False
        while True:
            sent = headers if self.auth is None else \
                [*headers, ("Authorization", self.auth.authorization(renew=renew))]
            answer = self.wire.exchange(method, url, sent, content, self._timeout)
            if renew or answer.status != 401 or self.auth is None or not self.auth.renews:
                return answer
            renew = True

    # -- sending ---------------------------------------------------------------------------

    def send(self, method: str, path: str, *, params: list[tuple[str, str]] | None = None,
             body: dict | None = None, headers: dict[str, str] | None = None,
             idempotent: bool | None = None) -> UpstreamResponse:
        """Send one request, retrying idempotent ones on transient failures. Returns answers
        below 500 (4xx included: see `raise_for_status`); raises UpstreamUnavailable else."""
        # A PUT with If-Match is retried only when the EHR cannot have taken it (no connection,
        # 429, 503): after a lost answer its retry would meet its own new version (412), a
        # stored write taken for a conflict.
        unprocessed_only = idempotent is None and method == "PUT" and any(
            k.lower() == "if-match" for k in (headers or {}))
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
        attempts = 1 + (self.settings.retries if idempotent else 0)
        content = orjson.dumps(body) if body is not None else None
        given = {k.lower(): (k, v) for k, v in (headers or {}).items()}
        if content is not None:
            given["content-type"] = ("Content-Type", FHIR_JSON)
        hdrs = [h for h in self._headers if h[0].lower() not in given]
        hdrs += given.values()
        url = self.url(path, params)
        name = self.settings.name
        for attempt in range(attempts):
            last = attempt + 1 == attempts
            try:
                self.breaker.before()
            except CircuitOpen as exc:
                raise UpstreamUnavailable(
                    f"The EHR ({name}) is not answering; the gateway will try it again in "
                    f"{exc.retry_in:.0f} s", retry_after=exc.retry_in) from None
            try:
                resp = self._exchange(method, url, hdrs, content)
            except httpx.DecodingError:
                self.breaker.success()  # it answered, in an encoding that does not decode
                raise UpstreamError(f"The answer of the EHR ({name}) could not be decoded (its "
                                    "Content-Encoding does not match its body)") from None
            except (httpx.LocalProtocolError, httpx.UnsupportedProtocol):
                # The request itself cannot be sent (a header value with a line break, a URL
                # that is not http): the caller's mistake, not the EHR's; never retried, and
                # the circuit breaker does not count it.
                raise Invalid("The request to the EHR could not be sent: a header or the "
                              "address holds characters HTTP does not allow") from None
            except httpx.TransportError as exc:
                self.breaker.failure()
                kind = "timed out" if isinstance(exc, httpx.TimeoutException) else \
                    "could not be reached"
                if not last and not (unprocessed_only and not isinstance(exc, _NOT_SENT)):
                    self._sleep(self.backoff.delay(attempt))
                    continue
                raise UpstreamUnavailable(f"The EHR ({name}) {kind}") from None
            status = resp.status
            if status >= 500 or status == 429:
                wait = retry_after_seconds(resp.headers.get("Retry-After"))
                if status == 429:
                    self.breaker.success()  # rate limiting, but answering: not a failure
                else:
                    self.breaker.failure()
                if status in RETRY_STATUSES and not last and (
                        wait is None or wait <= self.settings.max_wait) and not (
                        unprocessed_only and status not in (429, 503)):
                    self._sleep(wait if wait is not None else self.backoff.delay(attempt))
                    continue
                what = "is rate limiting the gateway" if status == 429 else \
                    f"failed ({status})"
                raise UpstreamUnavailable(f"The EHR ({name}) {what}", retry_after=wait)
            self.breaker.success()
            expected = resp.headers.get("Content-Length", "")
            if (expected.isdigit() and resp.received < int(expected)
                    and method != "HEAD" and status not in (204, 304)):
                raise UpstreamError(f"The answer of the EHR ({name}) was cut off: "
                                    f"{resp.received} of {expected} bytes arrived")
            return UpstreamResponse(status, resp.headers, self._parse(resp, resp.body),
                                    resp.body, url)
        raise AssertionError("unreachable")

    def _parse(self, resp: Answer, raw: bytes) -> dict | None:
        if not raw.strip():
            return None
        ctype = resp.headers.get("Content-Type", "")
        mime, _, rest = ctype.partition(";")
        mime = mime.strip().lower()
        if mime not in JSON_TYPES:
            if resp.status >= 400:
                return None  # an HTML error page: the status alone speaks
            raise UpstreamError(f"The EHR answered {mime or 'without a content type'} "
                                "instead of FHIR JSON")
        version = _mime_param(rest, "fhirversion")
        if version and not version.startswith("4.0"):
            raise WrongFhirVersion(f"The EHR answered FHIR version {version}; this gateway "
                                "speaks R4 (4.0)")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError("The EHR's answer is not valid JSON (it may have been "
                                "cut off)") from None
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            raise UpstreamError("The EHR's answer is not a FHIR resource")
        return data


# Transport failures before the request could reach the EHR
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _mime_param(rest: str, name: str) -> str | None:
    for part in rest.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == name:
            return value.strip().strip('"')
    return None


def _hide_host(text: str, host: str) -> str:
    """The EHR's words without its address: apps never learn upstream hosts."""
    if not host:
        return text
    text = re.sub(rf"(?i)\b[a-z][a-z0-9+.-]*://{re.escape(host)}(:\d+)?", "", text)
    return re.sub(rf"(?i){re.escape(host)}(:\d+)?", "the EHR", text)


def upstream_issues(body: dict | None, host: str = "") -> tuple[str, list[dict]]:
    """The first diagnostic text and the issues of an EHR's OperationOutcome, shortened;
    `host` (the EHR's) is taken out of the texts."""
    if not body or body.get("resourceType") != "OperationOutcome":
        return "", []
    issues = []
    for item in body.get("issue") or []:
        if not isinstance(item, dict):
            continue
        text = item.get("diagnostics") or (item.get("details") or {}).get("text") or ""
        out = {"severity": item.get("severity") if item.get("severity") in
               ("fatal", "error", "warning", "information") else "error",
               "code": item.get("code") if isinstance(item.get("code"), str) else "processing",
               "diagnostics": f"EHR: {_hide_host(str(text), host)[:MAX_DIAGNOSTICS]}"}
        if isinstance(item.get("expression"), list):
            out["expression"] = [str(e)[:200] for e in item["expression"][:5]]
        issues.append(out)
    first = issues[0]["diagnostics"] if issues else ""
    return first, issues


ERRORS: dict[int, type[FhirError]] = {
    400: Invalid, 404: NotFound, 405: NotSupported, 409: Conflict, 410: Gone,
    412: PreconditionFailed, 422: Unprocessable,
}


def raise_for_status(resp: UpstreamResponse, what: str) -> None:
    """Turn a 4xx from the EHR into the matching typed error, with the EHR's own words."""
    if resp.status < 400:
        return
    first, issues = upstream_issues(resp.body, httpx.URL(resp.url).host)
    if resp.status in (401, 403):
        raise UpstreamError(f"The EHR refused the gateway's credentials for {what} "
                            f"({resp.status})")
    cls = ERRORS.get(resp.status, Invalid)
    text = f"The EHR refused {what} ({resp.status})" + (f": {first}" if first else "")
    raise cls(text, issues=issues[1:] if first else issues,
              details=gateway_details("ehr-refused", first))
