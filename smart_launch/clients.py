"""Registered SMART clients (apps): public, confidential-symmetric, confidential-asymmetric.

A client is what authlib's `ClientMixin` asks about: its redirect URIs (matched exactly), how it
authenticates at the token endpoint (`none`, `client_secret_basic`/`_post`, `private_key_jwt`),
which grants and scopes it may use. Secrets are stored as argon2 hashes. Asymmetric clients give
their JWKS inline or by URL; fetched key sets are cached as long as the JWKS response's
`Cache-Control: max-age` allows (5 minutes when it says nothing).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field

import httpx
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from authlib.oauth2.rfc6749 import ClientMixin
from joserfc.jwk import KeySet
from sqlalchemy import Column, Engine, String, Table, Text, delete, insert, select

from smart_launch.db import metadata
from smart_launch.scopes import parse_scopes

KINDS = ("public", "symmetric", "asymmetric")
AUTH_METHODS = {
    "public": ("none",),
    "symmetric": ("client_secret_basic", "client_secret_post"),
    "asymmetric": ("private_key_jwt",),
}
DEFAULT_JWKS_TTL = 300
_hasher = PasswordHasher()

oauth_client = Table(
    "oauth_client",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(255), nullable=False, default=""),
    Column("secret_hash", String(255), nullable=True),
    Column("redirect_uris", Text, nullable=False, default="[]"),
    Column("launch_uri", String(1024), nullable=True),
    Column("scope", Text, nullable=False, default=""),
    Column("jwks", Text, nullable=True),
    Column("jwks_url", String(1024), nullable=True),
)


@dataclass
class Client(ClientMixin):
    client_id: str
    kind: str
    name: str = ""
    secret_hash: str | None = None
    redirect_uris: list[str] = field(default_factory=list)
    launch_uri: str | None = None
    scope: str = ""
    jwks: dict | None = None
    jwks_url: str | None = None

    # -- authlib ClientMixin ----------------------------------------------------------------

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None  # SMART apps always send redirect_uri

    def get_allowed_scope(self, scope: str) -> str:
        """The requested scopes this client's registration permits (all when none registered)."""
        if not scope:
            return ""
        if not self.scope:
            return scope
        return parse_scopes(scope).narrowed_to(parse_scopes(self.scope)).text()

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.secret_hash or not client_secret:
            return False
        try:
            return _hasher.verify(self.secret_hash, client_secret)
        except (VerificationError, InvalidHashError):
            return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint == "token":
            return method in AUTH_METHODS[self.kind]
        return method in AUTH_METHODS[self.kind] or method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "client_credentials":
            return self.kind == "asymmetric"
        return grant_type in ("authorization_code", "refresh_token")

    @property
    def public(self) -> bool:
        return self.kind == "public"

    def summary(self) -> dict:
        return {"client_id": self.client_id, "kind": self.kind, "name": self.name,
                "redirect_uris": self.redirect_uris, "launch_uri": self.launch_uri,
                "scope": self.scope, "jwks_url": self.jwks_url,
                "jwks": "inline" if self.jwks else None}


class ClientRegistry:
    """Clients in the state database, and their public keys."""

    def __init__(self, engine: Engine, http: httpx.Client | None = None) -> None:
        self.engine = engine
        self.http = http or httpx.Client(timeout=5)
        self._jwks_cache: dict[str, tuple[float, KeySet]] = {}
        self._lock = threading.Lock()

    def add(self, client_id: str, kind: str, *, redirect_uris: list[str] = (),
            secret: str | None = None, jwks: dict | None = None, jwks_url: str | None = None,
            scope: str = "", name: str = "", launch_uri: str | None = None) -> Client:
        problems = []
        if not re.fullmatch(r"[A-Za-z0-9._~-]{1,128}", client_id or ""):
            problems.append("client id must be 1-128 letters, digits or . _ ~ -")
        if kind not in KINDS:
            problems.append(f"kind must be one of {', '.join(KINDS)}")
        if kind == "symmetric" and (not secret or len(secret) < 16):
            problems.append("a confidential-symmetric client needs a secret of 16+ characters")
        if kind == "asymmetric" and not (jwks or jwks_url):
            problems.append("a confidential-asymmetric client needs --jwks or --jwks-url")
        if kind != "asymmetric" and not redirect_uris:
            problems.append("a client that launches needs at least one redirect URI")
        for uri in redirect_uris:
            if not re.match(r"^https?://[^\s#]+$", uri):
                problems.append(f"redirect URI {uri!r} must be an absolute http(s) URL "
                                "without a fragment")
        if jwks is not None:
            try:
                KeySet.import_key_set(jwks)
            except Exception as exc:  # noqa: BLE001 - any parse failure is the same problem
                problems.append(f"the JWKS cannot be read: {exc}")
        if scope:
            parse_scopes(scope)
        if problems:
            raise ValueError("; ".join(problems))
        with self.engine.begin() as conn:
            if conn.execute(select(oauth_client.c.client_id).where(
                    oauth_client.c.client_id == client_id)).first():
                raise ValueError(f"client {client_id!r} already exists")
            conn.execute(insert(oauth_client).values(
                client_id=client_id, kind=kind, name=name or client_id,
                secret_hash=_hasher.hash(secret) if secret else None,
                redirect_uris=json.dumps(list(redirect_uris)), launch_uri=launch_uri,
                scope=scope, jwks=json.dumps(jwks) if jwks else None, jwks_url=jwks_url))
        return self.get(client_id)

    def get(self, client_id: str | None) -> Client | None:
        if not client_id:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(oauth_client).where(
                oauth_client.c.client_id == client_id)).first()
        if row is None:
            return None
        return Client(client_id=row.client_id, kind=row.kind, name=row.name,
                      secret_hash=row.secret_hash, redirect_uris=json.loads(row.redirect_uris),
                      launch_uri=row.launch_uri, scope=row.scope,
                      jwks=json.loads(row.jwks) if row.jwks else None, jwks_url=row.jwks_url)

    def list(self) -> list[Client]:
        with self.engine.connect() as conn:
            ids = [r.client_id for r in conn.execute(
                select(oauth_client.c.client_id).order_by(oauth_client.c.client_id))]
        return [self.get(i) for i in ids]

    def remove(self, client_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(oauth_client).where(
                oauth_client.c.client_id == client_id)).rowcount == 1

    def origins(self) -> set[str]:
        """Origins of every registered redirect URI (for CORS)."""
        out = set()
        for client in self.list():
            for uri in client.redirect_uris:
                match = re.match(r"^(https?://[^/]+)", uri)
                if match:
                    out.add(match.group(1).lower())
        return out

    def public_keys(self, client: Client) -> KeySet:
        """The client's JWKS: inline, or fetched from its URL and cached per Cache-Control."""
        if client.jwks:
            return KeySet.import_key_set(client.jwks)
        if not client.jwks_url:
            raise ValueError("client has no keys")
        now = time.monotonic()
        with self._lock:
            cached = self._jwks_cache.get(client.jwks_url)
        if cached and cached[0] > now:
            return cached[1]
        resp = self.http.get(client.jwks_url)
        resp.raise_for_status()
        keys = KeySet.import_key_set(resp.json())
        ttl = _max_age(resp.headers.get("Cache-Control"))
        with self._lock:
            self._jwks_cache[client.jwks_url] = (now + ttl, keys)
        return keys


def _max_age(header: str | None) -> int:
    if not header:
        return DEFAULT_JWKS_TTL
    directives = [d.strip().lower() for d in header.split(",")]
    if "no-store" in directives or "no-cache" in directives:
        return 0
    for d in directives:
        if d.startswith("max-age="):
            try:
                return max(0, int(d.split("=", 1)[1]))
            except ValueError:
                return DEFAULT_JWKS_TTL
    return DEFAULT_JWKS_TTL
