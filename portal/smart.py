"""The SMART App Launch as a client, with `fhirclient` doing the OAuth work server-side.

fhirclient builds the authorize URL (PKCE S256, `state`, `aud`, `launch` or
`launch/patient`), checks `state` on the callback and exchanges the code; its whole state
(tokens included) is a dict the portal keeps in its server-side session store. fhirclient has
no RFC 7009 revocation, so `revoke` posts to the `revocation_endpoint` the server lists in
`.well-known/smart-configuration`.
"""

from __future__ import annotations

import logging

import httpx
import requests
from fhirclient import client as fhir_client

from portal.settings import PortalSettings

log = logging.getLogger("portal.smart")
TIMEOUT = 20


class _TimeoutSession(requests.Session):
    """fhirclient's HTTP session with a timeout on every call (it sets none itself), so a
    server that hangs cannot hold a portal worker forever."""

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", TIMEOUT)
        return super().request(*args, **kwargs)


class LaunchFailed(Exception):
    """The launch did not end with a token (denied, bad state, server refused the code)."""


def _client(settings: PortalSettings, state: dict | None = None,
            launch_token: str | None = None) -> fhir_client.FHIRClient:
    if state is not None:
        smart = fhir_client.FHIRClient(state=state)
    else:
        smart = fhir_client.FHIRClient(settings={
            "app_id": settings.client_id, "api_base": settings.fhir_base,
            "redirect_uri": settings.redirect_uri, "scope": settings.scope,
            "launch_token": launch_token})
    smart.server.session = _TimeoutSession()
    return smart


def start_launch(settings: PortalSettings, launch_token: str | None = None) -> tuple[dict, str]:
    """Begin a standalone (no `launch_token`) or EHR launch: (client state, authorize URL)."""
    smart = _client(settings, launch_token=launch_token)
    try:
        url = smart.authorize_url
    except Exception as exc:  # noqa: BLE001 - discovery failures are many kinds
        raise LaunchFailed(f"discovery failed: {type(exc).__name__}") from None
    if not url:
        raise LaunchFailed("the server offers no SMART authorize endpoint")
    return smart.state, url


def finish_launch(state: dict, callback_url: str) -> dict:
    """Check the callback's `state` and exchange its code; the new client state."""
    smart = _client(None, state)  # type: ignore[arg-type]
    try:
        smart.handle_callback(callback_url)
    except Exception as exc:  # noqa: BLE001 - fhirclient raises bare Exceptions
        raise LaunchFailed(type(exc).__name__) from None
    if not smart.server.auth.access_token or not smart.patient_id:
        raise LaunchFailed("no token or no patient in the token response")
    return smart.state


def refresh(state: dict) -> dict:
    """A new access token from the refresh token (fhirclient `reauthorize`); the new state.

    The portal asks for `online_access`, so a signed-in patient keeps working past the access
    token's lifetime, up to the portal's own absolute session limit."""
    smart = _client(None, state)  # type: ignore[arg-type]
    if not (smart.server and smart.server.auth and smart.server.auth.refresh_token):
        raise LaunchFailed("no refresh token")
    try:
        smart.reauthorize()
    except Exception as exc:  # noqa: BLE001 - fhirclient raises bare Exceptions
        raise LaunchFailed(f"refresh refused: {type(exc).__name__}") from None
    if not smart.server.auth.access_token:
        raise LaunchFailed("no access token after refresh")
    return smart.state


def access_token(state: dict) -> str:
    """The access token held in a client state."""
    return ((state.get("server") or {}).get("auth") or {}).get("access_token") or ""


def patient_id(state: dict) -> str:
    """The patient in context."""
    return state.get("patient_id") or ""


def launch_context(state: dict) -> dict:
    """What the token response said besides the token (patient, need_patient_banner...)."""
    return state.get("launch_context") or {}


def revoke(settings: PortalSettings, state: dict | None) -> bool:
    """Revoke the access (and refresh) token at the server, best effort; True when it said 200."""
    if not state:
        return False
    auth = (state.get("server") or {}).get("auth") or {}
    tokens = [t for t in (auth.get("refresh_token"), auth.get("access_token")) if t]
    if not tokens:
        return False
    try:
        config = httpx.get(settings.fhir_base.rstrip("/") + "/.well-known/smart-configuration",
                           timeout=10).json()
        endpoint = config.get("revocation_endpoint")
        if not endpoint:
            return False
        ok = True
        for token in tokens:
            resp = httpx.post(endpoint, data={"token": token, "client_id": settings.client_id},
                              timeout=10)
            ok = ok and resp.status_code == 200
        return ok
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("token revocation failed: %s", type(exc).__name__)
        return False
