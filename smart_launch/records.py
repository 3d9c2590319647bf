"""What the authorization server remembers: codes, issued tokens, refresh families, launch
contexts and used assertion ids. Secrets are stored only as SHA-256 digests.

A *family* ties together everything issued from one authorization: the code, every access
token and every rotated refresh token. Reusing a spent code or a rotated refresh token revokes
the whole family (OAuth 2.0 Security BCP, section 4.13/4.14).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from cachetools import LRUCache
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from smart_launch.db import digest, metadata
from smart_launch.revocation_epoch import RevocationEpoch

auth_code = Table(
    "auth_code", metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("family", String(64), nullable=False),
    Column("client_id", String(128), nullable=False),
    Column("redirect_uri", String(1024), nullable=False),
    Column("scope", Text, nullable=False),
    Column("username", String(255), nullable=False),
    Column("fhir_user", String(255), nullable=True),
    Column("patient", String(64), nullable=True),
    Column("encounter", String(64), nullable=True),
    Column("code_challenge", String(128), nullable=True),
    Column("code_challenge_method", String(16), nullable=True),
    Column("nonce", String(255), nullable=True),
    Column("auth_time", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
)

issued_token = Table(
    "issued_token", metadata,
    Column("jti", String(64), primary_key=True),
    Column("family", String(64), nullable=True, index=True),
    Column("client_id", String(128), nullable=False, index=True),
    Column("username", String(255), nullable=True),
    Column("patient", String(64), nullable=True),
    Column("scope", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

refresh_token = Table(
    "refresh_token", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("family", String(64), nullable=False, index=True),
    Column("client_id", String(128), nullable=False),
    Column("username", String(255), nullable=False),
    Column("fhir_user", String(255), nullable=True),
    Column("patient", String(64), nullable=True),
    Column("encounter", String(64), nullable=True),
    Column("scope", Text, nullable=False),
    Column("issued_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),  # absolute: the family's end
    Column("rotated", Boolean, nullable=False, default=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

launch_context = Table(
    "launch_context", metadata,
    Column("launch_hash", String(64), primary_key=True),
    Column("client_id", String(128), nullable=False),
    Column("patient", String(64), nullable=False),
    Column("encounter", String(64), nullable=True),
    Column("expires_at", Float, nullable=False),
)

assertion_jti = Table(
    "assertion_jti", metadata,
    Column("client_id", String(128), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", Float, nullable=False),
)


@dataclass
class CodeRecord:
    """An authorization code as authlib's AuthorizationCodeMixin sees it."""

    code_hash: str
    family: str
    client_id: str
    redirect_uri: str
    scope: str
    username: str
    fhir_user: str | None
    patient: str | None
    encounter: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    auth_time: float
    expires_at: float
    used: bool

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.auth_time)

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass
class RefreshRecord:
    """A refresh token as authlib's TokenMixin sees it."""

    token_hash: str
    family: str
    client_id: str
    username: str
    fhir_user: str | None
    patient: str | None
    encounter: str | None
    scope: str
    issued_at: float
    expires_at: float
    rotated: bool
    revoked: bool

    def check_client(self, client) -> bool:
        return client.get_client_id() == self.client_id

    def get_client_id(self) -> str:
        return self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - self.issued_at)

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked or self.rotated


class Records:
    """Reads and writes of the tables above; every method is one short transaction."""

    CODE_TTL = 60

    def __init__(self, engine: Engine, clock=time.time) -> None:
        self.engine = engine
        self.clock = clock
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._token_state_sql = f"SELECT revoked FROM issued_token WHERE jti = {mark}"
        # Tokens found live, with the revocation epoch read before asking (see
        # smart_launch.revocation_epoch); None where processes cannot share an epoch.
        self._epoch = RevocationEpoch.shared_with(engine)
        self._live: LRUCache = LRUCache(maxsize=50_000)
        self._live_lock = threading.Lock()

    # -- codes ------------------------------------------------------------------------------

    def save_code(self, code: str, **fields) -> None:
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(insert(auth_code).values(
                code_hash=digest(code), family=secrets.token_hex(16), auth_time=now,
                expires_at=now + self.CODE_TTL, used=False, **fields))

    def find_code(self, code: str) -> CodeRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(auth_code).where(
                auth_code.c.code_hash == digest(code))).first()
        return CodeRecord(**row._mapping) if row else None

    def spend_code(self, record: CodeRecord) -> bool:
        """Mark a code used; False when another request spent it first."""
        with self.engine.begin() as conn:
            return conn.execute(update(auth_code).where(
                auth_code.c.code_hash == record.code_hash, auth_code.c.used.is_(False)
            ).values(used=True)).rowcount == 1

    # -- access tokens ----------------------------------------------------------------------

    def record_access_token(self, jti: str, *, family: str | None, client_id: str,
                            username: str | None, patient: str | None, scope: str,
                            expires_at: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(issued_token).values(
                jti=jti, family=family, client_id=client_id, username=username,
                patient=patient, scope=scope, expires_at=expires_at, revoked=False))

    def access_token_state(self, jti: str) -> tuple[bool, bool]:
        """(known, revoked) for an access token id, as the database says now. A token found
        live is remembered until the next revocation anywhere moves the shared epoch."""
        epoch = self._epoch.read() if self._epoch is not None else None
        if epoch is not None:
            with self._live_lock:
                seen = self._live.get(jti)
            if seen == epoch:
                return True, False
        known, revoked = self._lookup_token_state(jti)
        if epoch is not None and known and not revoked:
            with self._live_lock:
                self._live[jti] = epoch
        return known, revoked

    def _revoked(self) -> None:
        """Called after every revocation committed: others ask the database again."""
        if self._epoch is not None:
            self._epoch.bump()

    def _lookup_token_state(self, jti: str) -> tuple[bool, bool]:
        # Straight to the driver through the pool (SQLAlchemy's statement machinery cost more
        # than the lookup itself).
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute(self._token_state_sql, (jti,))
            row = cur.fetchone()
            cur.close()
        finally:
            raw.close()
        return (row is not None, bool(row[0]) if row else False)

    def revoke_access_token(self, jti: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(issued_token).where(issued_token.c.jti == jti)
                         .values(revoked=True))
        self._revoked()

    # -- refresh tokens ---------------------------------------------------------------------

    def save_refresh(self, token: str, *, family: str, expires_at: float, **fields) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(refresh_token).values(
                token_hash=digest(token), family=family, issued_at=self.clock(),
                expires_at=expires_at, rotated=False, revoked=False, **fields))

    def find_refresh(self, token: str) -> RefreshRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(refresh_token).where(
                refresh_token.c.token_hash == digest(token))).first()
        return RefreshRecord(**row._mapping) if row else None

    def rotate_refresh(self, record: RefreshRecord) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(update(refresh_token).where(
                refresh_token.c.token_hash == record.token_hash,
                refresh_token.c.rotated.is_(False)).values(rotated=True)).rowcount == 1

    def revoke_family(self, family: str) -> None:
        """Revoke every access and refresh token issued from one authorization."""
        with self.engine.begin() as conn:
            conn.execute(update(issued_token).where(issued_token.c.family == family)
                         .values(revoked=True))
            conn.execute(update(refresh_token).where(refresh_token.c.family == family)
                         .values(revoked=True))
        self._revoked()

    def revoke_client_for_patient(self, client_id: str, patient: str) -> int:
        """Revoke an app's access to one patient (the patient's 'revoke app' action)."""
        with self.engine.begin() as conn:
            families = [r.family for r in conn.execute(
                select(refresh_token.c.family).where(refresh_token.c.client_id == client_id,
                                                     refresh_token.c.patient == patient))]
            n = conn.execute(update(issued_token).where(
                issued_token.c.client_id == client_id, issued_token.c.patient == patient)
                .values(revoked=True)).rowcount
            if families:
                conn.execute(update(refresh_token).where(refresh_token.c.family.in_(families))
                             .values(revoked=True))
        self._revoked()
        return n

    def live_grants(self, patient: str) -> list[dict]:
        """Every client holding a live grant for one patient: an unexpired, unrevoked refresh
        token (the family's newest) or access token. One dict per client: `client_id`,
        `scope` (the scopes of its live tokens, in order of first appearance), `granted`
        (the earliest sign-in among its live grants, epoch seconds), `expires` (when the last
        of them ends), `families` and `tokens` (how many live grants and tokens). Nothing
        secret: no token values, no digests."""
        now = self.clock()
        with self.engine.connect() as conn:
            refresh = conn.execute(select(
                refresh_token.c.client_id, refresh_token.c.family, refresh_token.c.scope,
                refresh_token.c.expires_at).where(
                refresh_token.c.patient == patient, refresh_token.c.revoked.is_(False),
                refresh_token.c.rotated.is_(False), refresh_token.c.expires_at > now)).all()
            access = conn.execute(select(
                issued_token.c.client_id, issued_token.c.family, issued_token.c.scope,
                issued_token.c.expires_at).where(
                issued_token.c.patient == patient, issued_token.c.revoked.is_(False),
                issued_token.c.expires_at > now)).all()
            families = {r.family for r in refresh} | {a.family for a in access if a.family}
            signed_in: dict[str, float] = {}
            if families:
                signed_in = {r.family: r.auth_time for r in conn.execute(select(
                    auth_code.c.family, auth_code.c.auth_time).where(
                    auth_code.c.family.in_(families)))}
                for r in conn.execute(select(refresh_token.c.family,
                                             func.min(refresh_token.c.issued_at).label("first"))
                                      .where(refresh_token.c.family.in_(families))
                                      .group_by(refresh_token.c.family)):
                    signed_in.setdefault(r.family, r.first)
        apps: dict[str, dict] = {}
        for row in [*refresh, *access]:
            app = apps.setdefault(row.client_id, {
                "client_id": row.client_id, "scope": [], "granted": None, "expires": 0.0,
                "families": set(), "tokens": 0})
            app["tokens"] += 1
            for scope in row.scope.split():
                if scope not in app["scope"]:
                    app["scope"].append(scope)
            app["families"].add(row.family or f"token-{app['tokens']}")
            # a token minted without a sign-in (no family) has no known grant time
            granted = signed_in.get(row.family) if row.family else None
            if granted is not None and (app["granted"] is None or granted < app["granted"]):
                app["granted"] = granted
            app["expires"] = max(app["expires"], row.expires_at)
        out = []
        for app in sorted(apps.values(), key=lambda a: a["client_id"]):
            out.append({**app, "scope": " ".join(app["scope"]),
                        "families": len(app["families"])})
        return out

    # -- launch contexts --------------------------------------------------------------------

    def create_launch(self, client_id: str, patient: str, encounter: str | None,
                      ttl: int = 300) -> str:
        launch = secrets.token_urlsafe(24)
        with self.engine.begin() as conn:
            conn.execute(insert(launch_context).values(
                launch_hash=digest(launch), client_id=client_id, patient=patient,
                encounter=encounter, expires_at=self.clock() + ttl))
        return launch

    def find_launch(self, launch: str, client_id: str) -> tuple[str, str | None] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(launch_context).where(
                launch_context.c.launch_hash == digest(launch))).first()
        if row is None or row.client_id != client_id or row.expires_at < self.clock():
            return None
        return row.patient, row.encounter

    # -- backend-services assertions --------------------------------------------------------

    def use_assertion_jti(self, client_id: str, jti: str, expires_at: float) -> bool:
        """Remember a client assertion's `jti`; False when it was seen before."""
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(delete(assertion_jti).where(assertion_jti.c.expires_at < now - 600))
            seen = conn.execute(select(assertion_jti.c.jti).where(
                assertion_jti.c.client_id == client_id, assertion_jti.c.jti == jti)).first()
            if seen:
                return False
            try:
                conn.execute(insert(assertion_jti).values(client_id=client_id, jti=jti,
                                                          expires_at=expires_at))
            except IntegrityError:  # the same jti raced in from another request
                return False
        return True
