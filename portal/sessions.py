"""Server-side sessions: the browser's cookie holds only a random id, the tokens stay here.

Flask's own session is a signed (not encrypted) cookie, so it must never carry an access
token. It carries an opaque `sid`; this store maps the sid to the SMART client state
(tokens, PKCE verifier, OAuth state) and to the two clocks the portal enforces: signed out
after `idle` seconds without a request, and after `absolute` seconds whatever happens.

In-process and in memory: one portal process, and a restart signs everyone out (which is
the safe failure). Several processes would need a shared store behind the same interface.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class PortalSession:
    """One browser's sign-in: the fhirclient state and the portal's own bits."""

    created: float
    seen: float
    fhir_state: dict | None = None
    signed_in: bool = False
    data: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


class SessionStore:
    """Sessions keyed by a random id, with idle and absolute expiry checked on every read.
    At most `limit` are kept: past that the least recently used goes first, so a flood of
    started-but-unfinished sign-ins cannot exhaust memory."""

    def __init__(self, idle: int, absolute: int, clock: Callable[[], float] = time.monotonic,
                 limit: int = 10_000):
        self.idle, self.absolute, self._clock, self.limit = idle, absolute, clock, limit
        self._items: dict[str, PortalSession] = {}
        self._lock = threading.Lock()

    def create(self) -> tuple[str, PortalSession]:
        """A new session under a fresh unguessable id."""
        now = self._clock()
        sid = secrets.token_urlsafe(32)
        entry = PortalSession(created=now, seen=now)
        with self._lock:
            self._sweep(now)
            while len(self._items) >= self.limit:
                del self._items[min(self._items, key=lambda s: self._items[s].seen)]
            self._items[sid] = entry
        return sid, entry

    def get(self, sid: str | None) -> tuple[PortalSession | None, PortalSession | None]:
        """(live session, expired session) for `sid`; an expired one is removed here, and
        returned so the caller can revoke its token."""
        if not sid:
            return None, None
        now = self._clock()
        with self._lock:
            entry = self._items.get(sid)
            if entry is None:
                return None, None
            if self._expired(entry, now):
                del self._items[sid]
                return None, entry
            entry.seen = now
            return entry, None

    def drop(self, sid: str | None) -> PortalSession | None:
        """Forget a session (sign out); returns it so its token can be revoked."""
        with self._lock:
            return self._items.pop(sid, None) if sid else None

    def _expired(self, entry: PortalSession, now: float) -> bool:
        return now - entry.seen > self.idle or now - entry.created > self.absolute

    def _sweep(self, now: float) -> None:
        for sid in [s for s, e in self._items.items() if self._expired(e, now)]:
            del self._items[sid]
