"""smart: SMART App Launch discovery, PKCE, token rules, refresh, revocation, introspection."""

from __future__ import annotations

from typing import Any

import httpx

from conformance import smart_client
from conformance.checks.util import expect_status
from conformance.client import json_body
from conformance.context import RunContext, Session
from conformance.model import SMART_SPEC, Fail, Severity, Skip, check

RFC6750 = "https://www.rfc-editor.org/rfc/rfc6750#section-3.1"
LAUNCH = f"{SMART_SPEC}/app-launch.html"


def config(ctx: RunContext) -> dict[str, Any]:
    if ctx.smart_config is None:
        try:
            ctx.smart_config = smart_client.discover(ctx.http)
        except smart_client.LaunchError as exc:
            raise Skip(f"the server does not offer SMART: {exc}") from None
    return ctx.smart_config


def _need_launch(ctx: RunContext) -> tuple[str, str]:
    if not ctx.options.smart_client or not ctx.options.patient_logins:
        raise Skip("needs --smart-client and --patient-login to run launches")
    return ctx.options.patient_logins[0]


def attempt(ctx: RunContext, *, method: str = "S256", aud: str | None = None,
            challenge: str | None = None) -> tuple[smart_client.Outcome, str, str]:
    """One authorization (sign-in, consent) with variations; (outcome, verifier, state)."""
    login = _need_launch(ctx)
    verifier, s256 = smart_client.pkce_pair()
    params = smart_client.authorize_params(ctx.options, challenge or s256, method=method,
                                           aud=aud)
    out = smart_client.browse(ctx.http, config(ctx)["authorization_endpoint"], params,
                              ctx.options.redirect_uri, login)
    return out, verifier, params["state"]


def fresh_session(ctx: RunContext) -> tuple[Session, httpx.Response]:
    """A new launch (so a check may spend its tokens); the session and token response."""
    out, verifier, _ = attempt(ctx)
    if not out.code:
        raise Fail("a normal launch (S256, right aud) gave no code")
    resp = smart_client.exchange(ctx.http, config(ctx), ctx.options, out.code, verifier)
    body = json_body(resp)
    if resp.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
        raise Fail(f"the code exchange answered {resp.status_code}")
    return Session(body["access_token"], patient=body.get("patient"), scope=body.get("scope",
                   ""), refresh_token=body.get("refresh_token"), response=body), resp


def _protected_path(ctx: RunContext) -> str:
    pid = ctx.patient
    return f"Patient/{pid}" if pid else "Patient"


@check("smart.discovery", "smart", f"{SMART_SPEC}/conformance.html#metadata")
def discovery(ctx: RunContext) -> str | None:
    """.well-known/smart-configuration is JSON with the required fields"""
    resp = ctx.http.get(".well-known/smart-configuration", token=None, accept="application/json")
    if resp.status_code == 404 and not ctx.options.smart_client:
        raise Skip("the server serves no .well-known/smart-configuration")
    expect_status(resp, 200)
    body = json_body(resp)
    if not isinstance(body, dict):
        raise Fail(f"the discovery document is not JSON ({resp.headers.get('content-type')})")
    missing = [f for f in ("authorization_endpoint", "token_endpoint", "capabilities",
                           "code_challenge_methods_supported", "grant_types_supported")
               if not body.get(f)]
    if "sso-openid-connect" in (body.get("capabilities") or []):
        missing += [f for f in ("issuer", "jwks_uri") if not body.get(f)]
    if missing:
        raise Fail(f"the discovery document lacks {', '.join(missing)}")
    ctx.smart_config = body
    return f"{len(body.get('capabilities') or [])} capabilities"


@check("smart.s256-only", "smart", f"{LAUNCH}#considerations-for-pkce-support")
def s256_only(ctx: RunContext) -> str | None:
    """code_challenge_methods_supported has S256 and not plain"""
    # Discovered afresh (not the cached configuration), so the answer judged is the evidence.
    try:
        conf = smart_client.discover(ctx.http)
    except smart_client.LaunchError as exc:
        raise Skip(f"the server does not offer SMART: {exc}") from None
    methods = conf.get("code_challenge_methods_supported") or []
    if "S256" not in methods:
        raise Fail(f"code_challenge_methods_supported is {methods}: no S256")
    if "plain" in methods:
        raise Fail("code_challenge_methods_supported offers plain")
    return None


@check("smart.no-token-401", "smart", RFC6750)
def no_token(ctx: RunContext) -> str | None:
    """A FHIR request without a token is 401 with WWW-Authenticate"""
    config(ctx)
    resp = ctx.http.get(_protected_path(ctx), token=None)
    expect_status(resp, 401, what=f"GET {_protected_path(ctx)} without a token")
    if "bearer" not in resp.headers.get("www-authenticate", "").lower():
        raise Fail("the 401 has no WWW-Authenticate: Bearer header")
    return None


@check("smart.bad-token-401", "smart", RFC6750)
def bad_token(ctx: RunContext) -> str | None:
    """A FHIR request with a made-up token is 401"""
    config(ctx)
    for token in ("conformance-not-a-token", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."):
        resp = ctx.http.get(_protected_path(ctx), token=token)
        expect_status(resp, 401, what=f"GET {_protected_path(ctx)} with a made-up token")
    return None


@check("smart.pkce-plain-refused", "smart", f"{LAUNCH}#considerations-for-pkce-support")
def pkce_plain(ctx: RunContext) -> str | None:
    """An authorization with code_challenge_method=plain never yields a token"""
    verifier, _ = smart_client.pkce_pair()
    out, _, _ = attempt(ctx, method="plain", challenge=verifier)
    if not out.code:
        return "refused at authorization"
    resp = smart_client.exchange(ctx.http, config(ctx), ctx.options, out.code, verifier)
    if resp.status_code == 200 and "access_token" in (json_body(resp) or {}):
        raise Fail("plain PKCE was accepted: the code was exchanged for a token")
    return "code issued, but refused at the token endpoint"


@check("smart.pkce-verifier", "smart", "https://www.rfc-editor.org/rfc/rfc7636#section-4.6")
def pkce_verifier(ctx: RunContext) -> str | None:
    """The token endpoint refuses a wrong or missing code_verifier"""
    for verifier, label in (("conformance-wrong-verifier-" + "x" * 30, "a wrong"),
                            (None, "no")):
        out, _, _ = attempt(ctx)
        if not out.code:
            raise Fail("a normal launch gave no code")
        resp = smart_client.exchange(ctx.http, config(ctx), ctx.options, out.code, verifier)
        if resp.status_code == 200:
            raise Fail(f"the code was exchanged with {label} code_verifier")
        expect_status(resp, 400, 401, what=f"code exchange with {label} verifier")
    return None


@check("smart.wrong-aud", "smart", f"{LAUNCH}#obtain-authorization-code")
def wrong_aud(ctx: RunContext) -> str | None:
    """An authorization for another server's aud gets no code"""
    out, _, _ = attempt(ctx, aud="https://conformance.invalid/fhir")
    if out.code:
        raise Fail("aud=https://conformance.invalid/fhir still got an authorization code")
    return f"refused ({out.error or 'error page'})"


@check("smart.token-response", "smart", f"{LAUNCH}#response-5")
def token_response(ctx: RunContext) -> str | None:
    """The token response is no-store and carries access_token, token_type, scope, patient"""
    session, resp = fresh_session(ctx)
    if "no-store" not in resp.headers.get("cache-control", ""):
        raise Fail(f"the token response has Cache-Control "
                   f"{resp.headers.get('cache-control') or 'missing'}, not no-store")
    body = session.response
    missing = [f for f in ("access_token", "token_type", "scope", "expires_in") if f not in body]
    if missing:
        raise Fail(f"the token response lacks {', '.join(missing)}")
    if str(body["token_type"]).lower() != "bearer":
        raise Fail(f"token_type is {body['token_type']!r}, not Bearer")
    if "launch/patient" in smart_client.default_scope(ctx.options) and not body.get("patient"):
        raise Fail("launch/patient was granted but the response names no patient")
    return None


@check("smart.refresh-subset", "smart", f"{LAUNCH}#refresh-access-token")
def refresh_subset(ctx: RunContext) -> str | None:
    """A refresh grants at most the original scopes, and a wider scope is refused"""
    session, _ = fresh_session(ctx)
    if not session.refresh_token:
        raise Skip("no refresh_token was issued (offline_access not granted)")
    original = set(session.scope.split())
    narrower = [s for s in session.scope.split() if s not in ("openid", "fhirUser")]
    token_url = config(ctx)["token_endpoint"]
    auth = ((ctx.options.smart_client, ctx.options.client_secret)
            if ctx.options.client_secret else None)
    base = {"grant_type": "refresh_token", "client_id": ctx.options.smart_client}
    resp = ctx.http.post(token_url, data={**base, "refresh_token": session.refresh_token,
                                          "scope": " ".join(narrower)},
                         token=None, accept="application/json", auth=auth)
    expect_status(resp, 200, what="refresh with a narrower scope")
    body = json_body(resp) or {}
    granted = set(str(body.get("scope", "")).split())
    if not granted <= original:
        raise Fail(f"the refresh granted {sorted(granted - original)} beyond the original")
    wider = " ".join(sorted(original | {"user/*.cruds", "system/*.cruds"}))
    refresh = body.get("refresh_token") or session.refresh_token
    resp = ctx.http.post(token_url, data={**base, "refresh_token": refresh, "scope": wider},
                         token=None, accept="application/json", auth=auth)
    if resp.status_code == 200:
        granted = set(str((json_body(resp) or {}).get("scope", "")).split())
        if not granted <= original:
            raise Fail(f"a refresh asking for more was granted {sorted(granted - original)}")
    return None


@check("smart.revoked-refused", "smart", "https://www.rfc-editor.org/rfc/rfc7009#section-2")
def revoked(ctx: RunContext) -> str | None:
    """A revoked access token is refused (401) on its next use"""
    url = config(ctx).get("revocation_endpoint")
    if not url:
        raise Skip("the server declares no revocation_endpoint")
    session, _ = fresh_session(ctx)
    path = f"Patient/{session.patient}" if session.patient else "Patient"
    before = ctx.http.get(path, token=session.access_token)
    expect_status(before, 200, what="the fresh token before revocation")
    auth = ((ctx.options.smart_client, ctx.options.client_secret)
            if ctx.options.client_secret else None)
    resp = ctx.http.post(url, data={"token": session.access_token,
                                    "client_id": ctx.options.smart_client},
                         token=None, accept="application/json", auth=auth)
    expect_status(resp, 200, what="revocation")
    after = ctx.http.get(path, token=session.access_token)
    expect_status(after, 401, what="the revoked token")
    return None


@check("smart.introspection", "smart", "https://www.rfc-editor.org/rfc/rfc7662#section-2.2",
       severity=Severity.RECOMMENDED)
def introspection(ctx: RunContext) -> str | None:
    """Introspection says active with scope, client_id, exp (and patient); junk is inactive"""
    url = config(ctx).get("introspection_endpoint")
    if not url:
        raise Skip("the server declares no introspection_endpoint")
    if not ctx.options.client_secret:
        raise Skip("introspection needs a confidential client (--client-secret)")
    if not ctx.sessions:
        raise Skip("no token to introspect")
    auth = (ctx.options.smart_client, ctx.options.client_secret)
    resp = ctx.http.post(url, data={"token": ctx.sessions[0].access_token}, token=None,
                         accept="application/json", auth=auth)
    expect_status(resp, 200)
    body = json_body(resp) or {}
    if body.get("active") is not True:
        raise Fail("a live token is introspected as not active")
    missing = [f for f in ("scope", "client_id", "exp") if f not in body]
    if ctx.sessions[0].patient and "patient" not in body:
        missing.append("patient")
    if missing:
        raise Fail(f"the introspection response lacks {', '.join(missing)}")
    junk = ctx.http.post(url, data={"token": "conformance-not-a-token"}, token=None,
                         accept="application/json", auth=auth)
    if (json_body(junk) or {}).get("active") is not False:
        raise Fail("a made-up token is not introspected as active: false")
    return None
