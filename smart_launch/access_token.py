"""JWT access tokens (RFC 9068) signed by the gateway, and their verification.

Issued with authlib's `JWTBearerTokenGenerator`; the SMART launch context (`patient`,
`encounter`, `fhirUser`) rides in the token so the FHIR side can decide without a lookup, and the
token's `jti` is recorded so revocation takes effect on the very next request.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from cachetools import TTLCache
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError

from smart_launch.keys import SigningKeys
from smart_launch.records import Records
from smart_launch.scopes import parse_scopes

USER_TOKEN_SECONDS = 3600
SYSTEM_TOKEN_SECONDS = 300


class SmartTokenGenerator(JWTBearerTokenGenerator):
    def __init__(self, issuer: str, audience: str, keys: SigningKeys) -> None:
        super().__init__(issuer=issuer, alg="RS256", expires_generator=self._expires_in,
                         refresh_token_generator=self._refresh_token)
        self.audience = audience
        self.keys = keys

    @staticmethod
    def _refresh_token(client, grant_type, user, scope) -> str:
        return secrets.token_urlsafe(48)

    @staticmethod
    def _expires_in(client, grant_type: str) -> int:
        return SYSTEM_TOKEN_SECONDS if grant_type == "client_credentials" else USER_TOKEN_SECONDS

    def get_jwks(self):
        return self.keys.private_set()

    def get_audiences(self, client, user, scope) -> str:
        return self.audience

    def get_extra_claims(self, client, grant_type, user, scope) -> dict:
        claims = {}
        if user is not None:
            if user.patient:
                claims["patient"] = user.patient
            if user.encounter:
                claims["encounter"] = user.encounter
            if user.fhir_user:
                claims["fhirUser"] = user.fhir_user
        return claims

    def generate(self, grant_type, client, user=None, scope=None, expires_in=None,
                 include_refresh_token=True):
        """As authlib, but a refresh token only when offline or online access was granted."""
        scopes = parse_scopes(scope or "")
        include = include_refresh_token and (scopes.offline_access or scopes.online_access)
        return super().generate(grant_type, client, user=user, scope=scope,
                                expires_in=expires_in, include_refresh_token=include)


class TokenError(Exception):
    """Why a bearer token was refused; `message` is safe to show (it names no secret)."""


@dataclass(frozen=True)
class VerifiedToken:
    claims: dict

    @property
    def jti(self) -> str:
        return self.claims["jti"]


class TokenVerifier:
    """Checks a bearer token: our key, RS256 only, issuer, audience, expiry, not revoked."""

    def __init__(self, issuer: str, audience: str, keys: SigningKeys, records: Records,
                 clock=time.time) -> None:
        self.issuer = issuer
        self.audience = audience
        self.keys = keys
        self.records = records
        self.clock = clock
        self._verified: TTLCache = TTLCache(maxsize=20_000, ttl=600)
        self._lock = threading.Lock()

    def verify(self, token: str) -> VerifiedToken:
        """Signature, issuer and audience are checked once per token and remembered (by the
        token's hash) until it expires; expiry and revocation are checked on every call."""
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            claims = self._verified.get(key)
        if claims is None:
            claims = self._check_signed(token)
            with self._lock:
                self._verified[key] = claims
        elif claims["exp"] <= int(self.clock()):
            raise TokenError("The access token has expired")
        known, revoked = self.records.access_token_state(claims["jti"])
        if not known:
            raise TokenError("The access token is not known here")
        if revoked:
            raise TokenError("The access token has been revoked")
        return VerifiedToken(claims)

    def _check_signed(self, token: str) -> dict:
        try:
            decoded = jwt.decode(token, self.keys.public_set(), algorithms=["RS256"])
        except (JoseError, ValueError, TypeError):
            raise TokenError("The access token is not valid") from None
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            now=int(self.clock()), leeway=0,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True}, jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise TokenError("The access token has expired") from None
        except JoseError:
            raise TokenError("The access token is not valid for this server") from None
        return claims
