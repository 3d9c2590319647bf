"""The EHR launch endpoint, and asymmetric clients whose JWKS is fetched by URL and cached as
its Cache-Control allows."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.conftest import make_smart_env
from tests.smart_support import REDIRECT


@pytest.fixture(scope="module", params=["embedded"])
def smart_env(request, tmp_path_factory):
    """The authorization server does not depend on the EHR: the embedded store only."""
    yield from make_smart_env(tmp_path_factory, request.param)


def test_launch_endpoint_needs_practitioner_or_system(smart_env):
    smart = smart_env.smart
    smart.clients.add("launcher", "public", redirect_uris=[REDIRECT],
                      launch_uri="http://127.0.0.1:9/launch")
    launcher = smart.clients.get("launcher")
    url = smart_env.auth + "/launch"
    body = {"client_id": "launcher", "patient": "pat-0002"}
    assert httpx.post(url, json=body).status_code == 401
    patient_token = smart.mint(launcher, "patient/*.rs", patient="pat-0001")
    refused = httpx.post(url, json=body, headers={"Authorization": f"Bearer {patient_token}"})
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
    system_token = smart.mint(launcher, "system/Patient.rs")
    made = httpx.post(url, json=body, headers={"Authorization": f"Bearer {system_token}"})
    assert made.status_code == 200
    out = made.json()
    assert out["iss"] == smart_env.base
    assert out["launch_url"].startswith("http://127.0.0.1:9/launch?iss=")
    assert smart.records.find_launch(out["launch"], "launcher") == ("pat-0002", None)
    assert smart.records.find_launch(out["launch"], "app-public") is None


class _JwksHandler(BaseHTTPRequestHandler):
    body = b"{}"
    cache_control = "max-age=3600"
    hits = 0

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", type(self).cache_control)
        self.end_headers()
        self.wfile.write(type(self).body)

    def log_message(self, *args):
        pass


@pytest.fixture
def jwks_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JwksHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def _assertion(key, kid: str, client_id: str, token_url: str) -> str:
    claims = {"iss": client_id, "sub": client_id, "aud": token_url,
              "exp": int(time.time()) + 120, "jti": uuid.uuid4().hex}
    return jwt.encode({"alg": "ES384", "kid": kid}, claims, key, algorithms=["ES384"])


@pytest.mark.parametrize(("cache_control", "fetches"), [("max-age=3600", 1), ("no-store", 3)])
def test_jwks_url_es384_and_cache_control(smart_env, jwks_server, cache_control, fetches):
    key = ECKey.generate_key("P-384", private=True)
    kid = key.thumbprint()
    _JwksHandler.body = json.dumps({"keys": [dict(key.as_dict(private=False), kid=kid,
                                                  alg="ES384")]}).encode()
    _JwksHandler.cache_control = cache_control
    _JwksHandler.hits = 0
    client_id = f"es-{uuid.uuid4().hex[:8]}"
    port = jwks_server.server_address[1]
    smart_env.smart.clients.add(client_id, "asymmetric", scope="system/*.rs",
                                jwks_url=f"http://127.0.0.1:{port}/jwks.json")
    token_url = smart_env.auth + "/token"
    for _ in range(3):
        resp = httpx.post(token_url, data={
            "grant_type": "client_credentials", "scope": "system/Patient.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": _assertion(key, kid, client_id, token_url)})
        assert resp.status_code == 200, resp.text
    assert _JwksHandler.hits == fetches
