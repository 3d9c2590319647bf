"""SMART discovery: `.well-known/smart-configuration` and the CapabilityStatement's `oauth-uris`.

Python's `fhirclient` reads only the CapabilityStatement extension; browser clients read the
well-known document. Both are built from the same endpoint table here.
"""

from __future__ import annotations

from dataclasses import dataclass

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
CAPABILITIES = [
    "launch-ehr", "launch-standalone", "authorize-post",
    "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
    "sso-openid-connect", "context-banner", "context-style",
    "context-ehr-patient", "context-ehr-encounter", "context-standalone-patient",
    "permission-offline", "permission-online", "permission-patient", "permission-user",
    "permission-v1", "permission-v2",
]
SCOPES_SUPPORTED = [
    "openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
    "offline_access", "online_access",
    "patient/*.read", "patient/*.rs", "patient/*.cruds", "user/*.read", "user/*.rs",
    "user/*.cruds", "system/*.read", "system/*.rs", "system/*.cruds",
]


@dataclass(frozen=True)
class Endpoints:
    """Absolute URLs of the authorization server, from the public FHIR base."""

    fhir_base: str

    @property
    def root(self) -> str:
        base = self.fhir_base.rstrip("/")
        return base[: -len("/fhir")] if base.endswith("/fhir") else base

    @property
    def issuer(self) -> str:
        return self.fhir_base.rstrip("/")

    def url(self, name: str) -> str:
        return f"{self.root}/auth/{name}"

    @property
    def token(self) -> str:
        return self.url("token")


def smart_configuration(ep: Endpoints) -> dict:
    return {
        "issuer": ep.issuer,
        "jwks_uri": ep.url("jwks"),
        "authorization_endpoint": ep.url("authorize"),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint": ep.token,
        "token_endpoint_auth_methods_supported": [
            "none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "management_endpoint": ep.root + "/portal/privacy",
        "introspection_endpoint": ep.url("introspect"),
        "revocation_endpoint": ep.url("revoke"),
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }


def openid_configuration(ep: Endpoints) -> dict:
    return {
        "issuer": ep.issuer,
        "authorization_endpoint": ep.url("authorize"),
        "token_endpoint": ep.token,
        "jwks_uri": ep.url("jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "fhirUser", "name"],
    }


def oauth_uris_extension(ep: Endpoints) -> dict:
    """The `rest.security` of the CapabilityStatement, with the SMART oauth-uris extension."""
    return {
        "cors": True,
        "service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR"}], "text": "OAuth2 using SMART-on-FHIR profile"}],
        "extension": [{
            "url": OAUTH_URIS,
            "extension": [
                {"url": "authorize", "valueUri": ep.url("authorize")},
                {"url": "token", "valueUri": ep.token},
                {"url": "introspect", "valueUri": ep.url("introspect")},
                {"url": "revoke", "valueUri": ep.url("revoke")},
                {"url": "manage", "valueUri": ep.root + "/portal/privacy"},
            ],
        }],
    }
