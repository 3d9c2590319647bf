"""The outbound wire over libcurl (pycurl): `CurlTransport`.

The bytes go through libcurl. The client speaks to it with `exchange` (plain strings and bytes,
see `adapters.fhir_rest.outbound`); it is also an `httpx.BaseTransport` (`handle_request`), for
httpx clients such as the token requests of backend-services auth. One outbound GET costs about
a quarter of the CPU of `httpx.Client.get` (measured: 80 us against 517 us per call on the
development machine), and a pass-through's CPU is mostly that call.

Each pooled `pycurl.Curl` handle keeps its own keep-alive connection between requests. Curl
follows no redirects and decodes no Content-Encoding: httpx's decoders do, as on httpx's own
wire (an encoding they do not know is left as it is; a body that does not match its encoding is
an `httpx.DecodingError`). Curl's errors become the httpx exceptions the retry and circuit-breaker
code above already knows. Their messages are curl's words and may name the host: they are for
logs, never for apps.
"""

from __future__ import annotations

import math
import re
import threading
import time

import certifi
import httpx
import pycurl

from adapters.fhir_rest.outbound import Answer, Headers, decoded

DEFAULT_TIMEOUT = httpx.Timeout(connect=3.0, read=20.0, write=20.0, pool=5.0)

# Headers curl writes itself from the body it is given (a streamed request is read whole).
_CURL_OWNS = frozenset((b"content-length", b"transfer-encoding"))
_NOT_IDEMPOTENT = frozenset(("POST", "PATCH"))
_HTTP_ONLY = pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # a header name (RFC 9110 token)

_CONNECT_ERRORS = frozenset((
    5,   # COULDNT_RESOLVE_PROXY
    6,   # COULDNT_RESOLVE_HOST
    7,   # COULDNT_CONNECT
    35,  # SSL_CONNECT_ERROR (TLS handshake)
    51,  # PEER_FAILED_VERIFICATION (older libcurl)
    53, 54,  # SSL_ENGINE_NOTFOUND, SSL_ENGINE_SETFAILED
    58, 59,  # SSL_CERTPROBLEM, SSL_CIPHER
    60,  # PEER_FAILED_VERIFICATION / SSL_CACERT
    64, 66,  # USE_SSL_FAILED, SSL_ENGINE_INITFAILED
    77,  # SSL_CACERT_BADFILE
    82, 83,  # SSL_CRL_BADFILE, SSL_ISSUER_ERROR
    90, 91,  # SSL_PINNEDPUBKEYNOTMATCH, SSL_INVALIDCERTSTATUS
    97, 98,  # PROXY, SSL_CLIENTCERT
))
_PROTOCOL_ERRORS = frozenset((
    8,   # WEIRD_SERVER_REPLY
    16,  # HTTP2
    18,  # PARTIAL_FILE (fewer body bytes than Content-Length, or a cut chunked body)
    52,  # GOT_NOTHING (closed without answering)
    92,  # HTTP2_STREAM
    95,  # HTTP3
))
_BAD_URL = frozenset((1, 3))  # UNSUPPORTED_PROTOCOL, URL_MALFORMAT
_TIMEOUT = 28  # OPERATION_TIMEDOUT
_SEND_ERROR = 55
_RECV_ERROR = 56


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class CurlTransport(httpx.BaseTransport):
    """A thread-safe pool of at most `max_connections` curl handles, each with its connection.

    Timeouts come from `request.extensions["timeout"]` (httpx's convention: the dict of
    `httpx.Timeout.as_dict()`), else from `timeout`: `connect` bounds the connection
    (`CONNECTTIMEOUT_MS`), `connect + write + read` the whole request (`TIMEOUT_MS`), and
    `read` a stall (`LOW_SPEED_TIME`: less than one byte a second for that long); `pool` is
    the longest wait for a free handle (then `httpx.PoolTimeout`). `None` means no limit.
    """

    def __init__(self, *, max_connections: int = 32, timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                 verify: bool = True, cainfo: str | None = None) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max = max_connections
        self._timeout = timeout.as_dict()
        self._verify = verify
        self._cainfo = cainfo or certifi.where()
        self._free: list[pycurl.Curl] = []
        self._made = 0
        self._lock = threading.Condition(threading.Lock())
        self._closed = False

    # -- the pool ---------------------------------------------------------------------------

    def _acquire(self, wait: float | None, request: httpx.Request | None) -> pycurl.Curl:
        deadline = None if wait is None else time.monotonic() + wait
        with self._lock:
            while True:
                if self._closed:
                    raise RuntimeError("the transport is closed")
                if self._free:
                    return self._free.pop()
                if self._made < self._max:
                    self._made += 1
                    break
                if deadline is None:
                    self._lock.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise httpx.PoolTimeout("no free connection to the EHR in time",
                                            request=request)
                self._lock.wait(left)
        try:
            return self._new_handle()
        except BaseException:
            with self._lock:
                self._made -= 1
                self._lock.notify()
            raise

    def _release(self, handle: pycurl.Curl) -> None:
        with self._lock:
            if self._closed:
                self._made -= 1
                handle.close()
            else:
                # Options and callbacks only (the connection stays): an idle handle must not
                # keep the last answer's body or the request's Authorization header alive.
                handle.reset()
                self._free.append(handle)
            self._lock.notify()

    def _new_handle(self) -> pycurl.Curl:
        return pycurl.Curl()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for handle in self._free:
                handle.close()
            self._made -= len(self._free)
            self._free.clear()
            self._lock.notify_all()

    # -- one request ------------------------------------------------------------------------

    def _setup(self, c: pycurl.Curl, method: str, url: str, lines: list[bytes],
               body: bytes | None, timeout: dict) -> tuple[list, list]:
        # A handle is new, or was reset when it came back to the pool (`_release`): options
        # only, curl keeps the live connection, DNS and TLS session caches.
        c.setopt(pycurl.URL, url)
        c.setopt(pycurl.PROTOCOLS, _HTTP_ONLY)  # never file://, ftp:// ... (libcurl has them)
        c.setopt(pycurl.NOSIGNAL, 1)
        c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        c.setopt(pycurl.HTTP_CONTENT_DECODING, 0)  # httpx's decoders undo Content-Encoding
        if url.startswith("https:"):
            c.setopt(pycurl.CAINFO, self._cainfo)
            if not self._verify:
                c.setopt(pycurl.SSL_VERIFYPEER, 0)
                c.setopt(pycurl.SSL_VERIFYHOST, 0)
        connect, read, write = timeout.get("connect"), timeout.get("read"), timeout.get("write")
        if connect is not None:
            c.setopt(pycurl.CONNECTTIMEOUT_MS, _ms(connect))
        if connect is not None and read is not None and write is not None:
            c.setopt(pycurl.TIMEOUT_MS, _ms(connect + write + read))
        if read is not None:
            c.setopt(pycurl.LOW_SPEED_LIMIT, 1)
            c.setopt(pycurl.LOW_SPEED_TIME, max(1, math.ceil(read)))

        if method == "HEAD":
            c.setopt(pycurl.NOBODY, 1)
        elif body or method in ("POST", "PUT", "PATCH"):
            body = body or b""
            c.setopt(pycurl.POSTFIELDSIZE, len(body))
            c.setopt(pycurl.POSTFIELDS, body)
            if method != "POST":
                c.setopt(pycurl.CUSTOMREQUEST, method)
        elif method != "GET":
            c.setopt(pycurl.CUSTOMREQUEST, method)
        if method in _NOT_IDEMPOTENT:
            # Curl sends a request once more on a fresh connection when a reused one dies
            # before the first byte of the answer; the EHR may have acted on the first. A new
            # connection for writes that must not happen twice.
            c.setopt(pycurl.FRESH_CONNECT, 1)
        c.setopt(pycurl.HTTPHEADER, lines)

        chunks: list[bytes] = []
        head: list[bytes] = []
        c.setopt(pycurl.WRITEFUNCTION, chunks.append)
        c.setopt(pycurl.HEADERFUNCTION, head.append)
        return chunks, head

    def _transfer(self, method: str, url: str, lines: list[bytes], body: bytes | None,
                  timeout: dict, request: httpx.Request | None
                  ) -> tuple[int, list[bytes], list[bytes], int]:
        """Status, header lines, body chunks and body bytes received, of one request."""
        scheme = url.partition(":")[0].lower()
        if scheme not in ("http", "https") or "://" not in url:
            raise httpx.UnsupportedProtocol(f"{scheme!r} is not HTTP", request=request)
        handle = self._acquire(timeout.get("pool"), request)
        try:
            chunks, head = self._setup(handle, method, url, lines, body, timeout)
            try:
                handle.perform()
            except pycurl.error as exc:
                raise _as_httpx(handle, exc, scheme, request) from None
            status = handle.getinfo(pycurl.RESPONSE_CODE)
            received = handle.getinfo(pycurl.SIZE_DOWNLOAD_T)
        finally:
            self._release(handle)
        return status, head, chunks, received

    def exchange(self, method: str, url: str, headers: list[tuple[str, str]],
                 body: bytes | None, timeout: dict | None = None) -> Answer:
        """One request without httpx's objects (see `adapters.fhir_rest.outbound`); a body
        with a Content-Encoding is decoded by httpx's own decoders, as on its wire."""
        pairs = []
        for name, value in headers:
            try:
                pairs.append((name.encode("ascii"), value.encode("utf-8")))
            except UnicodeEncodeError:
                raise httpx.LocalProtocolError("a request header name is not ASCII") from None
        lines = _header_lines(pairs, None, "user-agent" not in {n.lower() for n, _ in headers})
        status, head, chunks, received = self._transfer(
            method, url, lines, body, timeout or self._timeout, None)
        answer = Answer(status, Headers.of(_last_head(head)[2]), b"".join(chunks), received)
        return decoded(answer)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        lines = _header_lines(request.headers.raw, request, "user-agent" not in request.headers)
        status, head, chunks, _ = self._transfer(
            request.method, str(request.url), lines, request.read(),
            request.extensions.get("timeout") or self._timeout, request)
        version, reason, headers = _last_head(head)
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(b"".join(chunks)),
                              request=request, extensions={"http_version": version.encode(),
                                                           "reason_phrase": reason.encode()})


def _header_lines(pairs, request: httpx.Request | None, no_agent: bool) -> list[bytes]:
    """Curl's header lines for (name, value) byte pairs; a header curl writes itself is left
    out, and one that is not valid HTTP refused (curl would send it as it is: a header
    injected into the EHR's request; h11, httpx's own wire, refuses it the same way)."""
    lines = []
    for key, value in pairs:
        if key.lower() in _CURL_OWNS:
            continue
        if b"\r" in value or b"\n" in value or b"\0" in value or not _TOKEN.match(key):
            raise httpx.LocalProtocolError("a request header is not valid HTTP",
                                           request=request)
        # "Name;" is curl's way to send a header with an empty value ("Name:" drops one).
        lines.append(key + b": " + value if value else key + b";")
    lines.append(b"Expect:")  # no 100-continue round trip before a body
    if no_agent:
        lines.append(b"User-Agent:")  # not pycurl's own, which names every library version
    return lines


def _last_head(lines: list[bytes]) -> tuple[str, str, list[tuple[str, str]]]:
    """Status line parts and headers, as text, of the last response block curl reported (an
    interim `100 Continue` block comes before the real one). The block is decoded once: as
    UTF-8 when it is, else as Latin-1 (as httpx reads header bytes)."""
    start = -1
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(b"HTTP/"):
            start = i
            break
    if start < 0:
        return "HTTP/1.1", "", []
    block = b"".join(lines[start:])
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = block.decode("latin-1")
    status, *rest = text.split("\n")  # not splitlines(): a value may hold other separators
    version, _, tail = status.rstrip("\r\n").partition(" ")
    headers: list[tuple[str, str]] = []
    for line in rest:
        line = line.rstrip("\r\n")
        if not line:
            continue
        if line[0] in " \t" and headers:  # an obsolete folded continuation
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return version, tail.partition(" ")[2], headers


def _as_httpx(handle: pycurl.Curl, exc: pycurl.error, scheme: str,
              request: httpx.Request | None) -> httpx.HTTPError:
    code = exc.args[0] if exc.args else 0
    text = f"curl error {code}: {exc.args[1] if len(exc.args) > 1 else ''}"
    try:
        # Connected: over a reused connection (no new one made), or the TCP connect (and the
        # TLS handshake for https) finished. PRETRANSFER_TIME is no sign: curl stamps it on
        # failures too.
        handshake = pycurl.APPCONNECT_TIME if scheme == "https" else \
            pycurl.CONNECT_TIME
        connected = handle.getinfo(pycurl.NUM_CONNECTS) == 0 or handle.getinfo(handshake) > 0
    except pycurl.error:
        connected = False
    if code in _CONNECT_ERRORS:
        cls = httpx.ConnectError
    elif code == _TIMEOUT:
        cls = httpx.ReadTimeout if connected else httpx.ConnectTimeout
    elif code in _PROTOCOL_ERRORS:
        cls = httpx.RemoteProtocolError
    elif code == _SEND_ERROR:
        cls = httpx.WriteError
    elif code == _RECV_ERROR:
        cls = httpx.ReadError
    elif code in _BAD_URL:
        cls = httpx.UnsupportedProtocol
    else:
        cls = httpx.ReadError if connected else httpx.ConnectError
    return cls(text, request=request)
