"""What the EHR client asks of a wire: `exchange(...) -> Answer`, without httpx's objects.

Building an `httpx.Request` and reading an `httpx.Response` cost more CPU than the bytes on
the wire (measured in the gateway process after the EHR's answer: about 0.3 ms of a 0.5 ms read
of one Patient went to httpx's objects around libcurl). The curl wire
(`adapters.fhir_rest.wire.CurlTransport`) speaks this directly; `HttpxWire` speaks it over any
httpx transport (httpx's own, or a test's `respx` mock), so both wires give the client the same
answer. Failures stay httpx's exceptions, which the client's retry code knows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import httpx


class Headers(dict):
    """An answer's headers by lower-case name, a repeated one joined with ", " (RFC 9110
    5.3); looked up in any case."""

    __slots__ = ()

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Headers:
        out = cls()
        for name, value in pairs:
            key = name.lower()
            old = dict.get(out, key)
            dict.__setitem__(out, key, value if old is None else f"{old}, {value}")
        return out

    def get(self, name: str, default=None):  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


@dataclass
class Answer:
    """What the EHR answered: status, headers, the body with any Content-Encoding undone, and
    how many body bytes arrived on the wire (to tell a cut-off answer)."""

    status: int
    headers: Headers
    body: bytes
    received: int


def decoded(answer: Answer) -> Answer:
    """The answer with its Content-Encoding undone by httpx's decoders (gzip, deflate, and
    whatever else httpx.Response decodes; an unknown coding is left as it is, as httpx does).
    Only an encoded answer pays for the `httpx.Response` this takes."""
    coding = answer.headers.get("Content-Encoding")
    if not coding or coding.strip().lower() == "identity":
        return answer
    body = httpx.Response(answer.status, headers=[("Content-Encoding", coding)],
                          content=answer.body).read()
    return Answer(answer.status, answer.headers, body, answer.received)


class Wire(Protocol):
    def exchange(self, method: str, url: str, headers: list[tuple[str, str]],
                 body: bytes | None, timeout: dict) -> Answer: ...

    def close(self) -> None: ...


class HttpxWire:
    """`exchange` over an `httpx.BaseTransport`: the request as `httpx.Client` would send it
    (the `timeout` extension included), the body read and decoded by `httpx.Response`."""

    def __init__(self, transport: httpx.BaseTransport) -> None:
        self.transport = transport

    def exchange(self, method: str, url: str, headers: list[tuple[str, str]],
                 body: bytes | None, timeout: dict) -> Answer:
        request = httpx.Request(method, url, headers=headers, content=body,
                                extensions={"timeout": timeout})
        response = self.transport.handle_request(request)
        response.request = request  # as httpx.Client does (HTTPTransport leaves it unset)
        try:
            raw = response.read()
        finally:
            response.close()
        return Answer(response.status_code, Headers.of(response.headers.multi_items()), raw,
                      response.num_bytes_downloaded)

    def close(self) -> None:
        self.transport.close()
