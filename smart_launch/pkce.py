"""PKCE (RFC 7636) as SMART App Launch 2.2 requires it: `S256` only, always."""

from __future__ import annotations

from authlib.oauth2.rfc7636 import CodeChallenge


class S256CodeChallenge(CodeChallenge):
    """authlib's CodeChallenge, required, with `plain` refused."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def __init__(self) -> None:
        super().__init__(required=True)

    def get_authorization_code_challenge(self, authorization_code) -> str | None:
        return authorization_code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code) -> str | None:
        return authorization_code.code_challenge_method
