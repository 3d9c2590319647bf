"""The authorization code grant (RFC 6749 4.1) with SMART's launch context.

Codes are single-use and live at most 60 s. A code presented a second time gets `invalid_grant`
and revokes every token issued from it (RFC 6749 10.5).
"""

from __future__ import annotations

import time

from authlib.oauth2.rfc6749 import grants

from smart_launch.context import AuthorizedUser
from smart_launch.records import CodeRecord


class SmartAuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [
        "none", "client_secret_basic", "client_secret_post", "private_key_jwt",
    ]

    @property
    def smart(self):
        return self.server.smart

    def save_authorization_code(self, code: str, request) -> None:
        user: AuthorizedUser = request.user
        payload = request.payload
        self.smart.records.save_code(
            code, client_id=request.client.get_client_id(), redirect_uri=payload.redirect_uri,
            scope=request.scope or "", username=user.username, fhir_user=user.fhir_user,
            patient=user.patient, encounter=user.encounter,
            code_challenge=payload.data.get("code_challenge"),
            code_challenge_method=payload.data.get("code_challenge_method"),
            nonce=payload.data.get("nonce"))

    def query_authorization_code(self, code: str, client) -> CodeRecord | None:
        record = self.smart.records.find_code(code)
        if record is None or record.client_id != client.get_client_id():
            return None
        if record.used:
            self.smart.records.revoke_family(record.family)
            self.smart.audit("token", "denied", client_id=record.client_id,
                             patient=record.patient, detail="authorization code reused")
            return None
        if record.expires_at < time.time():
            return None
        return record

    def delete_authorization_code(self, authorization_code: CodeRecord) -> None:
        self.smart.records.spend_code(authorization_code)

    def authenticate_user(self, authorization_code: CodeRecord) -> AuthorizedUser:
        return AuthorizedUser(authorization_code.username, authorization_code.fhir_user,
                              authorization_code.patient, authorization_code.encounter,
                              authorization_code.auth_time)

    def validate_token_request(self):
        super().validate_token_request()
        # Spend the code before any token exists, so two racing requests get one token.
        if not self.smart.records.spend_code(self.request.authorization_code):
            self.smart.records.revoke_family(self.request.authorization_code.family)
            from authlib.oauth2.rfc6749.errors import InvalidGrantError

            raise InvalidGrantError("The authorization code was already used.")
