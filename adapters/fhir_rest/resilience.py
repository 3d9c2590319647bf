"""Retries with jittered backoff and a circuit breaker, per EHR.

Only idempotent requests are retried (GET, PUT, DELETE, and POSTs the caller marks idempotent,
such as a conditional create or a search). A `Retry-After` longer than the configured wait is
not slept: the caller is told how long to wait instead.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 502, 503, 504})


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


@dataclass
class Backoff:
    base: float
    cap: float = 5.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0, min(self.cap, self.base * (2 ** attempt)))


class CircuitOpen(Exception):
    """The breaker is open: the EHR failed repeatedly and is being left alone for a while."""

    def __init__(self, retry_in: float) -> None:
        super().__init__(f"circuit open, next trial in {retry_in:.0f} s")
        self.retry_in = retry_in


class CircuitBreaker:
    """Closed -> open after `failures` consecutive failures; after `reset` seconds one trial
    request goes through (half-open): success closes, failure opens again. A trial whose outcome
    is never reported (an unexpected exception) stops blocking after another `reset` seconds."""

    def __init__(self, failures: int, reset: float, clock=time.monotonic) -> None:
        self.failures = failures
        self.reset = reset
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._opened_at: float | None = None
        self._trial_at: float | None = None  # when the running half-open trial started

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._clock() - self._opened_at >= self.reset:
                return "half-open"
            return "open"

    def before(self) -> None:
        """Raise CircuitOpen unless a request may go to the EHR now."""
        with self._lock:
            if self._opened_at is None:
                return
            now = self._clock()
            waited = now - self._opened_at
            if waited < self.reset:
                raise CircuitOpen(self.reset - waited)
            if self._trial_at is not None and now - self._trial_at < self.reset:
                raise CircuitOpen(self.reset - (now - self._trial_at))
            self._trial_at = now  # this request is the half-open trial

    def success(self) -> None:
        with self._lock:
            self._count = 0
            self._opened_at = None
            self._trial_at = None

    def failure(self) -> None:
        with self._lock:
            self._count += 1
            if self._trial_at is not None or self._count >= self.failures:
                self._opened_at = self._clock()
            self._trial_at = None
