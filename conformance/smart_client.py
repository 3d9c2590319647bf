"""A headless SMART App Launch client (standalone launch), over the run's recording HTTP.

It does what a browser and an app would: discovery, authorize with PKCE S256, fills the
server's sign-in form with a test patient's username/password, accepts the consent page,
exchanges the code. Forms are parsed generically (html.parser), so any server whose sign-in
is plain HTML forms works; a JavaScript-only login cannot, and says so (LaunchError).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from conformance.client import Http, json_body
from conformance.context import Options, Session

MAX_STEPS = 8
ALLOW_WORDS = ("allow", "approve", "authorize", "accept", "yes", "grant", "continue")
DENY_WORDS = ("deny", "cancel", "reject", "no")


class LaunchError(Exception):
    """The launch could not be completed; the message says at which step."""


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def discover(http: Http) -> dict[str, Any]:
    """The SMART configuration: .well-known/smart-configuration, else the CapabilityStatement's
    oauth-uris extension."""
    resp = http.get(".well-known/smart-configuration", token=None, accept="application/json")
    body = json_body(resp)
    if resp.status_code == 200 and isinstance(body, dict) and body.get("token_endpoint"):
        return body
    meta = json_body(http.get("metadata", token=None)) or {}
    for rest in meta.get("rest") or []:
        for ext in (rest.get("security") or {}).get("extension") or []:
            if ext.get("url", "").endswith("/oauth-uris"):
                uris = {e.get("url"): e.get("valueUri") for e in ext.get("extension") or []}
                if uris.get("authorize") and uris.get("token"):
                    return {"authorization_endpoint": uris["authorize"],
                            "token_endpoint": uris["token"],
                            "revocation_endpoint": uris.get("revoke"),
                            "introspection_endpoint": uris.get("introspect")}
    raise LaunchError(f"no SMART configuration at {http.base}/.well-known/smart-configuration "
                      f"({resp.status_code}) nor in the CapabilityStatement")


@dataclass
class Form:
    action: str = ""
    method: str = "get"
    fields: list[dict[str, str]] = field(default_factory=list)
    buttons: list[dict[str, str]] = field(default_factory=list)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._button: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif not self.forms:
            return
        elif tag == "input":
            kind = a.get("type", "text").lower()
            if kind in ("submit", "image"):
                self.forms[-1].buttons.append({"name": a.get("name", ""),
                                               "value": a.get("value", ""), "text": ""})
            else:
                self.forms[-1].fields.append({"type": kind, "name": a.get("name", ""),
                                              "value": a.get("value", ""),
                                              "checked": "checked" in a, "id": a.get("id", "")})
        elif tag == "button" and a.get("type", "submit").lower() == "submit":
            self._button = {"name": a.get("name", ""), "value": a.get("value", ""), "text": ""}
            self.forms[-1].buttons.append(self._button)
        elif tag in ("select", "textarea"):
            self.forms[-1].fields.append({"type": tag, "name": a.get("name", ""), "value": "",
                                          "checked": False, "id": a.get("id", "")})

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button["text"] += data.strip()

    def handle_endtag(self, tag: str) -> None:
        if tag == "button":
            self._button = None


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def fill(form: Form, username: str, password: str) -> dict[str, list[str]]:
    """Field values a patient would submit: the login filled in, every checked box kept,
    the allow button pressed."""
    data: dict[str, list[str]] = {}
    for f in form.fields:
        name, kind = f["name"], f["type"]
        if not name:
            continue
        low = name.lower()
        if kind == "password":
            value = password
        elif kind in ("text", "email") and any(w in low for w in ("user", "login", "email")):
            value = username
        elif kind in ("checkbox", "radio"):
            if not f["checked"]:
                continue
            value = f["value"] or "on"
        else:
            value = f["value"]
        data.setdefault(name, []).append(value)
    buttons = form.buttons
    pressed = next((b for b in buttons if any(w in (b["value"] + b["text"]).lower()
                                               for w in ALLOW_WORDS)), None)
    pressed = pressed or next((b for b in buttons if not any(
        w in (b["value"] + b["text"]).lower() for w in DENY_WORDS)), None)
    if pressed and pressed["name"]:
        data.setdefault(pressed["name"], []).append(pressed["value"])
    return data


@dataclass
class Outcome:
    """Where an authorization attempt ended: a code, an OAuth error, or a page."""

    code: str | None = None
    error: str | None = None
    state: str | None = None
    final: httpx.Response | None = None


def browse(http: Http, authorize_url: str, params: dict[str, str], redirect_uri: str,
           login: tuple[str, str]) -> Outcome:
    """Follow the authorization pages like a browser would, until the redirect back."""
    browser = Http(http.base, timeout=http.timeout,
                   client=httpx.Client(timeout=http.timeout, follow_redirects=False))
    browser.sink = http.sink  # record into the same check's evidence
    browser.secrets = http.secrets | {login[1]} if len(login[1]) >= 4 else http.secrets
    try:
        resp = browser.get(authorize_url, params=params, token=None, accept="text/html")
        signed_in = False
        for _ in range(MAX_STEPS):
            if resp.status_code in (301, 302, 303, 307, 308):
                location = urljoin(str(resp.request.url), resp.headers.get("location", ""))
                if location.startswith(redirect_uri):
                    query = parse_qs(urlsplit(location).query)
                    return Outcome(code=(query.get("code") or [None])[0],
                                   error=(query.get("error") or [None])[0],
                                   state=(query.get("state") or [None])[0], final=resp)
                resp = browser.get(location, token=None, accept="text/html")
                continue
            forms = parse_forms(resp.text) if resp.status_code == 200 else []
            if not forms:
                return Outcome(final=resp)
            form = next((f for f in forms if any(x["type"] == "password" for x in f.fields)),
                        forms[0])
            if any(x["type"] == "password" for x in form.fields):
                if signed_in:  # the login form again: refused; never retry (lockouts)
                    return Outcome(final=resp)
                signed_in = True
            action = urljoin(str(resp.request.url), form.action or "")
            data = fill(form, *login)
            if form.method == "post":
                resp = browser.post(action, data=data, token=None, accept="text/html")
            else:
                resp = browser.get(action, params=data, token=None, accept="text/html")
        return Outcome(final=resp)
    finally:
        browser.client.close()
        http.sink = browser.sink


def default_scope(options: Options) -> str:
    if options.scope:
        return options.scope
    rights = "cruds" if options.allow_writes else "rs"
    return f"launch/patient openid fhirUser offline_access patient/*.{rights}"


def authorize_params(options: Options, challenge: str, *, state: str | None = None,
                     method: str = "S256", aud: str | None = None) -> dict[str, str]:
    return {"response_type": "code", "client_id": options.smart_client or "",
            "redirect_uri": options.redirect_uri, "scope": default_scope(options),
            "state": state or secrets.token_urlsafe(12), "aud": aud or options.base,
            "code_challenge": challenge, "code_challenge_method": method}


def exchange(http: Http, config: dict[str, Any], options: Options, code: str,
             verifier: str | None) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": options.redirect_uri, "client_id": options.smart_client or ""}
    if verifier is not None:
        data["code_verifier"] = verifier
    auth = (options.smart_client, options.client_secret) if options.client_secret else None
    return http.post(config["token_endpoint"], data=data, token=None,
                     accept="application/json", auth=auth)


def launch(http: Http, config: dict[str, Any], options: Options,
           login: tuple[str, str]) -> Session:
    """A whole standalone launch for `login`; the tokens as a Session, or LaunchError."""
    if not config.get("authorization_endpoint"):
        raise LaunchError("the SMART configuration names no authorization_endpoint")
    verifier, challenge = pkce_pair()
    params = authorize_params(options, challenge)
    out = browse(http, config["authorization_endpoint"], params, options.redirect_uri, login)
    if out.error:
        raise LaunchError(f"the server redirected with error={out.error} for {login[0]!r}")
    if not out.code:
        status = out.final.status_code if out.final is not None else "?"
        raise LaunchError(f"signing in as {login[0]!r} ended on a {status} page without a "
                          "redirect to --redirect-uri (wrong login, unregistered client or "
                          "redirect URI, or a sign-in page that needs JavaScript)")
    if out.state != params["state"]:
        raise LaunchError("the redirect came back with another state")
    resp = exchange(http, config, options, out.code, verifier)
    body = json_body(resp)
    if resp.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
        raise LaunchError(f"the token endpoint answered {resp.status_code} for {login[0]!r}")
    return Session(body["access_token"], patient=body.get("patient"),
                   scope=body.get("scope", ""), refresh_token=body.get("refresh_token"),
                   response=body, login=login)
