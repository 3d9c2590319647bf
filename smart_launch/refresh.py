"""The refresh token grant (RFC 6749 6) with rotation and reuse detection.

Every refresh issues a new refresh token and retires the old one; presenting a retired token
revokes the whole family. Refresh tokens are bound to their client, never outlive the family's
absolute expiry, and a refresh may ask for the same or narrower SMART scopes only.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidScopeError

from smart_launch.context import AuthorizedUser
from smart_launch.records import RefreshRecord
from smart_launch.scopes import ScopeError, parse_scopes


class SmartRefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [
        "none", "client_secret_basic", "client_secret_post", "private_key_jwt",
    ]
    INCLUDE_NEW_REFRESH_TOKEN = True

    @property
    def smart(self):
        return self.server.smart

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshRecord | None:
        record = self.smart.records.find_refresh(refresh_token)
        if record is None:
            return None
        if record.rotated or record.revoked:
            if record.rotated and not record.revoked:
                self.smart.records.revoke_family(record.family)
                self.smart.audit("token", "denied", client_id=record.client_id,
                                 patient=record.patient,
                                 detail="rotated refresh token reused; family revoked")
            return None
        if record.is_expired():
            return None
        return record

    def _validate_token_scope(self, token: RefreshRecord) -> None:
        asked = self.request.payload.scope
        if not asked:
            return
        try:
            if not parse_scopes(asked).subset_of(parse_scopes(token.get_scope())):
                raise InvalidScopeError("A refresh may not widen the granted scopes.")
        except ScopeError as exc:
            raise InvalidScopeError(str(exc)) from None

    def authenticate_user(self, refresh_token: RefreshRecord) -> AuthorizedUser:
        return AuthorizedUser(refresh_token.username, refresh_token.fhir_user,
                              refresh_token.patient, refresh_token.encounter)

    def revoke_old_credential(self, refresh_token: RefreshRecord) -> None:
        pass  # retired in validate_token_request, before the new token exists

    def validate_token_request(self):
        super().validate_token_request()
        if not self.smart.records.rotate_refresh(self.request.refresh_token):
            from authlib.oauth2.rfc6749.errors import InvalidGrantError

            self.smart.records.revoke_family(self.request.refresh_token.family)
            raise InvalidGrantError("The refresh token was already used.")
