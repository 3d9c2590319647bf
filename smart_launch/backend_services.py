"""SMART Backend Services: `client_credentials` with a signed JWT client assertion (RFC 7523).

The assertion must be signed with RS384 or ES384 by a key of the client's JWKS, carry
`iss` = `sub` = client_id, `aud` = this token URL, an `exp` at most five minutes ahead, and a
`jti` never seen before. Only `system/` scopes are granted; tokens live 300 s, with no refresh.
The same `private_key_jwt` authentication serves asymmetric clients in user-facing flows.
"""

from __future__ import annotations

import time

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidScopeError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError

from smart_launch.scopes import ScopeError, parse_scopes

ASSERTION_ALGORITHMS = ["RS384", "ES384"]
MAX_ASSERTION_LIFETIME = 300


class PrivateKeyJWT(JWTBearerClientAssertion):
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, token_url: str, smart) -> None:
        super().__init__(validate_jti=True, leeway=0)
        self._token_url = token_url
        self.smart = smart

    def get_audiences(self) -> list[str]:
        return [self._token_url]

    def resolve_client_public_key(self, client):
        try:
            return self.smart.clients.public_keys(client)
        except Exception as exc:  # noqa: BLE001 - unreachable JWKS URL, bad keys...
            raise InvalidClientError(description=f"The client's keys cannot be used: "
                                                 f"{type(exc).__name__}") from None

    def process_assertion_claims(self, assertion, resolve_key):
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except JoseError as exc:
            raise InvalidClientError(description=f"The client assertion is not valid: "
                                                 f"{exc.error}") from None
        self.verify_claims(token.claims)
        return token.claims

    def verify_claims(self, claims) -> None:
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp - time.time() > MAX_ASSERTION_LIFETIME:
            raise InvalidClientError(description="The assertion's exp is more than five "
                                                 "minutes ahead.")
        super().verify_claims(claims)

    def validate_jti(self, claims, jti) -> bool:
        return self.smart.records.use_assertion_jti(claims["sub"], str(jti),
                                                    float(claims["exp"]))


class BackendServicesGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt"]

    def validate_token_request(self):
        super().validate_token_request()
        asked = self.request.payload.scope or ""
        try:
            scopes = parse_scopes(asked)
        except ScopeError as exc:
            raise InvalidScopeError(str(exc)) from None
        if not scopes.grants or any(g.context != "system" for g in scopes.grants):
            raise InvalidScopeError("Backend services may ask for system/ scopes only.")
        registered = self.request.client.scope
        if registered and not scopes.subset_of(parse_scopes(registered)):
            raise InvalidScopeError("The client is not registered for these scopes.")
