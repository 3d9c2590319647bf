"""How the gateway authenticates to the EHR: nothing, a static bearer token, or SMART Backend
Services (client_credentials with a signed JWT assertion, RFC 7523 / SMART 2.2 section 7).

Each gives the outbound client the `Authorization` value to send (`authorization()`); one that
`renews` is asked once more, for a renewed token, when the EHR answers 401. The app's own SMART
token never leaves the gateway: the EHR sees only the gateway's credentials.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import import_key

from adapters.errors import UpstreamError
from adapters.fhir_rest.settings import RestSettings

log = logging.getLogger("adapters.fhir_rest.auth")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
EARLY = 60  # renew a token this many seconds before it expires


class BearerAuth:
    """A static token the clinic configured: nothing to renew."""

    renews = False

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def authorization(self, renew: bool = False) -> str:
        return self._header


class BackendServicesAuth:
    """Fetch and cache an access token with a signed client assertion; renew it shortly before
    it expires, and once more if the EHR answers 401 (it may have revoked it)."""

    def __init__(self, settings: RestSettings, token_client: httpx.Client) -> None:
        if not settings.client_id or not settings.private_key_pem:
            raise ValueError("backend-services auth needs a client_id and a private key")
        self._s = settings
        loaded = serialization.load_pem_private_key(settings.private_key_pem, password=None)
        kty = "EC" if isinstance(loaded, ec.EllipticCurvePrivateKey) else "RSA"
        self._key = import_key(settings.private_key_pem, kty)
        self._alg = "ES384" if kty == "EC" else "RS384"
        self._http = token_client
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self._token_url = settings.token_url

    def token_url(self) -> str:
        if not self._token_url:
            url = self._s.base_url.rstrip("/") + "/.well-known/smart-configuration"
            try:
                found = self._http.get(url, headers={"Accept": "application/json"}).json()
                self._token_url = found["token_endpoint"]
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                log.warning("no token_endpoint in %s", url)  # for the operator, not apps
                raise UpstreamError("The EHR's SMART configuration names no token endpoint; "
                                    "set fhir_rest.token_url") from None
        return self._token_url

    def assertion(self) -> str:
        now = int(time.time())
        header = {"alg": self._alg, "typ": "JWT"}
        if self._s.key_id:
            header["kid"] = self._s.key_id
        claims = {"iss": self._s.client_id, "sub": self._s.client_id, "aud": self.token_url(),
                  "jti": uuid.uuid4().hex, "iat": now, "exp": now + 240}
        return jwt.encode(header, claims, self._key, algorithms=[self._alg])

    def token(self, force: bool = False) -> str:
        with self._lock:
            if not force and self._token and time.time() < self._expires - EARLY:
                return self._token
            resp = self._http.post(self.token_url(), data={
                "grant_type": "client_credentials", "scope": self._s.scope,
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion()})
            try:
                body = resp.json()
                token = body["access_token"]
            except (ValueError, KeyError, TypeError):
                token, body = None, {}
            if resp.status_code != 200 or not isinstance(token, str):
                # The EHR's error code only: its description may echo the assertion.
                raise UpstreamError("The EHR refused the gateway's backend-services credentials "
                                    f"({resp.status_code} {body.get('error', '')})".rstrip())
            self._token = token
            self._expires = time.time() + float(body.get("expires_in") or 300)
            return token

    renews = True

    def authorization(self, renew: bool = False) -> str:
        return f"Bearer {self.token(force=renew)}"


def make_auth(settings: RestSettings,
              token_client: httpx.Client) -> BearerAuth | BackendServicesAuth | None:
    if settings.auth == "none":
        return None
    if settings.auth == "bearer":
        if not settings.bearer_token:
            raise ValueError("bearer auth needs a token")
        return BearerAuth(settings.bearer_token)
    if settings.auth == "backend-services":
        return BackendServicesAuth(settings, token_client)
    raise ValueError(f"unknown auth {settings.auth!r}")
