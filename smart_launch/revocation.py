"""Token revocation (RFC 7009): a revoked token fails on its next use.

Revoking a refresh token revokes its whole family (every access token issued from the same
authorization). A client may revoke only its own tokens; unknown tokens answer 200 as the RFC
asks, so the endpoint reveals nothing.
"""

from __future__ import annotations

from authlib.oauth2.rfc7009 import RevocationEndpoint

from smart_launch.introspection import AccessTokenRecord, find_token


class SmartRevocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post",
                           "private_key_jwt"]

    def query_token(self, token_string, token_type_hint):
        return find_token(self.server.smart, token_string, token_type_hint)

    def authenticate_token(self, request, client):
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        if token is not None and token.get_client_id() == client.get_client_id():
            return token
        return None

    def revoke_token(self, token, request) -> None:
        smart = self.server.smart
        if isinstance(token, AccessTokenRecord):
            smart.records.revoke_access_token(token.claims["jti"])
            patient = token.claims.get("patient")
        else:
            smart.records.revoke_family(token.family)
            patient = token.patient
        smart.audit("revoke", "allowed", client_id=token.get_client_id(), patient=patient)
