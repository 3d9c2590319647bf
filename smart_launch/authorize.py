"""The authorization endpoint with SMART's patient-facing steps: sign in, pick, consent.

GET or POST `/auth/authorize` (SMART `authorize-post`). The client and its redirect URI are
checked first: an unknown app or an unregistered redirect URI gets an error page and is never
redirected to. Then state, `aud`, PKCE (S256) and scopes; errors from here on go back to the app.
The steps in between carry their state in a signed, short-lived `pending` value bound to a
browser cookie, so nothing is kept server-side for an abandoned sign-in. The code itself is
issued by authlib, from the original request with the scope the patient granted.
"""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlencode

from authlib.oauth2 import OAuth2Error
from flask import (
    Blueprint,
    Response,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
)
from itsdangerous import BadSignature, URLSafeTimedSerializer

from smart_launch.accounts import LoginError
from smart_launch.context import AuthorizedUser
from smart_launch.db import digest
from smart_launch.scopes import Grant, ScopeError, ScopeSet, describe, parse_scopes

bp = Blueprint("smart_authorize", __name__, template_folder="templates")
COOKIE = "smart_auth"
PENDING_SECONDS = 600
OAUTH_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "aud",
                "code_challenge", "code_challenge_method", "launch", "nonce")
NARROWER = {  # a patient may grant one category instead of all Observations
    "Observation": (("vital-signs", "your vital signs"), ("laboratory", "your lab results")),
}


def _smart():
    return current_app.extensions["smart"]


def _signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="smart.pending")


def _error_page(title: str, message: str, status: int = 400) -> Response:
    return make_response(render_template("error.html", title=title, message=message), status)


def _redirect_error(redirect_uri: str, error: str, description: str,
                    state: str | None) -> Response:
    params = {"error": error, "error_description": description}
    if state:
        params["state"] = state
    sep = "&" if "?" in redirect_uri else "?"
    return redirect(f"{redirect_uri}{sep}{urlencode(params)}", code=302)


def _pending(data: dict, browser: str) -> str:
    return _signer().dumps(dict(data, b=digest(browser)))


def _load_pending() -> dict | None:
    token = request.form.get("pending", "")
    browser = request.cookies.get(COOKIE, "")
    try:
        data = _signer().loads(token, max_age=PENDING_SECONDS)
    except BadSignature:
        return None
    if not browser or data.get("b") != digest(browser):
        return None
    return data


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    smart = _smart()
    params = {k: request.values.get(k) for k in OAUTH_PARAMS if request.values.get(k)}
    client = smart.clients.get(params.get("client_id"))
    if client is None:
        return _error_page("Unknown app", "This app is not registered with the clinic.")
    redirect_uri = params.get("redirect_uri", "")
    if not client.check_redirect_uri(redirect_uri):
        return _error_page("Unknown return address",
                           "The app asked to return to an address it did not register.")
    state = params.get("state")
    if params.get("response_type") != "code":
        return _redirect_error(redirect_uri, "unsupported_response_type",
                               "Only response_type=code is supported.", state)
    if not state:
        return _redirect_error(redirect_uri, "invalid_request", "state is required.", None)
    if (params.get("aud") or "").rstrip("/") != smart.audience:
        smart.audit("authorize", "denied", client_id=client.client_id, detail="wrong aud")
        return _redirect_error(redirect_uri, "invalid_request",
                               f"aud must be this FHIR server: {smart.audience}", state)
    try:
        asked = parse_scopes(params.get("scope", ""))  # malformed scopes go back to the app now
    except ScopeError as exc:
        return _redirect_error(redirect_uri, "invalid_scope", str(exc), state)
    if any(grant.context == "system" for grant in asked.grants):
        # A person signs in here: system/ scopes (the whole clinic, no user) are for backend
        # services' client_credentials, never granted through a user's authorization.
        smart.audit("authorize", "denied", client_id=client.client_id, detail="system scope")
        return _redirect_error(redirect_uri, "invalid_scope",
                               "system/ scopes are granted to backend services only "
                               "(client_credentials), not through a user's sign-in.", state)
    launch = None
    if params.get("launch"):
        launch = smart.records.find_launch(params["launch"], client.client_id)
        if launch is None:
            return _redirect_error(redirect_uri, "invalid_request",
                                   "The launch context is unknown or expired.", state)
    try:
        smart.oauth.get_consent_grant(end_user=None)
    except OAuth2Error as exc:
        return _redirect_error(redirect_uri, exc.error, exc.description or exc.error, state)
    browser = request.cookies.get(COOKIE) or secrets.token_urlsafe(24)
    pending = {"p": params, "launch": list(launch) if launch else None}
    resp = make_response(render_template(
        "login.html", title="Sign in", app_name=client.name, action="login",
        pending=_pending(pending, browser), username="", error=None))
    _set_cookie(resp, browser)
    return resp


def _set_cookie(resp: Response, value: str) -> None:
    resp.set_cookie(COOKIE, value, max_age=PENDING_SECONDS, httponly=True, samesite="Lax",
                    secure=request.is_secure, path=f"{request.script_root}/auth")


@bp.post("/login")
def login() -> Response:
    smart = _smart()
    pending = _load_pending()
    if pending is None:
        return _error_page("Sign-in expired", "Please start again from the app.")
    params = pending["p"]
    client = smart.clients.get(params["client_id"])
    username = request.form.get("username", "").strip()
    try:
        account = smart.accounts.authenticate(username, request.form.get("password", ""),
                                              request.form.get("otp") or None)
    except LoginError as exc:
        smart.audit("login", "denied", client_id=params["client_id"], detail=exc.code)
        resp = make_response(render_template(
            "login.html", title="Sign in", app_name=client.name, action="login",
            pending=request.form.get("pending"), username=username, error=str(exc)), 401)
        return resp
    patients = list(account.patients)
    if pending.get("launch"):
        patient, encounter = pending["launch"]
        if patients and patient not in patients:
            smart.audit("login", "denied", client_id=client.client_id,
                        user=account.fhir_user, patient=patient, detail="not your patient")
            return _error_page("Not your record",
                               "You cannot open this record with your account.", 403)
        patients = [patient]
    scopes = parse_scopes(params.get("scope", ""))
    needs_patient = scopes.launch_patient or any(g.context == "patient" for g in scopes.grants)
    if needs_patient and not patients:
        return _redirect_error(params["redirect_uri"], "access_denied",
                               "This account has no patient record to share.",
                               params.get("state"))
    browser = request.cookies.get(COOKIE, "")
    state = dict(pending, user=account.username, fhir_user=account.fhir_user,
                 patients=patients, auth_time=time.time())
    return render_template(
        "consent.html", title="Allow access", app_name=client.name, action="consent",
        pending=_pending(state, browser),
        patients=[{"id": p, "name": smart.patient_name(p) or p} for p in patients],
        items=_consent_items(scopes), offline=scopes.offline_access)


def _consent_items(scopes: ScopeSet) -> list[dict]:
    items = []
    for grant in scopes.grants:
        one = parse_scopes(grant.text())
        narrower = []
        if not grant.query and "r" in grant.permissions and grant.resource_type in NARROWER:
            for code, words in NARROWER[grant.resource_type]:
                narrower.append({"scope": f"{grant.text()}?category={code}", "text": words})
        items.append({"scope": grant.text(), "text": "; ".join(describe(one)),
                      "narrower": narrower})
    return items


def _granted(scopes: ScopeSet) -> str:
    """The scope string the patient granted, never wider than what was asked."""
    chosen = set(request.form.getlist("grant"))
    out: list[str] = []
    for grant in scopes.grants:
        if grant.text() not in chosen:
            continue
        narrow = request.form.get(f"narrow:{grant.text()}", "")
        if narrow and not _narrows(narrow, grant):
            raise ValueError(f"{narrow!r} is not a narrower form of {grant.text()!r}")
        out.append(narrow or grant.text())
    keep = [s for s in scopes.text().split() if "/" not in s or s.startswith("launch")]
    if scopes.offline_access and "offline_access" not in chosen:
        keep = [s for s in keep if s != "offline_access"]
    return " ".join(keep + out)


def _narrows(candidate: str, grant: Grant) -> bool:
    try:
        return parse_scopes(candidate).subset_of(parse_scopes(grant.text()))
    except ScopeError:
        return False


@bp.post("/consent")
def consent() -> Response:
    smart = _smart()
    pending = _load_pending()
    if pending is None or "user" not in pending:
        return _error_page("Sign-in expired", "Please start again from the app.")
    params = dict(pending["p"])
    if request.form.get("decision") != "allow":
        smart.audit("authorize", "denied", client_id=params["client_id"],
                    user=pending["fhir_user"], detail="patient denied")
        return _redirect_error(params["redirect_uri"], "access_denied",
                               "The patient did not allow access.", params.get("state"))
    patient = request.form.get("patient") or (pending["patients"][0]
                                              if pending["patients"] else None)
    if patient is not None and patient not in pending["patients"]:
        return _error_page("Not your record", "You cannot share this record.", 403)
    encounter = pending["launch"][1] if pending.get("launch") else None
    scopes = parse_scopes(params.get("scope", ""))
    try:
        params["scope"] = _granted(scopes)
    except ValueError:  # a tampered form: grant nothing rather than something wider
        return _error_page("Choice not understood", "Please start again from the app.")
    user = AuthorizedUser(pending["user"], pending["fhir_user"], patient, encounter,
                          pending["auth_time"])
    # authlib reads the request it is given from Flask's context: hand it the original
    # authorization request, with the scope the patient granted.
    with current_app.test_request_context("/auth/authorize", method="POST", data=params,
                                          base_url=request.host_url):
        grant = smart.oauth.get_consent_grant(end_user=user)
        response = smart.oauth.create_authorization_response(grant_user=user, grant=grant)
    smart.audit("authorize", "allowed", client_id=params["client_id"], user=user.fhir_user,
                patient=patient, detail=params["scope"])
    resp = make_response(response)
    resp.delete_cookie(COOKIE, path=f"{request.script_root}/auth")
    return resp
