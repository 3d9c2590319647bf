"""Login accounts for patients (and their proxies) and practitioners, with optional TOTP.

Passwords are argon2 hashes; TOTP seeds are encrypted with the `SecretBox` key, which lives
outside the database. Sign-in resists guessing: after `max_failures` consecutive failures an
account is locked for `lockout_seconds`; an attempt is counted *before* its password is checked,
so parallel requests cannot run more guesses than the limit. An unknown username costs the same
argon2 work and gets the same answer as a wrong password. A TOTP code is accepted once: the
last accepted time-step is stored and a code for it or an earlier step is refused.
"""

from __future__ import annotations

import builtins
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    String,
    Table,
    Text,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from smart_launch.db import metadata
from smart_launch.secrets_box import SecretBox

log = logging.getLogger(__name__)

MIN_PASSWORD = 8
TOTP_WINDOW = 1  # steps either side of now (pyotp valid_window=1): 30 s of clock drift
USERNAME_RE = re.compile(r"[a-z0-9._@+-]{1,128}")
FHIR_USER_RE = re.compile(
    r"(Patient|Practitioner|PractitionerRole|RelatedPerson|Person)/([A-Za-z0-9\-.]{1,64})")
FHIR_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# Callers that see no patient list treat the user as unrestricted: only these may have none.
UNRESTRICTED_TYPES = ("Practitioner", "PractitionerRole")

user_account = Table(
    "user_account", metadata,
    Column("username", String(128), primary_key=True),  # lower-case
    Column("password_hash", String(255), nullable=False),
    Column("fhir_user", String(255), nullable=False),
    Column("patients", Text, nullable=False, default="[]"),  # JSON list of patient ids
    Column("display_name", String(255), nullable=False, default=""),
    Column("totp_secret", Text, nullable=True),  # SecretBox token; NULL = not enrolled
    Column("totp_last_step", BigInteger, nullable=True),  # last accepted TOTP time-step
    Column("failures", Integer, nullable=False, default=0),  # consecutive (incl. in flight)
    Column("locked_until", Float, nullable=True),
)


@dataclass(frozen=True)
class Account:
    username: str
    fhir_user: str  # e.g. "Patient/pat-0001" or "Practitioner/prac-01" (the fhirUser claim)
    patients: tuple[str, ...]  # patient ids this user may act for; empty for a practitioner
    totp_enrolled: bool
    display_name: str = ""


class LoginError(Exception):
    """A refused sign-in. `code` is for programs and audit; `str(error)` is for the login page.

    Codes: "invalid" (unknown user or wrong password), "otp_required", "otp_invalid" (wrong or
    already used code), "locked".
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_MESSAGES = {
    "invalid": "The username or password is not correct.",
    "otp_required": "Enter the 6-digit code from your authenticator app.",
    "otp_invalid": "That code is not correct or has already been used. "
                   "Enter the current code from your authenticator app.",
}


def _normalize(username: str | None) -> str:
    return (username or "").strip().lower()


class AccountStore:
    """The accounts in the state database, and sign-in against them."""

    def __init__(self, engine: Engine, box: SecretBox, *, max_failures: int = 5,
                 lockout_seconds: int = 900, clock: Callable[[], float] = time.time,
                 hasher: PasswordHasher | None = None) -> None:
        if max_failures < 1 or lockout_seconds < 1:
            raise ValueError("max_failures and lockout_seconds must be positive")
        self.engine = engine
        self.box = box
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self.clock = clock
        self.hasher = hasher or PasswordHasher()
        metadata.create_all(engine, tables=[user_account])

    @cached_property
    def _dummy_hash(self) -> str:
        """Hash with this hasher's parameters, checked for unknown users to spend equal time."""
        return self.hasher.hash(secrets.token_urlsafe(16))

    # -- administration -------------------------------------------------------------------

    def add(self, username: str, password: str, *, fhir_user: str, patients: Iterable[str] = (),
            display_name: str = "", totp: bool = False) -> str | None:
        """Create an account; return the new TOTP secret (base32) when `totp`, else None.

        A `Patient/<id>` user given no patients may act for their own record only.
        """
        name = _normalize(username)
        patients = tuple(patients)
        problems = []
        if not USERNAME_RE.fullmatch(name):
            problems.append("username must be 1-128 letters, digits or . _ @ + -")
        match = FHIR_USER_RE.fullmatch(fhir_user or "")
        if not match:
            problems.append("fhir_user must be a reference like Patient/<id> or "
                            "Practitioner/<id>")
        elif not patients and match.group(1) == "Patient":
            patients = (match.group(2),)
        elif not patients and match.group(1) not in UNRESTRICTED_TYPES:
            problems.append(f"a {match.group(1)} account needs the patients it may act for")
        bad = [p for p in patients if not FHIR_ID_RE.fullmatch(p)]
        if bad:
            problems.append(f"not patient ids: {', '.join(map(repr, bad))}")
        if len(display_name) > 255:
            problems.append("display name is longer than 255 characters")
        problems += _password_problems(password)
        if problems:
            raise ValueError("; ".join(problems))
        secret = pyotp.random_base32() if totp else None
        try:
            with self.engine.begin() as conn:
                if conn.execute(select(user_account.c.username).where(
                        user_account.c.username == name)).first():
                    raise ValueError(f"account {name!r} already exists")
                conn.execute(insert(user_account).values(
                    username=name, password_hash=self.hasher.hash(password),
                    fhir_user=fhir_user, patients=json.dumps(list(dict.fromkeys(patients))),
                    display_name=display_name,
                    totp_secret=self.box.encrypt(secret) if secret else None,
                    totp_last_step=None, failures=0, locked_until=None))
        except IntegrityError:
            raise ValueError(f"account {name!r} already exists") from None
        log.info("account %s added (%s%s)", name, fhir_user, ", TOTP" if totp else "")
        return secret

    def set_password(self, username: str, password: str) -> None:
        """Replace the password (no old one asked: an administrator's tool); clears a lockout."""
        problems = _password_problems(password)
        if problems:
            raise ValueError("; ".join(problems))
        self._update_existing(username, password_hash=self.hasher.hash(password), failures=0,
                              locked_until=None)

    def enroll_totp(self, username: str) -> str:
        """Give the account a new TOTP secret (replacing any old one) and return it (base32)."""
        secret = pyotp.random_base32()
        self._update_existing(username, totp_secret=self.box.encrypt(secret),
                              totp_last_step=None)
        return secret

    def unlock(self, username: str) -> None:
        """Lift a lockout and forget counted failures."""
        self._update_existing(username, failures=0, locked_until=None)

    def remove(self, username: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(user_account).where(
                user_account.c.username == _normalize(username))).rowcount == 1

    def get(self, username: str | None) -> Account | None:
        name = _normalize(username)
        if not name:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(user_account).where(
                user_account.c.username == name)).first()
        return _account(row) if row else None

    def list(self) -> builtins.list[Account]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(user_account).order_by(user_account.c.username)).all()
        return [_account(r) for r in rows]

    def totp_uri(self, username: str, secret: str, issuer: str = "fhir-gateway") -> str:
        """The otpauth:// URI an authenticator app reads (usually shown as a QR code)."""
        return pyotp.TOTP(secret).provisioning_uri(name=_normalize(username), issuer_name=issuer)

    # -- sign-in --------------------------------------------------------------------------

    def authenticate(self, username: str, password: str, otp: str | None = None) -> Account:
        """The account for these credentials, or LoginError saying why not."""
        name = _normalize(username)
        now = self.clock()
        row = None
        locked_until = None
        if name:
            with self.engine.begin() as conn:
                row = conn.execute(select(user_account).where(
                    user_account.c.username == name)).first()
                if row is not None:
                    locked_until = self._reserve_attempt(conn, name, now)
        if row is None:
            self._verify(self._dummy_hash, password)  # same work as a known user
            raise LoginError("invalid", _MESSAGES["invalid"])
        if locked_until is not None:
            raise LoginError("locked", _locked_message(locked_until - now))

        # The attempt is counted as a failure until proven otherwise.
        if not self._verify(row.password_hash, password):
            self._failed(name, now)
            raise LoginError("invalid", _MESSAGES["invalid"])
        if row.totp_secret:
            if not otp or not otp.strip():
                self._refund_attempt(name)
                raise LoginError("otp_required", _MESSAGES["otp_required"])
            step = _matching_step(self.box.decrypt(row.totp_secret), otp, now)
            if step is None or not self._succeed(name, step):
                self._failed(name, now)
                raise LoginError("otp_invalid", _MESSAGES["otp_invalid"])
        else:
            self._succeed(name, None)
        if self.hasher.check_needs_rehash(row.password_hash):
            with self.engine.begin() as conn:
                conn.execute(update(user_account).where(user_account.c.username == name)
                             .values(password_hash=self.hasher.hash(password)))
        return _account(row)

    def _verify(self, password_hash: str, password: str | None) -> bool:
        try:
            return self.hasher.verify(password_hash, password or "")
        except (VerificationError, InvalidHashError):
            return False

    def _reserve_attempt(self, conn: Connection, name: str, now: float) -> float | None:
        """Count this attempt as a failure up front; return the lock's end if locked instead.

        Counting before the (slow) password check bounds the guesses of concurrent requests:
        at most `max_failures` attempts are ever counted or in flight between successes.
        """
        t = user_account.c
        conn.execute(update(user_account)  # an expired lock starts a fresh count
                     .where(t.username == name, t.locked_until.is_not(None),
                            t.locked_until <= now)
                     .values(failures=0, locked_until=None))
        counted = conn.execute(update(user_account)
                               .where(t.username == name, t.locked_until.is_(None),
                                      t.failures < self.max_failures)
                               .values(failures=t.failures + 1)).rowcount
        if counted == 1:
            return None
        # Locked, or the limit is reached with no lock recorded (attempts in flight, or a
        # process that died mid-check): lock now so the account cannot stay stuck.
        conn.execute(update(user_account)
                     .where(t.username == name, t.locked_until.is_(None))
                     .values(locked_until=now + self.lockout_seconds))
        return conn.execute(select(t.locked_until).where(t.username == name)).scalar_one()

    def _refund_attempt(self, name: str) -> None:
        """The password was right but no code was given: this attempt was no failure."""
        t = user_account.c
        with self.engine.begin() as conn:
            conn.execute(update(user_account).where(t.username == name, t.failures > 0)
                         .values(failures=t.failures - 1))

    def _failed(self, name: str, now: float) -> None:
        """The attempt (already counted) failed: lock the account if that reached the limit."""
        t = user_account.c
        with self.engine.begin() as conn:
            locked = conn.execute(update(user_account)
                                  .where(t.username == name, t.failures >= self.max_failures,
                                         t.locked_until.is_(None))
                                  .values(locked_until=now + self.lockout_seconds)).rowcount
        if locked:
            log.warning("account %s locked for %d s after %d failed sign-ins", name,
                        self.lockout_seconds, self.max_failures)

    def _succeed(self, name: str, step: int | None) -> bool:
        """Reset the failure count; with a TOTP `step`, only if that step is newer than the last
        accepted one (atomically, so a code cannot be used twice even by parallel requests)."""
        t = user_account.c
        stmt = update(user_account).where(t.username == name)
        values: dict = {"failures": 0, "locked_until": None}
        if step is not None:
            stmt = stmt.where(or_(t.totp_last_step.is_(None), t.totp_last_step < step))
            values["totp_last_step"] = step
        with self.engine.begin() as conn:
            return conn.execute(stmt.values(**values)).rowcount == 1

    def _update_existing(self, username: str, **values) -> None:
        name = _normalize(username)
        with self.engine.begin() as conn:
            if conn.execute(update(user_account).where(user_account.c.username == name)
                            .values(**values)).rowcount != 1:
                raise ValueError(f"no account {name!r}")


def _password_problems(password: str | None) -> list[str]:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        return [f"password must be at least {MIN_PASSWORD} characters"]
    return []


def _matching_step(secret: str, otp: str, now: float) -> int | None:
    """The time-step whose code is `otp`, within TOTP_WINDOW steps of `now` (current first)."""
    totp = pyotp.TOTP(secret)
    code = "".join(otp.split())
    if not (code.isascii() and code.isdigit() and len(code) == totp.digits):
        return None
    current = int(now) // totp.interval
    found = None
    for offset in (0, *(d * s for d in range(1, TOTP_WINDOW + 1) for s in (-1, 1))):
        step = current + offset
        # compare every candidate (no early exit) so timing does not tell which one matched
        if hmac.compare_digest(totp.generate_otp(step), code) and found is None:
            found = step
    return found


def _locked_message(remaining: float) -> str:
    minutes = max(1, int(-(-remaining // 60)))
    return ("Too many failed sign-in attempts. This account is locked; try again in "
            f"{minutes} minute{'s' if minutes != 1 else ''}.")


def _account(row) -> Account:
    return Account(username=row.username, fhir_user=row.fhir_user,
                   patients=tuple(json.loads(row.patients)),
                   totp_enrolled=row.totp_secret is not None, display_name=row.display_name)
