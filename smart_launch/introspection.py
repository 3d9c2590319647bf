"""Token introspection (RFC 7662) for resource servers and confidential clients.

Answers `active: false` for anything expired, revoked, unknown or not ours; for an active access
token it returns the scope, client, expiry, SMART context (`patient`, `encounter`, `fhirUser`)
and `iss`/`sub`/`aud`. Callers authenticate as confidential clients.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from smart_launch.access_token import TokenError
from smart_launch.records import RefreshRecord


@dataclass
class AccessTokenRecord:
    """A verified access token as authlib's TokenMixin sees it."""

    claims: dict

    def get_client_id(self) -> str:
        return self.claims["client_id"]

    def get_scope(self) -> str:
        return self.claims.get("scope", "")

    def get_expires_in(self) -> int:
        return int(self.claims["exp"] - self.claims["iat"])

    def is_expired(self) -> bool:
        return time.time() >= self.claims["exp"]

    def is_revoked(self) -> bool:
        return False  # the verifier refused revoked tokens already


def find_token(smart, token_string: str, hint: str | None):
    """An access token (verified JWT) or a refresh token record, or None."""
    if hint != "refresh_token":
        try:
            return AccessTokenRecord(smart.verifier.verify(token_string).claims)
        except TokenError:
            if hint == "access_token":
                return None
    return smart.records.find_refresh(token_string)


class SmartIntrospection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def query_token(self, token_string, token_type_hint):
        return find_token(self.server.smart, token_string, token_type_hint)

    def check_permission(self, token, client, request) -> bool:
        return not client.public

    def introspect_token(self, token) -> dict:
        if isinstance(token, RefreshRecord):
            return {"active": True, "token_type": "refresh_token", "client_id": token.client_id,
                    "scope": token.scope, "exp": int(token.expires_at),
                    "iat": int(token.issued_at), "sub": token.username,
                    "iss": self.server.smart.issuer,
                    **({"patient": token.patient} if token.patient else {}),
                    **({"fhirUser": token.fhir_user} if token.fhir_user else {})}
        claims = token.claims
        out = {"active": True, "token_type": "Bearer"}
        for key in ("scope", "client_id", "exp", "iat", "sub", "iss", "aud", "jti", "patient",
                    "encounter", "fhirUser"):
            if key in claims:
                out[key] = claims[key]
        return out
