"""A counter that every access-token revocation moves, shared by the processes of one machine.

Checking a token's revocation state in the database on every request cost more than the rest
of a cached read. Instead, each process remembers the tokens it found live together with the
counter's value seen before it asked; it asks the database again only once the counter has
moved. A revocation commits first and moves the counter after, so a request that starts after
a revocation returned sees it.

The counter lives in a small file beside a SQLite state database, mapped into memory by every
process that opens that database (reading it costs no system call). A state database on a
server (PostgreSQL) may be shared by several machines, which no file reaches: there
`RevocationEpoch.shared_with` gives None and the database is asked on every request.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import threading
from pathlib import Path

from sqlalchemy.engine import Engine

_SIZE = 8


class RevocationEpoch:
    """An 8-byte counter in a file, mapped into memory; `bump` under an exclusive file lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)  # zeros; two processes doing it at once agree
            self._map = mmap.mmap(fd, _SIZE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._lock = threading.Lock()

    @classmethod
    def shared_with(cls, engine: Engine) -> RevocationEpoch | None:
        """The epoch of the state database behind `engine`, or None where no local file can
        be shared by every process that uses it (a database server)."""
        if engine.dialect.name != "sqlite":
            return None
        database = engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return cls(Path(database).with_name(Path(database).name + "-revocations"))

    def read(self) -> int:
        return int.from_bytes(self._map[:_SIZE], "little")

    def bump(self) -> None:
        """Move the counter (after the revocation committed)."""
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._map[:_SIZE] = ((self.read() + 1) % (1 << 63)).to_bytes(_SIZE, "little")
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
