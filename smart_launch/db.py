"""The gateway's own state database (SQLAlchemy; SQLite file by default, PostgreSQL by URL).

Each module of `smart_launch` declares its tables on `metadata`; `create_all` makes them.
Secrets never land here in clear: codes and tokens are stored as SHA-256 hashes, client secrets
and passwords as argon2 hashes, TOTP secrets encrypted.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine

metadata = MetaData()


def make_state_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - driver hook
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL: no fsync per commit (a crash of the process loses
            # nothing; a power cut may lose the last commits, never corrupts the file).
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def digest(secret: str) -> str:
    """SHA-256 of a high-entropy secret (codes, tokens): safe to store and look up by."""
    return hashlib.sha256(secret.encode()).hexdigest()
