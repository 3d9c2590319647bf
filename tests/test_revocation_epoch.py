"""Token revocation seen at once by every process, though live tokens are not looked up in the
database on every request (smart_launch.revocation_epoch).

A second `Records` on the same state database stands for another gateway process (it maps the
same epoch file); one test revokes from a real second process.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from smart_launch.db import make_state_engine, metadata
from smart_launch.records import Records
from smart_launch.revocation_epoch import RevocationEpoch
from tests.conftest import ROOT, make_pg_database

KINDS = ["sqlite", "postgres"]


def _issue(records: Records, jti: str, *, family: str = "fam-1", client_id: str = "app",
           patient: str = "pat-0001") -> None:
    records.record_access_token(jti, family=family, client_id=client_id, username="ann",
                                patient=patient, scope="patient/*.rs",
                                expires_at=time.time() + 3600)


@pytest.fixture(params=KINDS)
def state_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.sqlite3'}"
        return
    url, drop = make_pg_database(request.getfixturevalue("pg_server"))
    yield url
    drop()


def _two_processes(url: str) -> tuple[Records, Records, list]:
    engines = [make_state_engine(url), make_state_engine(url)]
    metadata.create_all(engines[0])
    return Records(engines[0]), Records(engines[1]), engines


@pytest.mark.parametrize("how", ["token", "family", "client-for-patient"])
def test_every_revocation_is_seen_by_the_other_process(state_url, how):
    mine, other, engines = _two_processes(state_url)
    try:
        _issue(mine, "jti-1")
        _issue(mine, "jti-2", family="fam-2", client_id="other-app")
        for _ in range(3):  # found live, and remembered as such
            assert mine.access_token_state("jti-1") == (True, False)
        if how == "token":
            other.revoke_access_token("jti-1")
        elif how == "family":
            other.revoke_family("fam-1")
        else:
            assert other.revoke_client_for_patient("app", "pat-0001") == 1
        assert mine.access_token_state("jti-1") == (True, True)
        assert mine.access_token_state("jti-2") == (True, False)  # untouched
        assert mine.access_token_state("unknown") == (False, False)
    finally:
        for engine in engines:
            engine.dispose()


def test_live_tokens_are_not_looked_up_again_until_a_revocation(tmp_path):
    """The point of the epoch: on SQLite a live token costs no query per request, yet the first
    request after any revocation asks again."""
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    mine, other, engines = _two_processes(url)
    queries: list[str] = []
    try:
        _issue(mine, "jti-1")
        lookup = mine._lookup_token_state

        def counted(jti):
            queries.append(jti)
            return lookup(jti)

        mine._lookup_token_state = counted
        for _ in range(5):
            assert mine.access_token_state("jti-1") == (True, False)
        assert queries == ["jti-1"]
        other.revoke_access_token("some-other-token")  # any revocation moves the epoch
        assert mine.access_token_state("jti-1") == (True, False)
        assert queries == ["jti-1", "jti-1"]
        # A token the database does not know is never remembered.
        mine.access_token_state("nope")
        mine.access_token_state("nope")
        assert queries.count("nope") == 2
    finally:
        for engine in engines:
            engine.dispose()


def test_a_revocation_from_another_os_process_is_seen(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    mine, _, engines = _two_processes(url)
    try:
        _issue(mine, "jti-1")
        assert mine.access_token_state("jti-1") == (True, False)
        script = ("import sys; from smart_launch.db import make_state_engine; "
                  "from smart_launch.records import Records; "
                  "Records(make_state_engine(sys.argv[1])).revoke_access_token('jti-1')")
        subprocess.run([sys.executable, "-c", script, url], cwd=ROOT, check=True, timeout=60)
        assert mine.access_token_state("jti-1") == (True, True)
    finally:
        for engine in engines:
            engine.dispose()


def test_no_shared_epoch_where_no_file_reaches_every_process(tmp_path, pg_server):
    """A database server may be shared by several machines: there the database is asked on
    every request (the revocation tests above run on PostgreSQL that way)."""
    url, drop = make_pg_database(pg_server)
    engine = make_state_engine(url)
    try:
        assert RevocationEpoch.shared_with(engine) is None
    finally:
        engine.dispose()
        drop()
    memory = make_state_engine("sqlite://")
    assert RevocationEpoch.shared_with(memory) is None
    sqlite = make_state_engine(f"sqlite:///{tmp_path / 's.sqlite3'}")
    epoch = RevocationEpoch.shared_with(sqlite)
    assert epoch is not None and epoch.path == Path(tmp_path / "s.sqlite3-revocations")
    start = epoch.read()
    epoch.bump()
    assert RevocationEpoch(epoch.path).read() == start + 1  # another mapping sees it
    assert (epoch.path.stat().st_mode & 0o777) == 0o600
