"""The runner's headless SMART client against an authorization server that looks nothing like
the gateway's: discovery only in the CapabilityStatement, a redirect and a cookie before the
login, other field names, a CSRF field, a consent page whose first button is Deny. A small
real HTTP server on loopback (werkzeug), so the form handling is shown to be generic."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from conformance import smart_client
from conformance.cli import main
from conformance.client import Http
from conformance.context import Options
from tests.conftest import free_port

REDIRECT = "http://127.0.0.1:9/cb"
PAGE = "<!doctype html><html><body>{}</body></html>"


class Quiet(WSGIRequestHandler):
    def log(self, *args, **kwargs) -> None:
        pass


class OtherVendor:
    """Just enough of another vendor's SMART server to sign a patient in."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.sessions: dict[str, dict] = {}
        self.codes: dict[str, dict] = {}
        self.bearers: list[str] = []

    def json(self, body: dict, status: int = 200) -> Response:
        return Response(json.dumps(body), status, content_type="application/fhir+json")

    def __call__(self, environ, start_response):
        req = Request(environ)
        return self.route(req)(environ, start_response)

    def route(self, req: Request) -> Response:
        if req.path == "/fhir/metadata":
            return self.json({"resourceType": "CapabilityStatement", "status": "active",
                              "kind": "instance", "date": "2026-01-01", "fhirVersion": "4.0.1",
                              "format": ["json"], "rest": [{"mode": "server", "security": {
                                  "extension": [{"url": "http://fhir-registry.smarthealthit.org"
                                                 "/StructureDefinition/oauth-uris",
                                                 "extension": [
                                                     {"url": "authorize", "valueUri":
                                                      f"{self.base}/oauth/authorize"},
                                                     {"url": "token", "valueUri":
                                                      f"{self.base}/oauth/token"}]}]},
                                  "resource": [{"type": "Patient",
                                                "interaction": [{"code": "read"}]}]}]})
        if req.path == "/oauth/authorize":
            args = req.args
            if args.get("code_challenge_method") != "S256" or args.get("redirect_uri") != \
                    REDIRECT or args.get("aud") != f"{self.base}/fhir":
                return Response(PAGE.format("<p>Bad request</p>"), 400, content_type="text/html")
            sid = secrets.token_hex(8)
            self.sessions[sid] = {"params": dict(args), "csrf": secrets.token_hex(8)}
            resp = Response("", 302, headers={"Location": "/oauth/login"})
            resp.set_cookie("vendor_sid", sid)
            return resp
        session = self.sessions.get(req.cookies.get("vendor_sid", ""))
        if req.path == "/oauth/login" and session:
            if req.method == "GET":
                return Response(PAGE.format(
                    '<form method="POST"><input type="hidden" name="csrf" value="{}">'
                    '<label>E-mail <input type="email" name="login_email"></label>'
                    '<label>Password <input type="password" name="pwd"></label>'
                    '<button>Log in</button></form>'.format(session["csrf"])),
                    content_type="text/html")
            form = req.form
            if form.get("csrf") != session["csrf"] or form.get("login_email") != \
                    "pat@example.org" or form.get("pwd") != "s3cret":
                return Response(PAGE.format(
                    '<form method="POST"><input type="password" name="pwd"><button>Log in'
                    '</button></form>'), 200, content_type="text/html")
            return Response(PAGE.format(
                '<form action="/oauth/consent" method="post">'
                '<input type="checkbox" name="scope" value="patient/*.rs" checked>'
                '<input type="checkbox" name="scope" value="offline_access">'
                '<input type="submit" name="choice" value="Deny">'
                '<input type="submit" name="choice" value="Approve"></form>'),
                content_type="text/html")
        if req.path == "/oauth/consent" and session and req.form.get("choice") == "Approve":
            code = secrets.token_hex(8)
            self.codes[code] = {**session["params"], "scope": " ".join(
                req.form.getlist("scope"))}
            query = urlencode({"code": code, "state": session["params"]["state"]})
            return Response("", 302, headers={"Location": f"{REDIRECT}?{query}"})
        if req.path == "/oauth/token" and req.method == "POST":
            grant = self.codes.pop(req.form.get("code", ""), None)
            verifier = req.form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if not grant or digest.rstrip(b"=").decode() != grant["code_challenge"]:
                return Response('{"error": "invalid_grant"}', 400,
                                content_type="application/json")
            return Response(json.dumps({"access_token": "vendor-token-0123456789",
                                        "token_type": "Bearer", "expires_in": 600,
                                        "scope": grant["scope"], "patient": "p1"}),
                            content_type="application/json",
                            headers={"Cache-Control": "no-store"})
        if req.path.startswith("/fhir/"):
            self.bearers.append(req.headers.get("Authorization", ""))
            if req.path == "/fhir/Patient/p1":
                return self.json({"resourceType": "Patient", "id": "p1"})
            return self.json({"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "not-found"}]}, 404)
        return Response(PAGE.format("<p>No</p>"), 404, content_type="text/html")


@pytest.fixture(scope="module")
def vendor() -> Iterator[OtherVendor]:
    port = free_port()
    app = OtherVendor(f"http://127.0.0.1:{port}")
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app
    server.shutdown()
    thread.join(5)


def options(vendor: OtherVendor, password: str = "s3cret") -> Options:
    return Options(base=f"{vendor.base}/fhir", smart_client="vendor-app",
                   redirect_uri=REDIRECT, patient_logins=[("pat@example.org", password)])


def test_launch_through_another_vendors_pages(vendor):
    opts = options(vendor)
    http = Http(opts.base)
    config = smart_client.discover(http)
    assert config["authorization_endpoint"] == f"{vendor.base}/oauth/authorize"
    session = smart_client.launch(http, config, opts, opts.patient_logins[0])
    assert session.access_token == "vendor-token-0123456789"
    assert session.patient == "p1"
    assert session.scope == "patient/*.rs"  # the checked box only, as a patient would leave it
    login_post = next(ex for ex in http.sink if ex.method == "POST" and "login" in ex.url)
    assert "pwd=***" in login_post.request_body and "s3cret" not in login_post.request_body


def test_a_refused_login_is_submitted_once_and_explained(vendor):
    opts = options(vendor, password="wrong")
    http = Http(opts.base)
    with pytest.raises(smart_client.LaunchError, match="without a redirect"):
        smart_client.launch(http, smart_client.discover(http), opts, opts.patient_logins[0])
    assert sum(ex.method == "POST" and "login" in ex.url for ex in http.sink) == 1


def test_the_cli_runs_with_the_vendors_token(vendor, capsys):
    vendor.bearers.clear()
    code = main(["--base", f"{vendor.base}/fhir", "--smart-client", "vendor-app",
                 "--redirect-uri", REDIRECT, "--patient-login", "pat@example.org:s3cret",
                 "--groups", "read", "--quiet"])
    assert code in (0, 1)
    assert "Bearer vendor-token-0123456789" in vendor.bearers
