"""The read-through cache of EHR answers: in process (cachetools) or shared (Redis).

An entry keeps the raw JSON, the EHR's ETag and when it was stored. It is fresh for the type's
TTL; after that it is revalidated with `If-None-Match`, and while the EHR is down it is served
stale for up to `stale_for` seconds with a warning. Searches carry per-type generations in their
keys, so any write through the gateway makes every earlier search of that type unreachable. A
read is stored only if no write changed its type since the read was sent (`put_unless_written`):
an answer the EHR gave before a write can never be stored after the write dropped the copy.
Access checks never depend on the cache: the gateway checks every answer, hit or miss.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from cachetools import TTLCache


def now() -> float:
    """The cache's clock (wall time: entries may be shared between processes)."""
    return time.time()


@dataclass
class Entry:
    raw: bytes
    etag: str | None
    stored_at: float

    def age(self) -> float:
        return max(0.0, now() - self.stored_at)

    def pack(self) -> bytes:
        return f"{self.etag or ''}\n{self.stored_at!r}\n".encode() + self.raw

    @classmethod
    def unpack(cls, data: bytes) -> Entry:
        etag, stored, raw = data.split(b"\n", 2)
        return cls(raw, etag.decode() or None, float(stored))


class Backend(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes, ttl: int) -> None: ...
    def set_if(self, key: str, value: bytes, ttl: int, counter: str, expected: int) -> bool: ...
    def delete(self, key: str) -> None: ...
    def incr(self, key: str) -> int: ...
    def counter(self, key: str) -> int: ...


class MemoryBackend:
    """cachetools in process; a lock because cachetools is not thread-safe."""

    def __init__(self, maxsize: int, ttl: int) -> None:
        self._data: TTLCache = TTLCache(maxsize=maxsize, ttl=ttl)
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def set(self, key: str, value: bytes, ttl: int) -> None:
        with self._lock:
            self._data[key] = value

    def set_if(self, key: str, value: bytes, ttl: int, counter: str, expected: int) -> bool:
        with self._lock:
            if self._counters.get(counter, 0) != expected:
                return False
            self._data[key] = value
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def incr(self, key: str) -> int:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + 1
            return self._counters[key]

    def counter(self, key: str) -> int:
        with self._lock:
            return self._counters.get(key, 0)


# Set KEYS[1] only while the counter KEYS[2] still holds ARGV[3] (absent counts as 0), in one
# step: no write's INCR can come between the check and the SET.
_SET_IF = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class RedisBackend:
    """Shared by every gateway process; entries expire on their own (EX)."""

    def __init__(self, url: str) -> None:
        import redis

        self._r = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._set_if = self._r.register_script(_SET_IF)

    def get(self, key: str) -> bytes | None:
        return self._r.get(key)

    def set(self, key: str, value: bytes, ttl: int) -> None:
        self._r.set(key, value, ex=max(1, ttl))

    def set_if(self, key: str, value: bytes, ttl: int, counter: str, expected: int) -> bool:
        return bool(self._set_if(keys=[key, counter], args=[value, max(1, ttl), expected]))

    def delete(self, key: str) -> None:
        self._r.delete(key)

    def incr(self, key: str) -> int:
        return int(self._r.incr(key))

    def counter(self, key: str) -> int:
        value = self._r.get(key)
        return int(value) if value else 0


class ResponseCache:
    """Keys are namespaced per EHR; a failing shared cache degrades to no cache, never to an
    error (the EHR is the source of truth). What a write must change in the cache (drop its
    read, bump its type's generation) is never lost to an outage: it is kept and done before the
    cache is used again, and until then the cache answers nothing."""

    def __init__(self, backend: Backend, namespace: str, keep_for: int) -> None:
        self.backend = backend
        self.ns = "fhirgw:" + hashlib.sha256(namespace.encode()).hexdigest()[:12] + ":"
        self.keep_for = keep_for
        self.errors = 0
        # ("drop" | "bump", key) that the shared cache could not take yet
        self._unrecorded: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def _done(self, kind: str, key: str) -> bool:
        call = self.backend.delete if kind == "drop" else self.backend.incr
        if self._safe(call, key, default=False) is False:
            with self._lock:
                self._unrecorded.add((kind, key))
            return False
        return True

    def settled(self) -> bool:
        """Every earlier write's drop and bump reached the cache (those missed are done now);
        False while one still cannot be."""
        if not self._unrecorded:
            return True
        with self._lock:
            missed = list(self._unrecorded)
        for item in missed:  # taken off only once done: other threads wait for it too
            if not self._done(*item):
                return False
            with self._lock:
                self._unrecorded.discard(item)
        return True

    def _safe(self, fn, *args, default=None):
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - a cache outage must not fail requests
            self.errors += 1
            return default

    def get(self, key: str) -> Entry | None:
        if not self.settled():
            return None
        data = self._safe(self.backend.get, self.ns + key)
        return Entry.unpack(data) if data else None

    def put(self, key: str, raw: bytes, etag: str | None) -> Entry | None:
        """Store an answer; the entry, or None when the shared cache could not take it."""
        entry = Entry(raw, etag, now())
        stored = self._safe(self._set, self.ns + key, entry.pack(), default=False)
        return entry if stored else None

    def _set(self, key: str, value: bytes) -> bool:
        self.backend.set(key, value, self.keep_for)
        return True

    def put_unless_written(self, key: str, raw: bytes, etag: str | None, rtype: str,
                           generation: int | None) -> Entry | None:
        """`put`, but only while `rtype`'s generation is still `generation` (read before the
        EHR was asked): else, or when that is unknown (None), nothing is stored. Writes bump
        the generation before they drop the copy (`FhirRestAdapter._invalidate`), so an
        answer older than a write is either refused here or dropped after it."""
        if generation is None or not self.settled():
            return None
        entry = Entry(raw, etag, now())
        stored = self._safe(self.backend.set_if, self.ns + key, entry.pack(), self.keep_for,
                            f"{self.ns}gen:{rtype}", generation, default=False)
        return entry if stored else None

    def drop(self, key: str) -> None:
        self._done("drop", self.ns + key)

    def generation(self, rtype: str) -> int | None:
        """How many writes through the gateway changed this type; None when the shared cache
        cannot say (then nothing may be kept on the strength of it)."""
        if not self.settled():
            return None
        return self._safe(self.backend.counter, f"{self.ns}gen:{rtype}", default=None)

    def bump(self, rtype: str) -> None:
        self._done("bump", f"{self.ns}gen:{rtype}")


def make_cache(redis_url: str, namespace: str, keep_for: int,
               maxsize: int = 20_000) -> ResponseCache:
    backend: Backend = RedisBackend(redis_url) if redis_url else MemoryBackend(maxsize, keep_for)
    return ResponseCache(backend, namespace, keep_for)
