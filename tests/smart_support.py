"""Helpers for the SMART suites: a gateway with SMART on, and the browser side of a launch
(sign in, consent) driven over real HTTP the way a patient's browser would."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx

REDIRECT = "http://127.0.0.1:9/callback"
PASSWORD = "correct horse battery"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    assert match, f"no hidden field {name!r} in page"
    return match.group(1)


@dataclass
class SmartEnv:
    live: object  # tests.conftest.LiveGateway
    smart: object  # smart_launch.server.SmartServer
    browser: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def base(self) -> str:
        return self.live.base

    @property
    def auth(self) -> str:
        return self.live.base[: -len("/fhir")] + "/auth"

    def authorize_params(self, client_id: str, scope: str, challenge: str, *,
                         redirect_uri: str = REDIRECT, state: str = "st-1",
                         launch: str | None = None, **extra) -> dict:
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                  "scope": scope, "state": state, "aud": self.base,
                  "code_challenge": challenge, "code_challenge_method": "S256", **extra}
        if launch:
            params["launch"] = launch
        return {k: v for k, v in params.items() if v is not None}

    def sign_in(self, params: dict, username: str, password: str = PASSWORD,
                otp: str | None = None) -> httpx.Response:
        page = self.browser.get(f"{self.auth}/authorize", params=params)
        assert page.status_code == 200, page.text
        return self.browser.post(f"{self.auth}/login", data={
            "pending": hidden(page.text, "pending"), "username": username,
            "password": password, "otp": otp or ""})

    def consent(self, consent_page: httpx.Response, *, grants: list[str] | None = None,
                narrow: dict[str, str] | None = None, patient: str | None = None,
                decision: str = "allow") -> httpx.Response:
        assert consent_page.status_code == 200, consent_page.text
        html = consent_page.text
        offered = re.findall(r'name="grant" value="([^"]+)"', html)
        data = {"pending": hidden(html, "pending"), "decision": decision,
                "grant": offered if grants is None else grants}
        for key, value in (narrow or {}).items():
            data[f"narrow:{key}"] = value
        if patient:
            data["patient"] = patient
        return self.browser.post(f"{self.auth}/consent", data=data)

    def code_for(self, client_id: str, username: str, scope: str, **kw) -> tuple[str, str]:
        """Run the browser side of a launch; return (code, verifier)."""
        verifier, challenge = pkce_pair()
        params = self.authorize_params(client_id, scope, challenge,
                                       launch=kw.pop("launch", None))
        redirect = self.consent(self.sign_in(params, username), **kw)
        assert redirect.status_code == 302, redirect.text
        query = parse_qs(urlsplit(redirect.headers["location"]).query)
        assert query["state"] == ["st-1"]
        return query["code"][0], verifier

    def token(self, **data) -> httpx.Response:
        auth = data.pop("basic", None)
        return httpx.post(f"{self.auth}/token", data=data, auth=auth, timeout=30)

    def patient_token(self, client_id: str, username: str,
                      scope: str = "launch/patient openid fhirUser patient/*.cruds") -> dict:
        code, verifier = self.code_for(client_id, username, scope)
        resp = self.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                          client_id=client_id, code_verifier=verifier)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def fhir(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.base + "/", timeout=30,
                            headers={"Authorization": f"Bearer {token}",
                                     "Accept": "application/fhir+json"})


def smart_env_for(live) -> SmartEnv:
    """The usual cast on a live gateway with SMART on: a public app `app-public`, patients
    `ann` (pat-0001) and `bob` (pat-0002), and a proxy `carol` for pat-0001 and pat-0003."""
    smart = live.app.extensions["smart"]
    smart.clients.add("app-public", "public", redirect_uris=[REDIRECT])
    smart.accounts.add("ann", PASSWORD, fhir_user="Patient/pat-0001", patients=["pat-0001"])
    smart.accounts.add("bob", PASSWORD, fhir_user="Patient/pat-0002", patients=["pat-0002"])
    smart.accounts.add("carol", PASSWORD, fhir_user="Patient/pat-0001",
                       patients=["pat-0001", "pat-0003"])
    return SmartEnv(live, smart)
