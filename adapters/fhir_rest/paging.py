"""Sealed paging links: the EHR's `next` link becomes an encrypted cursor.

Apps never see upstream addresses, hosts or tokens a server may put in its links. A link that
leaves the EHR's own base (another host, another path) is refused, never followed. The same link
is sealed into the same cursor while it is remembered (Fernet's random IV would make a new one
each time, and the gateway's own cursor signature over it would be computed anew too).
"""

from __future__ import annotations

import base64
import hashlib
import threading
from urllib.parse import unquote, urlsplit

from cachetools import LRUCache
from cryptography.fernet import Fernet, InvalidToken

from adapters.errors import Invalid


class LinkSealer:
    def __init__(self, key: bytes, base: str) -> None:
        digest = hashlib.sha256(b"fhir-rest paging\0" + key).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self.base = base.rstrip("/") + "/"
        self._sealed: LRUCache = LRUCache(maxsize=4096)
        self._lock = threading.Lock()

    def relative(self, link: str) -> str | None:
        """The link relative to the EHR's base, or None when it points anywhere else: another
        origin, a path outside the base, or one that would leave it once resolved (`..`, `//`,
        an absolute URL after the base). The base itself followed by a query is kept (HAPI's
        `base?_getpages=...` links)."""
        if not isinstance(link, str):
            return None
        try:
            parts, base = urlsplit(link), urlsplit(self.base)
        except ValueError:
            return None
        if (parts.scheme or parts.netloc) and (parts.scheme.lower(), parts.netloc.lower()) != (
                base.scheme.lower(), base.netloc.lower()):
            return None
        if not parts.netloc and not parts.path.startswith("/"):
            return None  # relative to some other document, or an opaque URI
        if parts.path == base.path.rstrip("/"):
            rest = ""
        elif parts.path.startswith(base.path):
            rest = parts.path[len(base.path):]
        else:
            return None
        segments = rest.split("/")
        if rest.startswith("/") or "//" in rest or ":" in segments[0] or any(
                unquote(s) in (".", "..") for s in segments):
            return None
        return rest + (f"?{parts.query}" if parts.query else "")

    def seal(self, relative: str) -> str:
        # Remembered by the link's digest: the links themselves (queries may name a patient,
        # or hold an EHR's session token) are kept only encrypted.
        key = hashlib.sha256(relative.encode()).digest()
        with self._lock:
            token = self._sealed.get(key)
        if token is None:
            token = self._fernet.encrypt(relative.encode()).decode()
            with self._lock:
                self._sealed[key] = token
        return token

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError):
            raise Invalid("The paging cursor is not valid", expression="_cursor") from None
