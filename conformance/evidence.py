"""Evidence: the HTTP exchanges that decided a check, with secrets masked.

Every request the runner makes is recorded as an `Exchange`; a check's result keeps the
exchanges made while it ran, so a reader of the report sees exactly what the server said.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

BODY_EXCERPT = 600
SECRET_HEADERS = {"authorization", "cookie", "set-cookie", "proxy-authorization"}
SECRET_JSON = re.compile(
    r'("(?:access_token|refresh_token|id_token|code_verifier|client_secret|password|'
    r'client_assertion)"\s*:\s*")([^"]+)')
SECRET_FORM = re.compile(
    r'((?:^|[?&])(?:access_token|refresh_token|id_token|code_verifier|client_secret|password|'
    r'client_assertion|token|code|pending)=)([^&\s"]+)')
BEARER = re.compile(r"(Bearer\s+)(\S+)", re.I)


def mask_value(value: str) -> str:
    """A secret shortened to its first 4 characters, so two tokens can still be told apart."""
    return value[:4] + "***" if len(value) > 8 else "***"


def mask_text(text: str) -> str:
    """Mask tokens, codes and passwords in a body, query string or header value."""
    text = BEARER.sub(lambda m: m.group(1) + mask_value(m.group(2)), text)
    text = SECRET_JSON.sub(_masked, text)
    return SECRET_FORM.sub(_masked, text)


def _masked(m: re.Match[str]) -> str:
    """Passwords vanish; tokens keep 4 characters so two of them can be told apart."""
    return m.group(1) + ("***" if "password" in m.group(1) else mask_value(m.group(2)))


def mask_headers(headers: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        if name.lower() in SECRET_HEADERS:
            out[name] = (BEARER.sub(lambda m: m.group(1) + mask_value(m.group(2)), value)
                         if value.lower().startswith("bearer") else "***")
        else:
            out[name] = mask_text(value)
    return out


def excerpt(body: bytes | str | None, limit: int = BODY_EXCERPT) -> str:
    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = mask_text(text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


@dataclass
class Exchange:
    """One request and its response (or the transport error that replaced it)."""

    method: str
    url: str
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: str = ""
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str = ""
    error: str = ""
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line: `GET url -> 200 application/fhir+json`."""
        if self.error:
            return f"{self.method} {self.url} -> {self.error}"
        ctype = self.response_headers.get("content-type", "")
        return f"{self.method} {self.url} -> {self.status} {ctype}".rstrip()
