"""Patient/practitioner accounts: argon2 passwords, lockout, TOTP with replay refusal, and the
secret box that keeps TOTP seeds encrypted at rest (checked against the raw SQLite file)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pyotp
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from smart_launch.accounts import Account, AccountStore, LoginError, user_account
from smart_launch.db import make_state_engine, metadata
from smart_launch.secrets_box import SecretBox, SecretBoxError

PASSWORD = "correct horse battery"
T0 = 1_800_000_000.0  # a multiple of 30: the start of a TOTP step


def fast_hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingHasher(PasswordHasher):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.verified: list[str] = []

    def verify(self, hash, password):
        self.verified.append(hash)
        return super().verify(hash, password)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture()
def box(tmp_path: Path) -> SecretBox:
    return SecretBox.from_file(tmp_path / "keys" / "secrets.key")


@pytest.fixture()
def engine(db_path: Path):
    engine = make_state_engine(f"sqlite:///{db_path}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture()
def store(engine, box, clock) -> AccountStore:
    return AccountStore(engine, box, clock=clock, hasher=fast_hasher())


def wrong_code(totp: pyotp.TOTP, now: float) -> str:
    """A well-formed code that is valid at none of the steps around `now`."""
    near = {totp.at(now + d) for d in (-30, 0, 30)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in near)


def refused(store: AccountStore, username: str, password: str, otp: str | None = None) -> str:
    with pytest.raises(LoginError) as info:
        store.authenticate(username, password, otp)
    assert str(info.value) and info.value.message == str(info.value)
    return info.value.code


# -- accounts ---------------------------------------------------------------------------------


def test_add_and_authenticate(store: AccountStore) -> None:
    assert store.add("Alice", PASSWORD, fhir_user="Patient/pat-0001",
                     display_name="Alice Smith") is None
    account = store.authenticate("ALICE ", PASSWORD)
    assert account == Account(username="alice", fhir_user="Patient/pat-0001",
                              patients=("pat-0001",), totp_enrolled=False,
                              display_name="Alice Smith")
    assert store.get("alice") == account and store.list() == [account]


def test_proxy_and_practitioner_accounts(store: AccountStore) -> None:
    store.add("parent", PASSWORD, fhir_user="Patient/pat-0001",
              patients=["pat-0001", "pat-0002", "pat-0002"])
    store.add("dr", PASSWORD, fhir_user="Practitioner/prac-01")
    assert store.get("parent").patients == ("pat-0001", "pat-0002")
    assert store.get("dr").patients == ()
    with pytest.raises(ValueError, match="needs the patients"):
        store.add("rp", PASSWORD, fhir_user="RelatedPerson/rp-1")
    assert [a.username for a in store.list()] == ["dr", "parent"]


@pytest.mark.parametrize("kwargs, problem", [
    ({"username": "bob", "password": "short"}, "at least 8"),
    ({"username": "bad name", "password": PASSWORD}, "username"),
    ({"username": "bob", "password": PASSWORD, "fhir_user": "Patient"}, "fhir_user"),
    ({"username": "bob", "password": PASSWORD, "patients": ["no/slash"]}, "patient ids"),
])
def test_add_rejects_bad_input(store: AccountStore, kwargs: dict, problem: str) -> None:
    kwargs.setdefault("fhir_user", "Patient/pat-0001")
    with pytest.raises(ValueError, match=problem):
        store.add(**kwargs)
    assert store.list() == []


def test_duplicate_username_case_insensitive(store: AccountStore) -> None:
    store.add("alice", PASSWORD, fhir_user="Patient/pat-0001")
    with pytest.raises(ValueError, match="already exists"):
        store.add("ALICE", PASSWORD, fhir_user="Patient/pat-0002")


def test_set_password_and_remove(store: AccountStore) -> None:
    store.add("alice", PASSWORD, fhir_user="Patient/pat-0001")
    with pytest.raises(ValueError, match="at least 8"):
        store.set_password("alice", "1234567")
    with pytest.raises(ValueError, match="no account"):
        store.set_password("nobody", "another password")
    store.set_password("Alice", "another password")
    assert refused(store, "alice", PASSWORD) == "invalid"
    assert store.authenticate("alice", "another password").username == "alice"
    assert store.remove("ALICE") is True and store.remove("alice") is False
    assert store.get("alice") is None
    assert refused(store, "alice", "another password") == "invalid"


def test_wrong_password_and_unknown_user_look_the_same(engine, box, clock) -> None:
    hasher = CountingHasher(time_cost=1, memory_cost=8, parallelism=1)
    store = AccountStore(engine, box, clock=clock, hasher=hasher)
    store.add("alice", PASSWORD, fhir_user="Patient/pat-0001")
    with pytest.raises(LoginError) as wrong:
        store.authenticate("alice", "not the password")
    with pytest.raises(LoginError) as unknown:
        store.authenticate("mallory", PASSWORD)
    with pytest.raises(LoginError) as empty:
        store.authenticate("", "")
    assert wrong.value.code == unknown.value.code == empty.value.code == "invalid"
    assert str(wrong.value) == str(unknown.value) == str(empty.value)
    # one argon2 verification each, the unknown ones against a hash of the same parameters
    assert len(hasher.verified) == 3
    params = {h.split("$")[3] for h in hasher.verified}
    assert len(params) == 1


def test_password_rehashed_when_parameters_change(engine, box, clock) -> None:
    old = AccountStore(engine, box, clock=clock, hasher=fast_hasher())
    old.add("alice", PASSWORD, fhir_user="Patient/pat-0001")
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    new = AccountStore(engine, box, clock=clock, hasher=stronger)

    def stored_hash() -> str:
        with engine.connect() as conn:
            return conn.execute(select(user_account.c.password_hash)).scalar_one()

    before = stored_hash()
    assert new.authenticate("alice", PASSWORD).username == "alice"
    after = stored_hash()
    assert after != before and not stronger.check_needs_rehash(after)
    assert new.authenticate("alice", PASSWORD).username == "alice"
    assert stored_hash() == after


# -- lockout ----------------------------------------------------------------------------------


def test_lockout_after_five_failures_and_unlock_after_window(store, clock) -> None:
    store.add("alice", PASSWORD, fhir_user="Patient/pat-0001")
    for _ in range(5):
        assert refused(store, "alice", "wrong password") == "invalid"
    assert refused(store, "alice", PASSWORD) == "locked"
    assert refused(store, "Alice", "wrong password") == "locked"
    clock.now += 899
    assert refused(store, "alice", PASSWORD) == "locked"
    clock.now += 1
    assert store.authenticate("alice", PASSWORD).username == "alice"
    # the count started afresh: four more failures do not lock
    for _ in range(4):
        assert refused(store, "alice", "wrong password") == "invalid"
    assert store.authenticate("alice", PASSWORD).username == "alice"


def test_success_resets_the_failure_count(store) -> None:
    store.add("alice", PASSWORD, fhir_user="Patient/pat-0001")
    for _ in range(4):
        refused(store, "alice", "wrong password")
    store.authenticate("alice", PASSWORD)
    for _ in range(4):
        refused(store, "alice", "wrong password")
    assert store.authenticate("alice", PASSWORD).username == "alice"
    refused(store, "alice", "wrong password")
    assert store.authenticate("alice", PASSWORD).username == "alice"


def test_lock_message_and_custom_limits(engine, box, clock) -> None:
    store = AccountStore(engine, box, clock=clock, hasher=fast_hasher(), max_failures=2,
                         lockout_seconds=120)
    store.add("alice", PASSWORD, fhir_user="Patient/pat-0001")
    refused(store, "alice", "wrong password")
    refused(store, "alice", "wrong password")
    with pytest.raises(LoginError) as info:
        store.authenticate("alice", PASSWORD)
    assert info.value.code == "locked" and "2 minutes" in str(info.value)
    store.unlock("alice")
    assert store.authenticate("alice", PASSWORD).username == "alice"


def test_lock_survives_a_new_store(engine, box, clock) -> None:
    """The count lives in the database, shared by every worker process."""
    first = AccountStore(engine, box, clock=clock, hasher=fast_hasher())
    first.add("alice", PASSWORD, fhir_user="Patient/pat-0001")
    for _ in range(3):
        refused(first, "alice", "wrong password")
    second = AccountStore(engine, box, clock=clock, hasher=fast_hasher())
    for _ in range(2):
        refused(second, "alice", "wrong password")
    assert refused(first, "alice", PASSWORD) == "locked"


def test_parallel_guesses_are_bounded_by_the_limit(engine, box, clock) -> None:
    """Attempts are counted before the slow check, so 20 concurrent guesses get 5 checks."""
    hasher = CountingHasher(time_cost=2, memory_cost=1024, parallelism=1)
    store = AccountStore(engine, box, clock=clock, hasher=hasher)
    store.add("alice", PASSWORD, fhir_user="Patient/pat-0001")
    with engine.connect() as conn:
        real_hash = conn.execute(select(user_account.c.password_hash)).scalar_one()
    barrier = threading.Barrier(20)
    codes: list[str] = []

    def guess(i: int) -> None:
        barrier.wait()
        try:
            store.authenticate("alice", f"guess number {i}")
        except LoginError as exc:
            codes.append(exc.code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == ["invalid"] * 5 + ["locked"] * 15
    assert hasher.verified.count(real_hash) == 5
    assert refused(store, "alice", PASSWORD) == "locked"


def test_limit_reached_without_lock_recorded_locks_rather_than_sticks(store, engine,
                                                                        clock) -> None:
    """Attempts counted by a process that died mid-check leave failures at the limit."""
    store.add("alice", PASSWORD, fhir_user="Patient/pat-0001")
    with engine.begin() as conn:
        conn.execute(user_account.update().values(failures=5, locked_until=None))
    assert refused(store, "alice", PASSWORD) == "locked"
    clock.now += 900
    assert store.authenticate("alice", PASSWORD).username == "alice"


# -- TOTP -------------------------------------------------------------------------------------


def test_totp_required_invalid_valid_replayed(store, clock) -> None:
    secret = store.add("alice", PASSWORD, fhir_user="Patient/pat-0001", totp=True)
    assert secret and len(pyotp.random_base32()) == len(secret)
    assert store.get("alice").totp_enrolled
    totp = pyotp.TOTP(secret)
    code = totp.at(clock.now)

    assert refused(store, "alice", PASSWORD) == "otp_required"
    assert refused(store, "alice", PASSWORD, "  ") == "otp_required"
    assert refused(store, "alice", PASSWORD, wrong_code(totp, clock.now)) == "otp_invalid"
    assert refused(store, "alice", PASSWORD, "abcdef") == "otp_invalid"
    # a wrong password is "invalid" whatever the code
    assert refused(store, "alice", "wrong password", code) == "invalid"

    assert store.authenticate("alice", PASSWORD, code).totp_enrolled
    assert refused(store, "alice", PASSWORD, code) == "otp_invalid"  # replay, same step
    clock.now += 30  # the old code is still inside the window, but already used
    assert refused(store, "alice", PASSWORD, code) == "otp_invalid"
    assert store.authenticate("alice", PASSWORD, totp.at(clock.now)).username == "alice"
    # an unused code of an earlier step is refused too: steps only move forward
    assert refused(store, "alice", PASSWORD, totp.at(clock.now - 30)) == "otp_invalid"


def test_totp_window_is_one_step(store, clock) -> None:
    secret = store.add("alice", PASSWORD, fhir_user="Patient/pat-0001", totp=True)
    totp = pyotp.TOTP(secret)
    assert refused(store, "alice", PASSWORD, totp.at(clock.now - 60)) == "otp_invalid"
    assert refused(store, "alice", PASSWORD, totp.at(clock.now + 60)) == "otp_invalid"
    assert store.authenticate("alice", PASSWORD, totp.at(clock.now - 30))
    clock.now += 30
    assert store.authenticate("alice", PASSWORD, f" {totp.at(clock.now + 30)[:3]} "
                              f"{totp.at(clock.now + 30)[3:]}")  # spaces tolerated


def test_missing_otp_is_no_failure_but_wrong_otp_is(store, clock) -> None:
    secret = store.add("alice", PASSWORD, fhir_user="Patient/pat-0001", totp=True)
    totp = pyotp.TOTP(secret)
    for _ in range(4):
        assert refused(store, "alice", "wrong password") == "invalid"
    for _ in range(5):
        assert refused(store, "alice", PASSWORD) == "otp_required"
    assert store.authenticate("alice", PASSWORD, totp.at(clock.now)).username == "alice"

    for _ in range(4):
        assert refused(store, "alice", PASSWORD, wrong_code(totp, clock.now)) == "otp_invalid"
    assert refused(store, "alice", PASSWORD, totp.at(clock.now)) == "otp_invalid"  # replay
    clock.now += 30
    assert refused(store, "alice", PASSWORD, totp.at(clock.now)) == "locked"


def test_enroll_totp_later_and_uri(store, clock) -> None:
    store.add("alice", PASSWORD, fhir_user="Patient/pat-0001")
    assert store.authenticate("alice", PASSWORD)
    with pytest.raises(ValueError, match="no account"):
        store.enroll_totp("nobody")
    secret = store.enroll_totp("Alice")
    assert refused(store, "alice", PASSWORD) == "otp_required"
    assert store.authenticate("alice", PASSWORD, pyotp.TOTP(secret).at(clock.now))
    uri = store.totp_uri("Alice", secret, issuer="Example Clinic")
    assert uri.startswith("otpauth://totp/Example%20Clinic:alice?")
    assert f"secret={secret}" in uri and "issuer=Example%20Clinic" in uri
    assert pyotp.parse_uri(uri).secret == secret


# -- secrets at rest --------------------------------------------------------------------------


def test_no_password_or_totp_secret_in_clear(store, engine, db_path: Path) -> None:
    secret = store.add("alice", PASSWORD, fhir_user="Patient/pat-0001", totp=True)
    store.add("bob", "bob's password", fhir_user="Patient/pat-0002")
    bob_secret = store.enroll_totp("bob")
    with engine.connect() as conn:
        rows = conn.execute(select(user_account)).all()
    cells = " ".join(str(v) for row in rows for v in row)
    for clear in (PASSWORD, "bob's password", secret, bob_secret):
        assert clear not in cells
        assert clear.lower() not in cells.lower()
    assert all(row.password_hash.startswith("$argon2id$") for row in rows)
    assert all(row.totp_secret and row.totp_secret.startswith("gAAAAA") for row in rows)

    engine.dispose()  # checkpoint and close; then read the file and any WAL next to it
    raw = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    assert b"alice" in raw  # sanity: the data is in the bytes we read
    for clear in (PASSWORD, "bob's password", secret, bob_secret):
        assert clear.encode() not in raw
        assert clear.lower().encode() not in raw.lower()


def test_totp_secret_unreadable_with_another_key(engine, store, clock, tmp_path) -> None:
    secret = store.add("alice", PASSWORD, fhir_user="Patient/pat-0001", totp=True)
    other = AccountStore(engine, SecretBox(SecretBox.generate_key()), clock=clock,
                         hasher=fast_hasher())
    with pytest.raises(SecretBoxError, match="not the one"):
        other.authenticate("alice", PASSWORD, pyotp.TOTP(secret).at(clock.now))


# -- SecretBox --------------------------------------------------------------------------------


def test_secret_box_round_trip_and_wrong_key() -> None:
    box = SecretBox(SecretBox.generate_key())
    token = box.encrypt("JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in token
    assert box.decrypt(token) == "JBSWY3DPEHPK3PXP"
    assert box.encrypt("same") != box.encrypt("same")  # random IV
    with pytest.raises(SecretBoxError, match="not the one it was encrypted with"):
        SecretBox(SecretBox.generate_key()).decrypt(token)
    with pytest.raises(SecretBoxError):
        box.decrypt(token[:-4] + "AAAA")
    with pytest.raises(SecretBoxError):
        box.decrypt("not a token")
    with pytest.raises(SecretBoxError, match="not a Fernet key"):
        SecretBox(b"too short")


def test_key_file_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "secrets.key"
    old_umask = os.umask(0)  # even with a permissive umask the key is private
    try:
        box = SecretBox.from_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_bytes().strip()) == 44  # 32 bytes, url-safe base64
    assert [p.name for p in path.parent.iterdir()] == ["secrets.key"]  # no temp file left
    token = box.encrypt("secret")
    assert SecretBox.from_file(path).decrypt(token) == "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_damaged(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(SecretBoxError, match="secrets.key"):
        SecretBox.from_file(path)
