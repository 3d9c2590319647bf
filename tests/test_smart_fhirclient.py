"""SMART launches with the real `fhir-gateway serve` process and the `fhirclient` package.

The Python `fhirclient` finds the endpoints in the CapabilityStatement, completes a standalone
launch and an EHR launch (the browser part, sign-in and consent, is driven over HTTP as a
patient's browser would), refreshes its token and reads its patient's Observations. A backend
services client signs its own RS384 assertion and searches with a system token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from fhirclient import client
from fhirclient.models.observation import Observation
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.conftest import SEED_TODAY, free_port
from tests.smart_support import PASSWORD, REDIRECT, hidden
from tests.test_serve_fhirclient import _wait_ready

CLI = [sys.executable, "-m", "fhir_gateway"]
SCOPE = "openid fhirUser offline_access patient/Observation.rs patient/Patient.rs"


def _cli(env: dict, *args: str) -> str:
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A seeded gateway under gunicorn with SMART on, apps and a patient registered by CLI."""
    data = tmp_path_factory.mktemp("smart-served")
    port = free_port()
    env = dict(os.environ, FHIR_GATEWAY_DATA=str(data), FHIR_GATEWAY_PORT=str(port))
    env.pop("FHIR_GATEWAY_CONFIG", None)
    env.pop("FHIR_GATEWAY_AUTH_ENABLED", None)
    _cli(env, "seed", "--patients", "2", "--seed", "5", "--today", SEED_TODAY.isoformat())
    _cli(env, "clients", "add", "--client-id", "py-app", "--public", "--redirect-uri", REDIRECT,
         "--launch-uri", "http://127.0.0.1:9/launch")
    key = RSAKey.generate_key(2048, private=True)
    kid = key.thumbprint()
    jwks = data / "backend.jwks.json"
    jwks.write_text(json.dumps({"keys": [dict(key.as_dict(private=False), kid=kid,
                                              alg="RS384", use="sig")]}))
    _cli(env, "clients", "add", "--client-id", "py-backend", "--jwks", str(jwks),
         "--scope", "system/*.rs")
    _cli(env, "users", "add", "--username", "dana", "--password", PASSWORD,
         "--patient", "pat-0002")
    proc = subprocess.Popen([*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        _wait_ready(f"{base}/metadata", proc)
        yield {"base": base, "env": env, "key": key, "kid": kid}
    finally:
        proc.terminate()
        proc.wait(10)


def _browser_login(authorize_url: str, username: str) -> str:
    """What the patient does in the browser: sign in, allow. Returns the redirect URL."""
    with httpx.Client(timeout=30) as browser:
        page = browser.get(authorize_url)
        assert page.status_code == 200, page.text
        auth = authorize_url.split("/authorize")[0]
        consent = browser.post(f"{auth}/login", data={
            "pending": hidden(page.text, "pending"), "username": username,
            "password": PASSWORD})
        assert consent.status_code == 200, consent.text
        grants = [g for g in ("patient/Observation.rs", "patient/Patient.rs", "offline_access")
                  if f'value="{g}"' in consent.text]
        done = browser.post(f"{auth}/consent", data={
            "pending": hidden(consent.text, "pending"), "grant": grants, "decision": "allow"})
    assert done.status_code == 302, done.text
    return done.headers["location"]


def _settings(base: str, **extra) -> dict:
    return {"app_id": "py-app", "api_base": base, "redirect_uri": REDIRECT, "scope": SCOPE,
            **extra}


def test_standalone_launch_refresh_and_read(served):
    smart = client.FHIRClient(settings=_settings(served["base"]))
    authorize_url = smart.authorize_url
    assert "code_challenge_method=S256" in authorize_url and "launch%2Fpatient" in authorize_url
    smart.handle_callback(_browser_login(authorize_url, "dana"))
    assert smart.ready and smart.patient_id == "pat-0002"
    first_token = smart.server.auth.access_token
    observations = list(Observation.where({"patient": smart.patient_id, "_count": "50"})
                        .perform_resources_iter(smart.server))
    assert observations
    assert {o.subject.reference for o in observations} == {"Patient/pat-0002"}
    assert smart.reauthorize() is True
    assert smart.server.auth.access_token != first_token
    again = list(Observation.where({"patient": "pat-0001"}).perform_resources_iter(smart.server))
    assert again == [], "a patient token never sees another patient's data"


def test_ehr_launch(served):
    out = _cli(served["env"], "launch", "--client-id", "py-app", "--patient", "pat-0002")
    launch_url = out.strip()
    assert launch_url.startswith("http://127.0.0.1:9/launch?iss=")
    params = dict(httpx.URL(launch_url).params)
    assert params["iss"] == served["base"]
    smart = client.FHIRClient(settings=_settings(params["iss"], launch_token=params["launch"]))
    authorize_url = smart.authorize_url
    assert "launch=" in authorize_url
    smart.handle_callback(_browser_login(authorize_url, "dana"))
    assert smart.patient_id == "pat-0002"
    assert smart.launch_context.get("need_patient_banner") is True
    patient = smart.patient
    assert patient is not None and patient.id == "pat-0002"


def test_backend_services_system_search(served):
    token_url = served["base"][: -len("/fhir")] + "/auth/token"
    now = int(time.time())
    assertion = jwt.encode(
        {"alg": "RS384", "kid": served["kid"], "typ": "JWT"},
        {"iss": "py-backend", "sub": "py-backend", "aud": token_url, "exp": now + 240,
         "jti": uuid.uuid4().hex}, served["key"], algorithms=["RS384"])
    resp = httpx.post(token_url, data={
        "grant_type": "client_credentials", "scope": "system/Patient.rs system/Observation.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})
    assert resp.status_code == 200, resp.text
    token = resp.json()
    assert token["expires_in"] <= 300 and "refresh_token" not in token
    assert resp.headers["Cache-Control"] == "no-store"
    bundle = httpx.get(f"{served['base']}/Patient",
                       headers={"Authorization": f"Bearer {token['access_token']}"}).json()
    assert bundle["total"] == 2
