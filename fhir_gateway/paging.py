"""Signed paging cursors: an adapter's cursor wrapped so a client can neither forge nor move it.

The signature covers the adapter cursor and a digest of the search it belongs to (type, every
parameter but `_cursor`, and the caller's access decision), so a cursor pasted onto another
search, edited, or used by a caller confined differently (another patient) is a 400. (An EHR's
cursor may carry the narrowing of the search that made it: the REST adapter's is the EHR's own
next link.)
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from pathlib import Path

from cachetools import LRUCache
from itsdangerous import BadSignature, URLSafeSerializer

from adapters.errors import Invalid


def load_or_create_key(path: Path) -> bytes:
    """A 32-byte secret kept in `path` (mode 0600), made on first use."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists():
        return path.read_bytes()
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def search_digest(resource_type: str, params: list[tuple[str, str]],
                  access: tuple | None = None) -> str:
    """The search a cursor belongs to: type, parameters, and the caller's `access` (an
    `AccessDecision.identity()`, None for a caller the gateway does not confine)."""
    canon = "&".join(f"{k}={v}" for k, v in sorted(params) if k != "_cursor")
    return hashlib.sha256(f"{resource_type}?{canon}#{access!r}".encode()).hexdigest()[:16]


class CursorSigner:
    def __init__(self, key: bytes) -> None:
        self._s = URLSafeSerializer(key, salt="fhir-gateway.cursor")
        # Signing is deterministic (no timestamp), and a cached search page carries the same
        # cursor every time it is served: sign each (cursor, search) once.
        self._signed: LRUCache = LRUCache(maxsize=4096)
        self._lock = threading.Lock()

    def sign(self, cursor: str, digest: str) -> str:
        key = (cursor, digest)
        with self._lock:
            token = self._signed.get(key)
        if token is None:
            token = self._s.dumps([cursor, digest])
            with self._lock:
                self._signed[key] = token
        return token

    def verify(self, token: str, digest: str) -> str:
        try:
            cursor, bound = self._s.loads(token)
        except (BadSignature, ValueError, TypeError):
            raise Invalid("The paging cursor is not valid (it was changed or not issued here)",
                          expression="_cursor") from None
        if bound != digest:
            raise Invalid("The paging cursor belongs to a different search",
                          expression="_cursor")
        return cursor
