"""The SMART authorization server assembled from authlib parts.

`SmartServer` owns the state (clients, codes, tokens, keys, accounts) and an authlib
`AuthorizationServer` with: the authorization code grant (PKCE S256 required, OpenID Connect
id_token), refresh with rotation, backend services (`client_credentials` + `private_key_jwt`),
introspection and revocation. The gateway hands it an audit callable and a patient lookup, so
this package never imports the gateway or the adapters.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from sqlalchemy import Engine

from smart_launch.access_token import SmartTokenGenerator, TokenVerifier
from smart_launch.accounts import AccountStore
from smart_launch.authorization_code import SmartAuthorizationCodeGrant
from smart_launch.backend_services import BackendServicesGrant, PrivateKeyJWT
from smart_launch.clients import ClientRegistry
from smart_launch.db import metadata
from smart_launch.discovery import Endpoints
from smart_launch.introspection import SmartIntrospection
from smart_launch.keys import SigningKeys
from smart_launch.pkce import S256CodeChallenge
from smart_launch.records import Records
from smart_launch.refresh import SmartRefreshTokenGrant
from smart_launch.revocation import SmartRevocation
from smart_launch.scopes import parse_scopes
from smart_launch.secrets_box import SecretBox

OFFLINE_FAMILY_SECONDS = 90 * 24 * 3600
ONLINE_FAMILY_SECONDS = 12 * 3600
STYLE_PATH = "/auth/smart-style.json"

AuditFn = Callable[..., None]


def _no_audit(*_args, **_kwargs) -> None:
    return None


@dataclass
class SmartServer:
    """Everything the SMART endpoints need, built once per app."""

    endpoints: Endpoints
    engine: Engine
    data_dir: Path
    audit: AuditFn = _no_audit
    patient_name: Callable[[str], str | None] = field(default=lambda _pid: None)
    clients: ClientRegistry = field(init=False)
    records: Records = field(init=False)
    keys: SigningKeys = field(init=False)
    accounts: AccountStore = field(init=False)
    verifier: TokenVerifier = field(init=False)
    oauth: AuthorizationServer = field(init=False)

    def __post_init__(self) -> None:
        metadata.create_all(self.engine)
        self.clients = ClientRegistry(self.engine)
        self.records = Records(self.engine)
        self.keys = SigningKeys(self.data_dir / "keys" / "smart")
        box = SecretBox.from_file(self.data_dir / "keys" / "secrets.key")
        self.accounts = AccountStore(self.engine, box)
        self.verifier = TokenVerifier(self.issuer, self.audience, self.keys, self.records)

    @property
    def issuer(self) -> str:
        return self.endpoints.issuer

    @property
    def audience(self) -> str:
        return self.endpoints.fhir_base.rstrip("/")

    def init_app(self, app) -> AuthorizationServer:
        server = AuthorizationServer(app, query_client=self.clients.get,
                                     save_token=self.save_token)
        server.smart = self
        server.register_token_generator(
            "default", SmartTokenGenerator(self.issuer, self.audience, self.keys))
        server.register_client_auth_method(PrivateKeyJWT.CLIENT_AUTH_METHOD,
                                           PrivateKeyJWT(self.endpoints.token, self))
        server.register_grant(SmartAuthorizationCodeGrant,
                              [S256CodeChallenge(), SmartOpenID(self)])
        server.register_grant(SmartRefreshTokenGrant)
        server.register_grant(BackendServicesGrant)
        server.register_endpoint(SmartIntrospection)
        server.register_endpoint(SmartRevocation)
        self.oauth = server
        return server

    # -- issuing --------------------------------------------------------------------------

    def mint(self, client, scope: str, patient: str | None = None) -> str:
        """An access token issued offline by an administrator (the `token` command)."""
        from smart_launch.context import AuthorizedUser

        scopes = parse_scopes(scope)
        user = AuthorizedUser("admin", None, patient) if patient else None
        grant_type = "client_credentials" if all(g.context == "system"
                                                  for g in scopes.grants) else "authorization_code"
        generator = SmartTokenGenerator(self.issuer, self.audience, self.keys)
        token = generator.generate(grant_type, client, user=user, scope=scopes.text(),
                                   include_refresh_token=False)
        claims = _claims(token["access_token"])
        self.records.record_access_token(
            claims["jti"], family=None, client_id=client.get_client_id(),
            username="admin", patient=patient, scope=scopes.text(),
            expires_at=float(claims["exp"]))
        self.audit("token", "allowed", client_id=client.get_client_id(), patient=patient,
                   detail="minted by an administrator")
        return token["access_token"]

    def save_token(self, token: dict, request) -> None:
        """Record the token's jti (for revocation) and add SMART's launch context."""
        claims = _claims(token["access_token"])
        user = request.user
        client = request.client
        code = getattr(request, "authorization_code", None)
        old_refresh = getattr(request, "refresh_token", None)
        family = code.family if code else (old_refresh.family if old_refresh else None)
        self.records.record_access_token(
            claims["jti"], family=family, client_id=client.get_client_id(),
            username=user.username if user else None,
            patient=user.patient if user else None, scope=token.get("scope", ""),
            expires_at=float(claims["exp"]))
        if token.get("refresh_token"):
            if old_refresh:
                expires_at = old_refresh.expires_at
            else:
                offline = parse_scopes(token.get("scope", "")).offline_access
                expires_at = time.time() + (OFFLINE_FAMILY_SECONDS if offline
                                            else ONLINE_FAMILY_SECONDS)
            self.records.save_refresh(
                token["refresh_token"], family=family or claims["jti"], expires_at=expires_at,
                client_id=client.get_client_id(), username=user.username,
                fhir_user=user.fhir_user, patient=user.patient, encounter=user.encounter,
                scope=token.get("scope", ""))
        if user is not None:
            if user.patient:
                token["patient"] = user.patient
                token["need_patient_banner"] = True
            if user.encounter:
                token["encounter"] = user.encounter
            token["smart_style_url"] = self.endpoints.root + STYLE_PATH
        self.audit("token", "allowed", client_id=client.get_client_id(),
                   user=user.fhir_user if user else None,
                   patient=user.patient if user else None,
                   detail=request.payload.grant_type if request.payload else None)


def _claims(jwt_text: str) -> dict:
    payload = jwt_text.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class SmartOpenID(OpenIDCode):
    """id_token (RS256, with `fhirUser`) when `openid fhirUser` is granted."""

    def __init__(self, smart: SmartServer) -> None:
        super().__init__(require_nonce=False)
        self.smart = smart

    def resolve_client_private_key(self, client):
        return self.smart.keys.private_set()

    def get_client_algorithm(self, client) -> str:
        return "RS256"

    def get_encode_header(self, client) -> dict:
        return {"alg": "RS256", "kid": self.smart.keys.kid}

    def get_client_claims(self, client) -> dict:
        return {"iss": self.smart.issuer, "aud": [client.get_client_id()],
                "exp": int(time.time()) + 3600}

    def exists_nonce(self, nonce, request) -> bool:
        return False

    def generate_user_info(self, user, scope) -> UserInfo:
        info = UserInfo(sub=user.username)
        if user.fhir_user and "fhirUser" in scope.split():
            info["fhirUser"] = f"{self.smart.audience}/{user.fhir_user}"
        if "profile" in scope.split():
            account = self.smart.accounts.get(user.username)
            if account and account.display_name:
                info["name"] = account.display_name
        return info
