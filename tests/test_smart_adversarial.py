"""Adversarial tests of the SMART App Launch 2.2 authorization server and the FHIR API behind it.

Every test here tries something an attacker (or a buggy app) would try, and asserts the exact
refusal: the HTTP status, the OAuth `error` (RFC 6749 / 7636 / 7009 / 7662 / 7523), or the FHIR
OperationOutcome, and that nothing was issued, stored or changed. The centre is cross-patient
access: with ann's token (pat-0001), every resource type that pat-0002 has data in is read,
searched, included, historied, written, updated, deleted and smuggled through Bundles.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import types
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pyotp
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from sqlalchemy import func, select

from smart_launch import authorization_code
from smart_launch.records import issued_token
from tests.conftest import make_smart_env
from tests.smart_support import PASSWORD, REDIRECT, pkce_pair


@pytest.fixture(scope="module", params=["embedded", "rest-gateway"])
def smart_env(request, tmp_path_factory):
    """The authorization server does not depend on the EHR: the embedded store and one REST EHR."""
    yield from make_smart_env(tmp_path_factory, request.param)

PATIENT_SCOPE = "launch/patient openid fhirUser patient/*.cruds"
OFFLINE_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
FHIR_JSON = "application/fhir+json"
ME, OTHER = "pat-0001", "pat-0002"
# Every type pat-0002 has data in, in the seeded data (conftest: generate(3, 7, SEED_TODAY)).
# test_other_patient_types_are_discovered proves this list with a system token.
OTHER_TYPES = [
    "Account", "AllergyIntolerance", "Appointment", "CareTeam", "Communication", "Condition",
    "DiagnosticReport", "DocumentReference", "Encounter", "Immunization", "Invoice",
    "MedicationRequest", "Observation", "Patient", "Task",
]
OTHER_REF = re.compile(r"Patient/pat-0002(?![0-9A-Za-z.-])")
_counter = iter(range(1, 10_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


# -- small helpers ------------------------------------------------------------------------------

def location_query(resp: httpx.Response) -> dict[str, list[str]]:
    parts = urlsplit(resp.headers["location"])
    assert not parts.fragment, "nothing may travel in the fragment (no implicit flow)"
    return parse_qs(parts.query)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: dict) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def jwt_header(token: str) -> dict:
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def issued_count(smart) -> int:
    with smart.records.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(issued_token)).scalar()


def oauth_error(resp: httpx.Response, status: int | tuple[int, ...], error: str) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in statuses, (resp.status_code, resp.text)
    body = resp.json()
    assert body["error"] == error, body
    assert "access_token" not in body and "refresh_token" not in body
    return body


def api(env, token: str | None, method: str, path: str, *, body=None,
        **kw) -> httpx.Response:
    headers = {"Accept": FHIR_JSON}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = FHIR_JSON
        kw["content"] = orjson.dumps(body)
    url = path if path.startswith("http") else f"{env.base}/{path}"
    return httpx.request(method, url, headers=headers, timeout=30, **kw)


def search(env, token: str, rtype: str, params: dict | list | None = None, *,
           post: bool = False) -> list[dict]:
    """Every resource (matches and includes) of every page of a search, which must succeed."""
    if post:
        resp = httpx.post(f"{env.base}/{rtype}/_search", data=params or {}, timeout=30,
                          headers={"Authorization": f"Bearer {token}", "Accept": FHIR_JSON})
    else:
        resp = api(env, token, "GET", rtype, params=params or {})
    out = []
    for _ in range(100):
        assert resp.status_code == 200, resp.text
        bundle = resp.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        out += [e["resource"] for e in bundle.get("entry", [])]
        nxt = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        if not nxt:
            return out
        resp = api(env, token, "GET", nxt[0])
    raise AssertionError("search did not end")


def mentions_other(resource: dict) -> bool:
    return bool((resource.get("resourceType") == "Patient" and resource.get("id") == OTHER)
                or OTHER_REF.search(json.dumps(resource)))


def outcome_shape(resp: httpx.Response, rid: str) -> tuple[int, str, str]:
    """A 404's status, content type and body with the id blanked, to compare with a missing id."""
    return resp.status_code, resp.headers.get("content-type", ""), resp.text.replace(rid, "<id>")


def observation(patient: str, category: str = "vital-signs", **extra) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}],
                     "text": "Heart rate"},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": "2026-06-01T10:00:00Z",
            "valueQuantity": {"value": 71, "unit": "/min", "system": "http://unitsofmeasure.org",
                              "code": "/min"},
            **extra}


def exchange(env, code: str, verifier: str, client_id: str = "app-public",
             **extra) -> httpx.Response:
    return env.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                     client_id=client_id, code_verifier=verifier, **extra)


def refresh(env, refresh_token: str, client_id: str = "app-public", **extra) -> httpx.Response:
    return env.token(grant_type="refresh_token", refresh_token=refresh_token,
                     client_id=client_id, **extra)


def fresh_token(env, username: str = "ann", scope: str = PATIENT_SCOPE, **consent) -> dict:
    code, verifier = env.code_for("app-public", username, scope, **consent)
    resp = exchange(env, code, verifier)
    assert resp.status_code == 200, resp.text
    return resp.json()


def authorize(env, **overrides) -> httpx.Response:
    _, challenge = pkce_pair()
    params = env.authorize_params("app-public", PATIENT_SCOPE, challenge)
    params.update(overrides)
    params = {k: v for k, v in params.items() if v is not None}
    return httpx.get(f"{env.auth}/authorize", params=params, timeout=30)


# -- module fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(smart_env):
    return smart_env


@pytest.fixture(scope="module")
def smart(smart_env):
    return smart_env.smart


@pytest.fixture(scope="module")
def ann(env) -> dict:
    """ann's token response (pat-0001, patient/*.cruds); never revoked or consumed."""
    return fresh_token(env)


@pytest.fixture(scope="module")
def ann_token(ann) -> str:
    return ann["access_token"]


@pytest.fixture(scope="module")
def other_public(smart) -> str:
    smart.clients.add("app-other", "public", redirect_uris=[REDIRECT])
    return "app-other"


@pytest.fixture(scope="module")
def confidential(smart) -> tuple[str, str]:
    secret = "s" * 20
    smart.clients.add("app-confidential", "symmetric", redirect_uris=[REDIRECT], secret=secret)
    return "app-confidential", secret


@pytest.fixture(scope="module")
def backend(smart) -> dict:
    key = RSAKey.generate_key(2048, private=True)
    kid = key.thumbprint()
    jwks = {"keys": [dict(key.as_dict(private=False), kid=kid, alg="RS384", use="sig")]}
    smart.clients.add("backend-adv", "asymmetric", jwks=jwks, scope="system/*.rs")
    return {"client_id": "backend-adv", "key": key, "kid": kid}


def assertion(smart, backend: dict, *, alg: str = "RS384", key=None, header: dict | None = None,
              **claims) -> str:
    now = int(time.time())
    body = {"iss": backend["client_id"], "sub": backend["client_id"],
            "aud": smart.endpoints.token, "iat": now, "exp": now + 240,
            "jti": uuid.uuid4().hex}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    head = {"alg": alg, "kid": backend["kid"], "typ": "JWT", **(header or {})}
    return jwt.encode(head, body, key or backend["key"], algorithms=[alg])


def client_credentials(env, client_assertion: str, scope: str = "system/*.rs",
                       **extra) -> httpx.Response:
    return env.token(grant_type="client_credentials", scope=scope,
                     client_assertion_type=ASSERTION_TYPE, client_assertion=client_assertion,
                     **extra)


@pytest.fixture(scope="module")
def system_token(env, smart, backend) -> str:
    resp = client_credentials(env, assertion(smart, backend))
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


@pytest.fixture(scope="module")
def capabilities(env) -> dict[str, set[str]]:
    """Resource type -> the search parameters the gateway advertises."""
    statement = httpx.get(f"{env.base}/metadata", headers={"Accept": FHIR_JSON}).json()
    return {r["type"]: {p["name"] for p in r.get("searchParam", [])}
            for r in statement["rest"][0]["resource"]}


@pytest.fixture(scope="module")
def other_data(env, system_token, capabilities) -> dict[str, list[dict]]:
    """pat-0002's resources by type, found with a system token."""
    found: dict[str, list[dict]] = {}
    for rtype, params in sorted(capabilities.items()):
        if rtype == "AuditEvent":  # served from the gateway's audit log, tested elsewhere
            continue
        if "patient" in params:
            rows = search(env, system_token, rtype, {"patient": OTHER, "_count": "1000"})
        elif rtype == "Patient":
            rows = search(env, system_token, rtype, {"_id": OTHER})
        else:
            continue
        if rows:
            found[rtype] = rows
    return found


def system_read(env, system_token: str, rtype: str, rid: str) -> httpx.Response:
    return api(env, system_token, "GET", f"{rtype}/{rid}")


# == authorization endpoint =====================================================================

@pytest.mark.parametrize(("overrides", "description"), [
    ({"code_challenge": None, "code_challenge_method": None}, "code_challenge"),
    ({"code_challenge": None}, "code_challenge"),
    ({"code_challenge_method": "plain"}, "code_challenge_method"),
    ({"code_challenge": "too-short"}, "code_challenge"),
], ids=["no-pkce", "method-without-challenge", "plain", "malformed-challenge"])
def test_authorize_pkce_is_required_s256(env, overrides, description):
    if overrides.get("code_challenge_method") == "plain":
        verifier, _ = pkce_pair()
        overrides = dict(overrides, code_challenge=verifier)  # plain: challenge == verifier
    resp = authorize(env, **overrides)
    assert resp.status_code == 302, resp.text
    assert resp.headers["location"].startswith(REDIRECT + "?")
    query = location_query(resp)
    assert query["error"] == ["invalid_request"]
    assert description in query["error_description"][0]
    assert query["state"] == ["st-1"]
    assert "code" not in query


@pytest.mark.parametrize("overrides", [
    {"redirect_uri": "http://127.0.0.1:9/evil"},
    {"redirect_uri": REDIRECT + "/"},
    {"redirect_uri": REDIRECT + "?x=1"},
    {"redirect_uri": "HTTP://127.0.0.1:9/callback"},
    {"redirect_uri": None},
    {"client_id": "no-such-app"},
    {"client_id": None},
], ids=["other-uri", "trailing-slash", "extra-query", "case", "no-uri", "unknown-client",
        "no-client"])
def test_authorize_never_redirects_to_an_unregistered_place(env, overrides):
    resp = authorize(env, **overrides)
    assert resp.status_code == 400, resp.text
    assert "location" not in resp.headers
    assert resp.headers["content-type"].startswith("text/html")
    assert "Nothing was shared" in resp.text
    assert "code=" not in resp.text


@pytest.mark.parametrize(("overrides", "error", "state"), [
    ({"aud": "https://evil.example/fhir"}, "invalid_request", "st-1"),
    ({"aud": None}, "invalid_request", "st-1"),
    ({"state": None}, "invalid_request", None),
    ({"response_type": "token"}, "unsupported_response_type", "st-1"),
    ({"response_type": "code token"}, "unsupported_response_type", "st-1"),
    ({"response_type": None}, "unsupported_response_type", "st-1"),
    ({"scope": "patient/Observation.zz"}, "invalid_scope", "st-1"),
    ({"scope": "openid fhirUser system/*.rs"}, "invalid_scope", "st-1"),
    ({"scope": "launch/patient system/Patient.r patient/*.rs"}, "invalid_scope", "st-1"),
], ids=["wrong-aud", "no-aud", "no-state", "implicit", "hybrid", "no-response-type",
        "bad-scope", "system-scope", "system-among-others"])
def test_authorize_errors_go_back_to_the_app_without_a_code(env, overrides, error, state):
    resp = authorize(env, **overrides)
    assert resp.status_code == 302, resp.text
    assert resp.headers["location"].startswith(REDIRECT + "?")
    query = location_query(resp)
    assert query["error"] == [error]
    assert query.get("state") == ([state] if state else None)
    assert "code" not in query and "access_token" not in query
    assert "smart_auth" not in resp.headers.get("set-cookie", "")


def test_confidential_client_cannot_skip_pkce(env, smart, confidential):
    """SMART 2.2 requires PKCE of every app, confidential ones too: no token without it."""
    client_id, secret = confidential
    params = env.authorize_params(client_id, PATIENT_SCOPE, "unused")
    del params["code_challenge"], params["code_challenge_method"]
    first = httpx.get(f"{env.auth}/authorize", params=params, timeout=30)
    if first.status_code == 302:  # refused up front, as it should be
        query = location_query(first)
        assert query["error"] == ["invalid_request"] and "code" not in query
        return
    # The server went on to sign-in (test_authorize_pkce_is_required_s256 reports that); the
    # token endpoint must then not issue for a code that carries no challenge.
    assert first.status_code == 200, first.text
    code = location_query(env.consent(env.sign_in(params, "ann")))["code"][0]
    before = issued_count(smart)
    resp = env.token(basic=(client_id, secret), grant_type="authorization_code", code=code,
                     redirect_uri=REDIRECT)
    oauth_error(resp, 400, "invalid_request")
    assert issued_count(smart) == before


# == token endpoint: the authorization code =====================================================

def test_token_wrong_verifier_is_invalid_grant(env, smart):
    code, _ = env.code_for("app-public", "ann", PATIENT_SCOPE)
    before = issued_count(smart)
    oauth_error(exchange(env, code, pkce_pair()[0]), 400, "invalid_grant")
    assert issued_count(smart) == before


def test_token_verifier_equal_to_challenge_is_invalid_grant(env, smart):
    verifier, challenge = pkce_pair()
    params = env.authorize_params("app-public", PATIENT_SCOPE, challenge)
    redirect = env.consent(env.sign_in(params, "ann"))
    code = location_query(redirect)["code"][0]
    before = issued_count(smart)
    oauth_error(exchange(env, code, challenge), 400, "invalid_grant")  # as if method were plain
    assert issued_count(smart) == before
    assert exchange(env, code, verifier).status_code == 200  # the code itself was fine


def test_token_without_verifier_is_refused(env, smart):
    code, _ = env.code_for("app-public", "ann", PATIENT_SCOPE)
    before = issued_count(smart)
    resp = env.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                     client_id="app-public")
    oauth_error(resp, 400, "invalid_request")
    assert issued_count(smart) == before


@pytest.mark.parametrize("change", ["redirect_uri", "client", "code"])
def test_token_code_bound_to_client_and_redirect(env, smart, other_public, change):
    code, verifier = env.code_for("app-public", "ann", PATIENT_SCOPE)
    before = issued_count(smart)
    if change == "redirect_uri":
        resp = env.token(grant_type="authorization_code", code=code, client_id="app-public",
                         redirect_uri="http://127.0.0.1:9/other", code_verifier=verifier)
    elif change == "client":
        resp = exchange(env, code, verifier, client_id=other_public)
    else:
        resp = exchange(env, code + "x", verifier)
    oauth_error(resp, 400, "invalid_grant")
    assert issued_count(smart) == before


def test_code_reuse_is_refused_and_revokes_what_it_issued(env, smart):
    code, verifier = env.code_for("app-public", "ann", PATIENT_SCOPE)
    first = exchange(env, code, verifier)
    assert first.status_code == 200, first.text
    token = first.json()["access_token"]
    assert api(env, token, "GET", f"Patient/{ME}").status_code == 200
    before = issued_count(smart)
    oauth_error(exchange(env, code, verifier), 400, "invalid_grant")
    assert issued_count(smart) == before
    resp = api(env, token, "GET", f"Patient/{ME}")
    assert resp.status_code == 401
    assert "revoked" in resp.headers["www-authenticate"]


def test_expired_code_is_invalid_grant(env, smart, monkeypatch):
    code, verifier = env.code_for("app-public", "ann", PATIENT_SCOPE)
    real = time.time
    monkeypatch.setattr(authorization_code, "time",
                        types.SimpleNamespace(time=lambda: real() + smart.records.CODE_TTL + 1))
    before = issued_count(smart)
    oauth_error(exchange(env, code, verifier), 400, "invalid_grant")
    assert issued_count(smart) == before


@pytest.mark.parametrize("how", ["basic-wrong", "post-wrong", "no-secret", "basic-other-id"])
def test_confidential_client_wrong_secret_is_invalid_client(env, smart, confidential, how):
    client_id, secret = confidential
    code, verifier = env.code_for(client_id, "ann", PATIENT_SCOPE)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier}
    before = issued_count(smart)
    if how == "basic-wrong":
        resp = env.token(basic=(client_id, "w" * 20), **data)
    elif how == "post-wrong":
        resp = env.token(client_id=client_id, client_secret="w" * 20, **data)
    elif how == "no-secret":
        resp = env.token(client_id=client_id, **data)
    else:
        resp = env.token(basic=("app-public", secret), client_id=client_id, **data)
    if how.startswith("basic"):
        oauth_error(resp, 401, "invalid_client")
        assert resp.headers["www-authenticate"].lower().startswith("basic")
    else:
        oauth_error(resp, (400, 401), "invalid_client")
    assert issued_count(smart) == before
    ok = env.token(basic=(client_id, secret), **data)  # the code was not spent by the failure
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("grant_type", [
    "password", "implicit", "urn:ietf:params:oauth:grant-type:device_code",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
])
def test_unsupported_grant_types(env, smart, grant_type):
    before = issued_count(smart)
    resp = env.token(grant_type=grant_type, client_id="app-public", username="ann",
                     password=PASSWORD, scope=PATIENT_SCOPE)
    oauth_error(resp, 400, "unsupported_grant_type")
    assert issued_count(smart) == before


def test_public_client_cannot_use_client_credentials(env, smart):
    before = issued_count(smart)
    resp = env.token(grant_type="client_credentials", client_id="app-public",
                     scope="system/*.rs")
    oauth_error(resp, (400, 401), "invalid_client")
    assert issued_count(smart) == before


# == tokens at the FHIR API =====================================================================

def assert_401(resp: httpx.Response, *words: str) -> None:
    assert resp.status_code == 401, resp.text
    challenge = resp.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "login"
    for word in words:
        assert word in challenge and word in outcome["issue"][0]["diagnostics"]


def test_no_token_is_401_with_bearer_challenge(env):
    resp = api(env, None, "GET", f"Patient/{ME}")
    assert_401(resp)
    assert "error=" not in resp.headers["www-authenticate"]  # RFC 6750 3.1: no error code


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.AAAA"])
def test_garbage_token_is_401(env, token):
    resp = api(env, token, "GET", f"Patient/{ME}")
    assert_401(resp, "not valid")
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]


def test_expired_access_token_is_401(env, smart, ann_token, monkeypatch):
    assert api(env, ann_token, "GET", f"Patient/{ME}").status_code == 200
    monkeypatch.setattr(smart.verifier, "clock", lambda: time.time() + 4000)
    assert_401(api(env, ann_token, "GET", f"Patient/{ME}"), "expired")
    monkeypatch.undo()
    assert api(env, ann_token, "GET", f"Patient/{ME}").status_code == 200


def _forge_with_other_key(token: str, smart) -> str:
    other = RSAKey.generate_key(2048, private=True)
    return jwt.encode({"alg": "RS256", "kid": smart.keys.kid, "typ": "at+jwt"},
                      jwt_claims(token), other)


def _forge_alg_none(token: str, smart) -> str:
    header = dict(jwt_header(token), alg="none")
    return f"{b64json(header)}.{token.split('.')[1]}."


def _forge_hs256_with_public_key(token: str, smart) -> str:
    public_pem = RSAKey.import_key(smart.keys.current.as_dict(private=False)).as_pem()
    header = dict(jwt_header(token), alg="HS256")
    signing_input = f"{b64json(header)}.{token.split('.')[1]}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def _forge_other_patient(token: str, smart) -> str:
    head, _, sig = token.split(".")
    return f"{head}.{b64json(dict(jwt_claims(token), patient=OTHER))}.{sig}"


def _forge_wider_scope(token: str, smart) -> str:
    head, _, sig = token.split(".")
    return f"{head}.{b64json(dict(jwt_claims(token), scope='system/*.cruds'))}.{sig}"


def _forge_hs256_oct(token: str, smart) -> str:
    key = OctKey.import_key(b"k" * 32)
    return jwt.encode({"alg": "HS256", "kid": smart.keys.kid}, jwt_claims(token), key)


@pytest.mark.parametrize("forge", [
    _forge_with_other_key, _forge_alg_none, _forge_hs256_with_public_key, _forge_hs256_oct,
    _forge_other_patient, _forge_wider_scope,
], ids=["other-rsa-key", "alg-none", "hs256-public-key", "hs256-oct", "tampered-patient",
        "tampered-scope"])
def test_forged_tokens_are_401(env, smart, ann_token, forge):
    forged = forge(ann_token, smart)
    assert_401(api(env, forged, "GET", f"Patient/{OTHER}"), "not valid")
    assert_401(api(env, forged, "GET", f"Patient/{ME}"), "not valid")


@pytest.mark.parametrize(("change", "words"), [
    ({"aud": "https://elsewhere.example/fhir"}, "not valid for this server"),
    ({"iss": "https://elsewhere.example/fhir"}, "not valid for this server"),
    ({"jti": "never-issued"}, "not known"),
    ({"exp": None}, "not valid for this server"),
    ({"jti": None}, "not valid for this server"),
    ({"exp": 1_000_000}, "expired"),
], ids=["aud", "iss", "unknown-jti", "no-exp", "no-jti", "past-exp"])
def test_tokens_signed_by_our_key_are_still_checked(env, smart, ann_token, change, words):
    claims = {k: v for k, v in dict(jwt_claims(ann_token), **change).items() if v is not None}
    forged = jwt.encode({"alg": "RS256", "kid": smart.keys.kid}, claims, smart.keys.current)
    assert_401(api(env, forged, "GET", f"Patient/{ME}"), words)


def test_id_token_is_not_an_access_token(env, ann):
    assert "id_token" in ann
    assert_401(api(env, ann["id_token"], "GET", f"Patient/{ME}"), "not valid for this server")


def test_token_in_query_string_is_not_accepted(env, ann_token):
    resp = httpx.get(f"{env.base}/Patient/{ME}", params={"access_token": ann_token},
                     headers={"Accept": FHIR_JSON})
    assert_401(resp)


def test_revoked_access_token_is_401(env, smart):
    token = fresh_token(env)["access_token"]
    assert api(env, token, "GET", f"Patient/{ME}").status_code == 200
    resp = httpx.post(f"{env.auth}/revoke", data={"token": token, "client_id": "app-public"})
    assert resp.status_code == 200, resp.text
    assert_401(api(env, token, "GET", f"Patient/{ME}"), "revoked")


def test_other_client_cannot_revoke_a_token(env, other_public, ann_token):
    resp = httpx.post(f"{env.auth}/revoke", data={"token": ann_token, "client_id": other_public})
    assert resp.status_code in (200, 400, 401, 403), resp.text
    assert api(env, ann_token, "GET", f"Patient/{ME}").status_code == 200


def introspect(env, confidential, token: str, **extra) -> httpx.Response:
    return httpx.post(f"{env.auth}/introspect", data={"token": token, **extra},
                      auth=confidential, timeout=30)


def test_introspection_of_an_active_token(env, confidential, ann, ann_token):
    resp = introspect(env, confidential, ann_token)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    claims = jwt_claims(ann_token)
    assert body["active"] is True
    assert body["scope"] == ann["scope"] == claims["scope"]
    assert body["client_id"] == "app-public"
    assert body["exp"] == claims["exp"] and body["exp"] > time.time()
    assert body["patient"] == ME


def test_introspection_of_revoked_and_garbage_tokens(env, confidential):
    token = fresh_token(env)["access_token"]
    assert introspect(env, confidential, token).json()["active"] is True
    resp = httpx.post(f"{env.auth}/revoke", data={"token": token, "client_id": "app-public"})
    assert resp.status_code == 200
    for candidate in (token, "garbage", _forge_other_patient(token, None)):
        resp = introspect(env, confidential, candidate)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"active": False}


@pytest.mark.parametrize("how", ["public-client", "wrong-secret", "no-auth"])
def test_introspection_needs_a_confidential_client(env, confidential, ann_token, how):
    client_id, _ = confidential
    if how == "public-client":
        resp = httpx.post(f"{env.auth}/introspect",
                          data={"token": ann_token, "client_id": "app-public"})
    elif how == "wrong-secret":
        resp = introspect(env, (client_id, "w" * 20), ann_token)
    else:
        resp = httpx.post(f"{env.auth}/introspect", data={"token": ann_token})
    body = oauth_error(resp, 401, "invalid_client")
    assert "active" not in body and "patient" not in body


# == refresh tokens =============================================================================

def test_refresh_reuse_revokes_the_whole_family(env, smart):
    first = fresh_token(env, scope=OFFLINE_SCOPE)
    r1, a1 = first["refresh_token"], first["access_token"]
    second = refresh(env, r1)
    assert second.status_code == 200, second.text
    r2, a2 = second.json()["refresh_token"], second.json()["access_token"]
    assert r2 != r1
    assert api(env, a2, "GET", f"Patient/{ME}").status_code == 200
    before = issued_count(smart)
    oauth_error(refresh(env, r1), 400, "invalid_grant")  # the rotated one, replayed
    assert issued_count(smart) == before
    oauth_error(refresh(env, r2), 400, "invalid_grant")  # the newest is gone too
    for token in (a1, a2):
        assert_401(api(env, token, "GET", f"Patient/{ME}"), "revoked")
    assert issued_count(smart) == before


def test_refresh_with_wider_scope_is_invalid_scope(env, smart):
    tok = fresh_token(env, scope="launch/patient offline_access patient/Observation.rs")
    before = issued_count(smart)
    for wider in ("offline_access patient/*.rs", "offline_access patient/Observation.cruds",
                  "offline_access system/Observation.rs", "offline_access user/Observation.rs"):
        oauth_error(refresh(env, tok["refresh_token"], scope=wider), 400, "invalid_scope")
    assert issued_count(smart) == before
    again = refresh(env, tok["refresh_token"])  # the failures rotated nothing
    assert again.status_code == 200, again.text
    assert again.json()["scope"] == tok["scope"]


def test_refresh_with_narrower_scope(env):
    tok = fresh_token(env, scope="launch/patient offline_access patient/Observation.rs "
                                 "patient/Condition.rs")
    resp = refresh(env, tok["refresh_token"],
                   scope="offline_access patient/Observation.rs?category=vital-signs")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["scope"] == "offline_access patient/Observation.rs?category=vital-signs"
    assert body["patient"] == ME and "refresh_token" in body
    token = body["access_token"]
    assert jwt_claims(token)["scope"] == body["scope"]
    rows = search(env, token, "Observation", {"_count": "1000"})
    assert rows and all(r["category"][0]["coding"][0]["code"] == "vital-signs" for r in rows)
    assert api(env, token, "GET", "Condition").status_code == 403


def test_refresh_by_another_client_is_invalid_grant(env, smart, other_public):
    tok = fresh_token(env, scope=OFFLINE_SCOPE)
    before = issued_count(smart)
    oauth_error(refresh(env, tok["refresh_token"], client_id=other_public), 400, "invalid_grant")
    oauth_error(refresh(env, tok["refresh_token"], client_id="no-such-app"), (400, 401),
                "invalid_client")
    assert issued_count(smart) == before
    assert refresh(env, tok["refresh_token"]).status_code == 200


@pytest.mark.parametrize(("extra", "refreshable"), [
    ("", False), (" online_access", True), (" offline_access", True),
])
def test_refresh_token_only_with_offline_or_online_access(env, extra, refreshable):
    tok = fresh_token(env, scope=PATIENT_SCOPE + extra)
    assert ("refresh_token" in tok) is refreshable


def test_garbage_refresh_token(env, smart):
    before = issued_count(smart)
    oauth_error(refresh(env, "not-a-refresh-token"), 400, "invalid_grant")
    assert issued_count(smart) == before


# == backend services ===========================================================================

def test_backend_services_token(env, smart, backend):
    resp = client_credentials(env, assertion(smart, backend))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert 0 < body["expires_in"] <= 300
    assert "refresh_token" not in body and "patient" not in body
    assert body["scope"] == "system/*.rs"
    patients = search(env, body["access_token"], "Patient", {"_count": "1000"})
    assert {p["id"] for p in patients} == {"pat-0001", "pat-0002", "pat-0003"}
    write = api(env, body["access_token"], "POST", "Observation", body=observation(ME))
    assert write.status_code == 403  # system/*.rs reads only


def test_backend_replayed_jti_is_invalid_client(env, smart, backend):
    signed = assertion(smart, backend)
    assert client_credentials(env, signed).status_code == 200
    before = issued_count(smart)
    oauth_error(client_credentials(env, signed), (400, 401), "invalid_client")
    oauth_error(client_credentials(env, assertion(smart, backend, jti=jwt_claims(signed)["jti"])),
                (400, 401), "invalid_client")
    assert issued_count(smart) == before


def _signed_by_other_key(smart, backend):
    return assertion(smart, backend, key=RSAKey.generate_key(2048, private=True))


def _hs256(smart, backend):
    return assertion(smart, backend, alg="HS256", key=OctKey.import_key(b"k" * 32))


def _hs256_public_key(smart, backend):
    pem = RSAKey.import_key(backend["key"].as_dict(private=False)).as_pem()
    now = int(time.time())
    claims = {"iss": backend["client_id"], "sub": backend["client_id"],
              "aud": smart.endpoints.token, "exp": now + 240, "jti": uuid.uuid4().hex}
    signing_input = f"{b64json({'alg': 'HS256', 'kid': backend['kid']})}.{b64json(claims)}"
    return f"{signing_input}.{b64url(hmac.new(pem, signing_input.encode(), 'sha256').digest())}"


def _alg_none(smart, backend):
    signed = assertion(smart, backend)
    return f"{b64json({'alg': 'none', 'kid': backend['kid']})}.{signed.split('.')[1]}."


ASSERTION_ATTACKS = {
    "exp-10-min": lambda s, b: assertion(s, b, exp=int(time.time()) + 600),
    "expired": lambda s, b: assertion(s, b, exp=int(time.time()) - 10),
    "no-exp": lambda s, b: assertion(s, b, exp=None),
    "no-jti": lambda s, b: assertion(s, b, jti=None),
    "aud-fhir-base": lambda s, b: assertion(s, b, aud=s.audience),
    "aud-other": lambda s, b: assertion(s, b, aud="https://elsewhere.example/auth/token"),
    "iss-not-sub": lambda s, b: assertion(s, b, iss="app-public"),
    "sub-other-client": lambda s, b: assertion(s, b, sub="app-public", iss="app-public"),
    "rs256": lambda s, b: assertion(s, b, alg="RS256"),
    "hs256": _hs256,
    "hs256-public-key": _hs256_public_key,
    "alg-none": _alg_none,
    "other-key": _signed_by_other_key,
}


@pytest.mark.parametrize("attack", sorted(ASSERTION_ATTACKS))
def test_backend_bad_assertion_is_invalid_client(env, smart, backend, attack):
    before = issued_count(smart)
    resp = client_credentials(env, ASSERTION_ATTACKS[attack](smart, backend))
    oauth_error(resp, (400, 401), "invalid_client")
    assert issued_count(smart) == before


@pytest.mark.parametrize("scope", [
    "patient/*.rs", "user/*.rs", "system/*.cruds", "system/Observation.c", "launch/patient",
    "system/*.rs patient/Observation.rs",
])
def test_backend_scope_outside_system_or_registration_is_invalid_scope(env, smart, backend,
                                                                      scope):
    before = issued_count(smart)
    oauth_error(client_credentials(env, assertion(smart, backend), scope=scope), 400,
                "invalid_scope")
    assert issued_count(smart) == before


# == cross-patient: ann (pat-0001) against pat-0002's data =====================================

def test_other_patient_types_are_discovered(other_data):
    assert sorted(other_data) == OTHER_TYPES
    for rtype, rows in other_data.items():
        assert all(mentions_other(r) for r in rows), rtype


@pytest.mark.parametrize("rtype", OTHER_TYPES)
def test_read_other_patients_resources_looks_missing(env, ann_token, other_data, rtype):
    missing_id = "no-such-id-0002"
    missing = api(env, ann_token, "GET", f"{rtype}/{missing_id}")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    for resource in other_data[rtype]:
        rid = resource["id"]
        resp = api(env, ann_token, "GET", f"{rtype}/{rid}")
        assert outcome_shape(resp, rid) == outcome_shape(missing, missing_id), rid
        assert rid not in resp.text.replace(f"{rtype}/{rid} is not known", "")


@pytest.mark.parametrize("rtype", OTHER_TYPES)
def test_history_and_vread_of_other_patients_resources_are_404(env, ann_token, other_data,
                                                               rtype):
    for resource in other_data[rtype][:5]:
        rid, vid = resource["id"], resource["meta"]["versionId"]
        for path in (f"{rtype}/{rid}/_history", f"{rtype}/{rid}/_history/{vid}"):
            resp = api(env, ann_token, "GET", path)
            assert resp.status_code == 404, (path, resp.text)
            assert resp.json()["resourceType"] == "OperationOutcome"
            assert "entry" not in resp.text


def test_other_patients_history_is_404(env, ann_token):
    resp = api(env, ann_token, "GET", f"Patient/{OTHER}/_history")
    missing = api(env, ann_token, "GET", "Patient/no-such-id-0002/_history")
    assert resp.status_code == 404, resp.text
    assert outcome_shape(resp, OTHER) == outcome_shape(missing, "no-such-id-0002")
    assert '"entry"' not in resp.text


@pytest.mark.parametrize("rtype", OTHER_TYPES)
def test_search_for_other_patient_finds_nothing(env, ann_token, other_data, capabilities, rtype):
    params = capabilities[rtype]
    ids = ",".join(r["id"] for r in other_data[rtype][:20])
    attempts: list[dict] = [{"_id": ids}]
    for name in ("patient", "subject"):
        if name in params:
            attempts += [{name: OTHER}, {name: f"Patient/{OTHER}"},
                         {name: f"{env.base}/Patient/{OTHER}"}]
    for attempt in attempts:
        assert search(env, ann_token, rtype, dict(attempt, _count="1000")) == [], attempt
        assert search(env, ann_token, rtype, attempt, post=True) == [], attempt
    if "patient" in params:  # asking for both: own data only
        rows = search(env, ann_token, rtype, {"patient": f"{ME},{OTHER}", "_count": "1000"})
        assert rows and [r["id"] for r in rows if mentions_other(r)] == []


@pytest.mark.parametrize("rtype", OTHER_TYPES)
def test_plain_search_shows_only_own_data(env, ann_token, rtype):
    rows = search(env, ann_token, rtype, {"_count": "1000"})
    assert rows, f"ann should see her own {rtype}"
    leaked = [r["id"] for r in rows if mentions_other(r)]
    assert leaked == []
    assert all(f"Patient/{ME}" in json.dumps(r) or r["id"] == ME for r in rows)


@pytest.mark.parametrize("params", [
    ("Patient", {"_revinclude": "Observation:patient"}),
    ("Patient", {"_id": OTHER, "_revinclude": "Observation:patient"}),
    ("Patient", {"_id": f"{ME},{OTHER}", "_revinclude": "Observation:subject"}),
    ("Observation", {"_include": "Observation:patient"}),
    ("Observation", {"_include": "Observation:subject"}),
    ("Observation", {"patient": OTHER, "_include": "Observation:patient"}),
    ("Encounter", {"_revinclude": "Observation:encounter"}),
    ("Encounter", {"_include": "Encounter:patient"}),
    ("DiagnosticReport", {"_include": "DiagnosticReport:result"}),
    ("Condition", {"_include": "Condition:patient", "_revinclude": "Observation:patient"}),
], ids=lambda p: f"{p[0]}?" + "&".join(f"{k}={v}" for k, v in p[1].items()))
def test_include_and_revinclude_never_bring_other_patients_data(env, ann_token, params):
    rtype, query = params
    rows = search(env, ann_token, rtype, dict(query, _count="1000"))
    assert [r["id"] for r in rows if mentions_other(r)] == []




def _categories(resource: dict) -> set[str]:
    return {c.get("code") for cat in resource.get("category", []) for c in cat.get("coding", [])}


def test_includes_are_judged_by_the_scopes_of_their_own_type(env):
    """An included resource is shown only as a read of it would be: a token without
    Patient scopes gets no Patient through `_include`, and one whose Observation scope is
    constrained to vital signs gets no laboratory results through `_revinclude`."""
    observations_only = fresh_token(env, scope="launch/patient patient/Observation.rs")
    rows = search(env, observations_only["access_token"], "Observation",
                  {"_include": "Observation:subject", "_count": "50"})
    assert rows and {r["resourceType"] for r in rows} == {"Observation"}
    assert api(env, observations_only["access_token"], "GET",
               f"Patient/{ME}").status_code == 403

    vitals = fresh_token(env, scope="launch/patient patient/Patient.rs "
                         "patient/Observation.rs?category=vital-signs")["access_token"]
    labs_direct = search(env, vitals, "Observation", {"category": "laboratory"})
    everything = search(env, fresh_token(env)["access_token"], "Patient",
                        {"_revinclude": "Observation:subject", "_count": "1000"})
    assert any("laboratory" in _categories(r) for r in everything
               if r["resourceType"] == "Observation"), "ann has laboratory results"
    rows = search(env, vitals, "Patient", {"_revinclude": "Observation:subject",
                                           "_count": "1000"})
    observations = [r for r in rows if r["resourceType"] == "Observation"]
    assert observations and all("vital-signs" in _categories(r) for r in observations)
    assert labs_direct == []



def _binary(env, text: str, context: str | None) -> str:
    """A Binary holding `text`, tied to `context` by securityContext (as an EHR import would
    store a document's bytes); its id."""
    body = {"resourceType": "Binary", "contentType": "text/plain",
            "data": base64.b64encode(text.encode()).decode()}
    if context is not None:
        body["securityContext"] = {"reference": context}
    return env.live.adapter.create(body, None).resource["id"]


def _document(env, patient: str) -> str:
    return env.live.adapter.create({
        "resourceType": "DocumentReference", "status": "current",
        "subject": {"reference": f"Patient/{patient}"},
        "content": [{"attachment": {"contentType": "text/plain", "title": "Note"}}]},
        None).resource["id"]


def _bytes_of(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["resourceType"] == "Binary"
    return base64.b64decode(body["data"]).decode()


def test_a_patient_reads_the_bytes_of_their_own_document(env, ann_token):
    """A Binary names no Patient: a patient's token reads one by id when its securityContext
    is a resource the token may read (R4: the context "stands in as a proxy"), by read and
    vread, alone or inside a batch; the access log names the patient."""
    mine = _binary(env, "ann's note", f"DocumentReference/{_document(env, ME)}")
    assert _bytes_of(api(env, ann_token, "GET", f"Binary/{mine}")) == "ann's note"
    version = api(env, ann_token, "GET", f"Binary/{mine}").json()["meta"]["versionId"]
    assert _bytes_of(api(env, ann_token, "GET", f"Binary/{mine}/_history/{version}")) == \
        "ann's note"
    to_her = _binary(env, "for ann", f"Patient/{ME}")
    assert _bytes_of(api(env, ann_token, "GET", f"Binary/{to_her}")) == "for ann"
    doc = _document(env, ME)  # a versioned context is judged on the resource as it is now
    versioned = _binary(env, "versioned", f"DocumentReference/{doc}/_history/1")
    assert _bytes_of(api(env, ann_token, "GET", f"Binary/{versioned}")) == "versioned"
    transaction = {"resourceType": "Bundle", "type": "transaction",
                   "entry": [_entry("GET", f"Binary/{mine}")]}
    resp = api(env, ann_token, "POST", "", body=transaction)
    assert resp.status_code == 200, resp.text
    assert base64.b64decode(resp.json()["entry"][0]["resource"]["data"]) == b"ann's note"
    theirs = _binary(env, "bob's note", f"DocumentReference/{_document(env, OTHER)}")
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        _entry("GET", f"Binary/{mine}"), _entry("GET", f"Binary/{theirs}")]}
    resp = api(env, ann_token, "POST", "", body=batch)
    assert resp.status_code == 200, resp.text
    entries = resp.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["200 OK", "404"]
    assert base64.b64decode(entries[0]["resource"]["data"]) == b"ann's note"
    assert "bob's note" not in resp.text and base64.b64encode(b"bob's note").decode() \
        not in resp.text
    logged = api(env, ann_token, "GET", f"Patient/{ME}/$access-log")
    assert logged.status_code == 200, logged.text
    assert f"Binary/{mine}" in logged.text


def test_a_binary_is_hidden_unless_its_security_context_is_the_patients(env, ann_token):
    """Every other securityContext hides the Binary exactly as a missing one (404, no bytes):
    another patient's document or record, none at all, a missing document, a contained or an
    absolute reference (an id on another server is not the one here), another Binary (no
    chains, even to one she may read)."""
    doc = _document(env, ME)
    own = _binary(env, "ann's", f"DocumentReference/{doc}")
    contexts = {
        "another patient's document": f"DocumentReference/{_document(env, OTHER)}",
        "another patient": f"Patient/{OTHER}",
        "no context": None,
        "a missing document": "DocumentReference/no-such-doc",
        "contained": "#doc",
        "an absolute URL elsewhere": f"https://elsewhere.example/fhir/DocumentReference/{doc}",
        "a Binary": f"Binary/{own}",
    }
    for why, context in contexts.items():
        secret = f"hidden behind {why}"
        bid = _binary(env, secret, context)
        for path in (f"Binary/{bid}/_history/1", f"Binary/{bid}"):
            resp = api(env, ann_token, "GET", path)
            assert resp.status_code == 404, (why, path, resp.text)
            assert resp.json()["resourceType"] == "OperationOutcome"
            assert secret not in resp.text and \
                base64.b64encode(secret.encode()).decode() not in resp.text, why
        missing = api(env, ann_token, "GET", "Binary/never-there")  # the read looks the same
        assert outcome_shape(resp, bid) == outcome_shape(missing, "never-there"), why


def test_deleted_binaries_and_contexts(env, ann_token):
    """A deleted Binary of hers is Gone (410), another patient's deleted one looks missing
    (404); a Binary whose document was deleted is hidden too."""
    mine = _binary(env, "ann's", f"DocumentReference/{_document(env, ME)}")
    theirs = _binary(env, "bob's", f"DocumentReference/{_document(env, OTHER)}")
    doc = _document(env, ME)
    orphan = _binary(env, "orphaned", f"DocumentReference/{doc}")
    for rtype, rid in (("Binary", mine), ("Binary", theirs), ("DocumentReference", doc)):
        env.live.adapter.delete(rtype, rid)
    assert api(env, ann_token, "GET", f"Binary/{mine}").status_code == 410
    for bid, secret in ((theirs, "bob's"), (orphan, "orphaned")):
        resp = api(env, ann_token, "GET", f"Binary/{bid}")
        assert resp.status_code == 404 and secret not in resp.text, resp.text


def test_a_binary_needs_its_own_scope_and_its_contexts(env):
    """Reading a Binary takes a scope for Binary (else 403) and one for its context's type
    (else it is hidden: the token could not read the context either)."""
    bid = _binary(env, "ann's", f"DocumentReference/{_document(env, ME)}")
    documents_only = fresh_token(env, scope="launch/patient openid fhirUser "
                                            "patient/DocumentReference.rs")["access_token"]
    resp = api(env, documents_only, "GET", f"Binary/{bid}")
    assert resp.status_code == 403 and "ann's" not in resp.text, resp.text
    binary_only = fresh_token(env, scope="launch/patient openid fhirUser "
                                         "patient/Binary.r")["access_token"]
    resp = api(env, binary_only, "GET", f"Binary/{bid}")
    assert resp.status_code == 404 and "ann's" not in resp.text, resp.text
    both = fresh_token(env, scope="launch/patient openid fhirUser patient/Binary.r "
                                  "patient/DocumentReference.r")["access_token"]
    assert _bytes_of(api(env, both, "GET", f"Binary/{bid}")) == "ann's"


def _fetch(env, token: str, path: str, accept: str | None, **params) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if accept is not None:
        headers["Accept"] = accept
    return httpx.get(f"{env.base}/{path}", headers=headers, params=params, timeout=30)


def test_a_binary_read_that_asks_for_no_fhir_format_is_its_own_bytes(env, ann_token):
    """R4: a Binary read that names no FHIR format is answered in the Binary's own content
    type, as a viewer fetching `attachment.url` wants; the bytes never run on the gateway's
    origin (nosniff, a sandboxing CSP, anything but inert types downloaded). Errors stay
    OperationOutcomes; asking for FHIR JSON (Accept or `_format`) gives the resource."""
    doc = f"DocumentReference/{_document(env, ME)}"
    pdf = b"%PDF-1.4 ann's discharge letter"
    body = {"resourceType": "Binary", "contentType": "application/pdf",
            "securityContext": {"reference": doc}, "data": base64.b64encode(pdf).decode()}
    bid = env.live.adapter.create(body, None).resource["id"]
    for accept in ("application/pdf", "*/*", None):
        resp = _fetch(env, ann_token, f"Binary/{bid}", accept)
        assert resp.status_code == 200, (accept, resp.text)
        assert resp.content == pdf and resp.headers["content-type"] == "application/pdf"
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["content-security-policy"] == "sandbox; default-src 'none'"
        assert "content-disposition" not in resp.headers  # a PDF is shown, not downloaded
        assert resp.headers.get("etag")
    version = _fetch(env, ann_token, f"Binary/{bid}", FHIR_JSON).json()["meta"]["versionId"]
    assert _fetch(env, ann_token, f"Binary/{bid}/_history/{version}", "application/pdf"
                  ).content == pdf
    native = _fetch(env, ann_token, f"Binary/{bid}", "application/pdf")
    assert native.headers["vary"] == "Accept"  # two forms of one URL: caches must tell
    assert native.headers["cache-control"] == "private, no-store"
    for accept, params in ((FHIR_JSON, {}), ("application/json", {}),
                           ("application/fhir+json; fhirVersion=4.0", {}),
                           ("application/pdf, application/json;q=0.5", {}),
                           ("*/*", {"_format": "json"})):
        resp = _fetch(env, ann_token, f"Binary/{bid}", accept, **params)
        assert resp.status_code == 200 and resp.json()["resourceType"] == "Binary", \
            (accept, resp.text)
        assert resp.headers["vary"] == "Accept"
    page = b"<html><script>steal(document.cookie)</script></html>"
    html = env.live.adapter.create(dict(body, contentType="text/html",
                                        data=base64.b64encode(page).decode()), None)
    resp = _fetch(env, ann_token, f"Binary/{html.resource['id']}", "text/html")
    assert resp.status_code == 200 and resp.content == page
    assert resp.headers["content-disposition"] == "attachment"
    assert resp.headers["content-security-policy"] == "sandbox; default-src 'none'"
    theirs = env.live.adapter.create(dict(body, securityContext={
        "reference": f"DocumentReference/{_document(env, OTHER)}"}), None).resource["id"]
    resp = _fetch(env, ann_token, f"Binary/{theirs}", "application/pdf")
    assert resp.status_code == 404 and pdf not in resp.content
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_binary_searches_writes_and_stored_bundles_stay_closed_to_patient_tokens(
        env, ann_token, system_token):
    """Only a read by id can be judged by its context: patient tokens may not search, write
    or history Binary (a search would list anyone's). (Stored Bundles are closed to them too;
    this server serves none.)"""
    bid = _binary(env, "pat-0002's result", "DocumentReference/of-pat-0002")
    assert api(env, system_token, "GET", f"Binary/{bid}").status_code == 200
    before = env.live.fingerprint()
    for method, path, body in (("GET", "Binary", None), ("GET", f"Binary/{bid}/_history", None),
                               ("POST", "Binary", {"resourceType": "Binary",
                                                   "contentType": "text/plain"})):
        resp = api(env, ann_token, method, path, body=body)
        assert resp.status_code == 403, (method, path, resp.text)
        assert "cannot be confined to one patient" in resp.text
        assert "pat-0002's result" not in resp.text
    assert env.live.fingerprint() == before


def test_another_patients_paging_cursor_is_refused(env, ann_token):
    """A next link is bound to the patient it was made for: over REST it is the EHR's own
    link, which carries ann's narrowing; bob replaying it is a 400 naming the cursor."""
    first = api(env, ann_token, "GET", "Observation",
                params={"_count": "1", "_include": "Observation:performer"})
    assert first.status_code == 200, first.text
    nxt = [link["url"] for link in first.json()["link"] if link["relation"] == "next"]
    assert nxt, "ann has more than one Observation: a next link is expected"
    bob = fresh_token(env, username="bob")["access_token"]
    replayed = api(env, bob, "GET", nxt[0])
    assert replayed.status_code == 400, replayed.text
    outcome = replayed.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["_cursor"]
    again = api(env, ann_token, "GET", nxt[0])  # still ann's, and it still works for her
    assert again.status_code == 200, again.text
    assert all(r["subject"]["reference"].endswith(ME) for r in
               (e["resource"] for e in again.json().get("entry", []))
               if r["resourceType"] == "Observation")


# -- writes ------------------------------------------------------------------------------------

def _other_observation(other_data) -> dict:
    return other_data["Observation"][0]


@pytest.mark.parametrize("body", [
    observation(OTHER),
    observation(ME, performer=[{"reference": f"Patient/{OTHER}"}]),
    observation(ME, focus=[{"reference": f"Patient/{OTHER}"}]),
    observation(OTHER, performer=[{"reference": f"Patient/{ME}"}]),
    {"resourceType": "Condition", "subject": {"reference": f"Patient/{OTHER}"},
     "code": {"text": "planted"}},
    {"resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{OTHER}"},
     "code": {"text": "planted"}},
    {"resourceType": "Patient", "id": OTHER, "name": [{"family": "Planted"}]},
    # an EHR resolves a conditional reference to whichever patient matches it
    observation(ME, subject={"reference": "Patient?identifier=urn:mrn|B-0001"},
                performer=[{"reference": f"Patient/{ME}"}]),
    observation(ME, focus=[{"reference": f"Patient/{ME}?_id={OTHER}"}]),
], ids=["subject", "performer", "focus", "subject-with-own-performer", "condition",
        "allergy", "patient", "conditional-subject", "own-id-with-a-query"])
def test_create_for_other_patient_is_403_and_stores_nothing(env, ann_token, body):
    before = env.live.fingerprint()
    resp = api(env, ann_token, "POST", body["resourceType"], body=body)
    assert resp.status_code == 403, resp.text
    assert resp.json()["resourceType"] == "OperationOutcome"
    assert env.live.fingerprint() == before


@pytest.mark.parametrize("subject", [
    f"Patient/{OTHER}/_history/1",
    "{base}/Patient/" + OTHER,
    f"Patient/{OTHER}/",
], ids=["versioned", "absolute", "trailing-slash"])
def test_create_with_other_patient_in_another_spelling_is_403(env, ann_token, system_token,
                                                               subject):
    """The policy must see a reference to pat-0002 however it is spelled: the store indexes
    these spellings as pat-0002, so a planted resource would join pat-0002's record."""
    body = observation(ME, subject={"reference": subject.format(base=env.base)},
                       performer=[{"reference": f"Patient/{ME}"}])
    before = env.live.fingerprint()
    other_before = len(search(env, system_token, "Observation", {"patient": OTHER,
                                                                 "_count": "1000"}))
    resp = api(env, ann_token, "POST", "Observation", body=body)
    if resp.status_code == 201:  # clean up before failing, so the other tests see the seed
        env.live.adapter.delete("Observation", resp.json()["id"])
    assert resp.status_code == 403, resp.text
    assert env.live.fingerprint() == before
    assert len(search(env, system_token, "Observation", {"patient": OTHER,
                                                         "_count": "1000"})) == other_before


@pytest.mark.parametrize("subject", [
    f"Patient/{OTHER}/_history/1",
    "{base}/Patient/" + OTHER,
    f"Patient/{OTHER}/",
], ids=["versioned", "absolute", "trailing-slash"])
def test_other_patients_resource_in_another_spelling_stays_hidden(env, ann_token, subject):
    """pat-0002's Observation (subject spelled as a versioned or absolute reference, which the
    store indexes as pat-0002) that also names pat-0001 must not be shown to ann."""
    body = observation(OTHER, subject={"reference": subject.format(base=env.base)},
                       performer=[{"reference": f"Patient/{ME}"}])
    rid = env.live.adapter.create(body, None).resource["id"]  # as an EHR import would
    try:
        missing = api(env, ann_token, "GET", "Observation/no-such-id-0002")
        resp = api(env, ann_token, "GET", f"Observation/{rid}")
        assert outcome_shape(resp, rid) == outcome_shape(missing, "no-such-id-0002")
        assert search(env, ann_token, "Observation", {"_id": rid}) == []
    finally:
        env.live.adapter.delete("Observation", rid)


def test_update_other_patients_observation_is_404_and_unchanged(env, ann_token, system_token,
                                                                 other_data):
    target = _other_observation(other_data)
    before = system_read(env, system_token, "Observation", target["id"]).json()
    missing = api(env, ann_token, "PUT", "Observation/no-such-id-0002",
                  body=dict(observation(ME), id="no-such-id-0002"))
    for body in (dict(before, status="entered-in-error"),
                 dict(before, subject={"reference": f"Patient/{ME}"})):  # "take it over"
        fp = env.live.fingerprint()
        resp = api(env, ann_token, "PUT", f"Observation/{target['id']}", body=body)
        assert resp.status_code == 404, resp.text
        assert outcome_shape(resp, target["id"]) == outcome_shape(missing, "no-such-id-0002")
        assert env.live.fingerprint() == fp
    assert system_read(env, system_token, "Observation", target["id"]).json() == before


def test_update_never_creates_inside_other_patients_record(env, ann_token, system_token):
    rid = unique("planted")
    before = env.live.fingerprint()
    resp = api(env, ann_token, "PUT", f"Observation/{rid}", body=dict(observation(OTHER), id=rid))
    assert resp.status_code in (403, 404), resp.text
    assert env.live.fingerprint() == before
    assert system_read(env, system_token, "Observation", rid).status_code == 404


def test_moving_own_observation_to_other_patient_is_403(env, ann_token, system_token):
    mine = api(env, ann_token, "GET", "Observation", params={"_count": "1"}).json()[
        "entry"][0]["resource"]
    fp = env.live.fingerprint()
    resp = api(env, ann_token, "PUT", f"Observation/{mine['id']}",
               body=dict(mine, subject={"reference": f"Patient/{OTHER}"}))
    assert resp.status_code == 403, resp.text
    assert env.live.fingerprint() == fp
    assert system_read(env, system_token, "Observation", mine["id"]).json() == mine


def test_delete_other_patients_observation_is_404_and_kept(env, ann_token, system_token,
                                                           other_data):
    target = _other_observation(other_data)
    before = system_read(env, system_token, "Observation", target["id"]).json()
    fp = env.live.fingerprint()
    resp = api(env, ann_token, "DELETE", f"Observation/{target['id']}")
    missing = api(env, ann_token, "DELETE", "Observation/no-such-id-0002")
    assert resp.status_code == 404, resp.text
    assert outcome_shape(resp, target["id"]) == outcome_shape(missing, "no-such-id-0002")
    assert env.live.fingerprint() == fp
    assert system_read(env, system_token, "Observation", target["id"]).json() == before


# -- Bundles -----------------------------------------------------------------------------------

def _entry(method: str, url: str, resource: dict | None = None) -> dict:
    entry = {"request": {"method": method, "url": url}}
    if resource is not None:
        entry["resource"] = resource
        entry["fullUrl"] = f"urn:uuid:{uuid.uuid4()}"
    return entry


def _smuggled(kind: str, other_data) -> tuple[dict, int]:
    target = _other_observation(other_data)
    if kind == "post":
        return _entry("POST", "Observation", observation(OTHER)), 403
    if kind == "put":  # the body itself names pat-0002: refused for what it says
        return _entry("PUT", f"Observation/{target['id']}",
                      dict(target, status="entered-in-error")), 403
    if kind == "put-takeover":  # the body is ann's: refused because the target is hidden
        return _entry("PUT", f"Observation/{target['id']}",
                      dict(target, subject={"reference": f"Patient/{ME}"})), 404
    if kind == "delete":
        return _entry("DELETE", f"Observation/{target['id']}"), 404
    if kind == "read":
        return _entry("GET", f"Observation/{target['id']}"), 404
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["post", "put", "put-takeover", "delete", "read"])
def test_transaction_smuggling_other_patient_is_rejected_whole(env, ann_token, system_token,
                                                               other_data, kind):
    smuggled, status = _smuggled(kind, other_data)
    target = _other_observation(other_data)
    before_target = system_read(env, system_token, "Observation", target["id"]).json()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        _entry("POST", "Observation", observation(ME)), smuggled,
        _entry("POST", "Observation", observation(ME))]}
    def own_ids() -> set[str]:
        return {r["id"] for r in search(env, system_token, "Observation",
                                        {"patient": ME, "_count": "1000"})}

    mine = own_ids()
    fp = env.live.fingerprint()
    resp = api(env, ann_token, "POST", "", body=bundle)
    after = env.live.fingerprint()
    created = sorted(own_ids() - mine)
    for rid in created:  # clean up before failing, so the other tests see the seed
        env.live.adapter.delete("Observation", rid)
    assert resp.status_code == status, resp.text
    assert resp.json()["resourceType"] == "OperationOutcome"
    assert created == [], f"refused transaction stored {created}"
    assert after == fp
    assert system_read(env, system_token, "Observation", target["id"]).json() == before_target


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_transaction_entry_on_hidden_resource_looks_missing(env, ann_token, other_data, method):
    """A transaction touching pat-0002's resource must fail exactly as for a missing id."""
    target = _other_observation(other_data)["id"]

    def run(rid: str) -> httpx.Response:
        bundle = {"resourceType": "Bundle", "type": "transaction",
                  "entry": [_entry(method, f"Observation/{rid}")]}
        return api(env, ann_token, "POST", "", body=bundle)

    hidden, missing = run(target), run("no-such-id-0002")
    assert hidden.status_code == 404, hidden.text
    assert outcome_shape(hidden, target) == outcome_shape(missing, "no-such-id-0002")


def test_transaction_search_entry_returns_nothing_of_other_patient(env, ann_token):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        _entry("GET", f"Observation?patient={OTHER}"),
        _entry("GET", f"Observation?subject=Patient/{OTHER}&_include=Observation:patient"),
        _entry("GET", f"Patient?_id={OTHER}&_revinclude=Observation:patient"),
        _entry("GET", "Observation?_count=1000&_include=Observation:patient")]}
    resp = api(env, ann_token, "POST", "", body=bundle)
    assert resp.status_code == 200, resp.text
    entries = resp.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["200 OK"] * 4
    for entry in entries[:3]:
        assert entry["resource"].get("entry", []) == []
    own = [e["resource"] for e in entries[3]["resource"].get("entry", [])]
    assert own and not [r["id"] for r in own if mentions_other(r)]


def test_batch_confines_each_entry(env, ann_token, system_token, other_data):
    target = _other_observation(other_data)
    before_target = system_read(env, system_token, "Observation", target["id"]).json()
    other_count = len(search(env, system_token, "Observation",
                             {"patient": OTHER, "_count": "1000"}))
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        _entry("POST", "Observation", observation(ME)),
        _entry("POST", "Observation", observation(OTHER)),
        _entry("GET", f"Observation?patient={OTHER}"),
        _entry("GET", f"Observation/{target['id']}"),
        _entry("PUT", f"Observation/{target['id']}", dict(target, status="entered-in-error")),
        _entry("DELETE", f"Observation/{target['id']}"),
        _entry("GET", "Observation?_count=1000")]}
    resp = api(env, ann_token, "POST", "", body=bundle)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["type"] == "batch-response"
    entries = out["entry"]
    statuses = [e["response"]["status"] for e in entries]
    created = entries[0]["response"].get("location", "").split("/_history")[0]
    try:
        assert statuses == ["201 Created", "403", "200 OK", "404", "404", "404", "200 OK"]
        assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
        assert entries[2]["resource"].get("entry", []) == []
        own = [e["resource"] for e in entries[6]["resource"].get("entry", [])]
        assert own and not [r["id"] for r in own if mentions_other(r)]
        assert system_read(env, system_token, "Observation", target["id"]).json() == \
            before_target
        assert len(search(env, system_token, "Observation",
                          {"patient": OTHER, "_count": "1000"})) == other_count
    finally:
        if created:
            assert api(env, ann_token, "DELETE", created).status_code == 204


# -- category-limited scope --------------------------------------------------------------------

@pytest.fixture(scope="module", params=["consent-narrowed", "asked"])
def vitals_token(request, env) -> dict:
    if request.param == "consent-narrowed":
        narrow = {"patient/Observation.rs": "patient/Observation.rs?category=vital-signs"}
        return fresh_token(env, scope="launch/patient patient/Observation.rs", narrow=narrow)
    return fresh_token(env, scope="launch/patient patient/Observation.rs?category=vital-signs")


@pytest.fixture(scope="module")
def own_lab(env, system_token) -> list[dict]:
    rows = search(env, system_token, "Observation",
                  {"patient": ME, "category": "laboratory", "_count": "1000"})
    assert rows
    return rows


def _categories(resource: dict) -> set[str]:
    return {c["code"] for cat in resource.get("category", []) for c in cat.get("coding", [])}


def test_category_scope_is_what_the_token_says(vitals_token):
    assert vitals_token["scope"].split() == ["launch/patient",
                                             "patient/Observation.rs?category=vital-signs"]
    assert jwt_claims(vitals_token["access_token"])["scope"] == vitals_token["scope"]


@pytest.mark.parametrize("query", [
    {"category": "laboratory"},
    {"category": f"{CATEGORY}|laboratory"},
    {"category": "laboratory", "patient": ME},
    {"code": "2345-7"},  # glucose, a laboratory code
], ids=["category", "category-system", "with-patient", "lab-code"])
def test_category_scope_hides_laboratory_from_search(env, vitals_token, query):
    rows = search(env, vitals_token["access_token"], "Observation", dict(query, _count="1000"))
    assert [r["id"] for r in rows if "vital-signs" not in _categories(r)] == []


def test_category_scope_plain_search_only_vital_signs(env, vitals_token):
    for query in ({}, {"category": "laboratory,vital-signs"}, {"patient": ME}):
        rows = search(env, vitals_token["access_token"], "Observation",
                      dict(query, _count="1000"))
        assert rows, query
        assert all(_categories(r) == {"vital-signs"} for r in rows), query


def test_category_scope_reads_of_laboratory_look_missing(env, vitals_token, own_lab):
    token = vitals_token["access_token"]
    missing = api(env, token, "GET", "Observation/no-such-id-0002")
    assert missing.status_code == 404
    for lab in own_lab[:10]:
        resp = api(env, token, "GET", f"Observation/{lab['id']}")
        assert outcome_shape(resp, lab["id"]) == outcome_shape(missing, "no-such-id-0002")
        assert search(env, token, "Observation", {"_id": lab["id"]}) == []
        resp = api(env, token, "GET", f"Observation/{lab['id']}/_history")
        assert resp.status_code == 404 or not resp.json().get("entry"), resp.text


@pytest.mark.parametrize("scope", [
    "openid fhirUser user/*.rs", "launch/patient patient/*.read", "launch/patient user/*.*",
    "launch/patient patient/Observation.rs patient/Patient.rs",
])
def test_other_scope_spellings_are_confined_too(env, other_data, scope):
    token = fresh_token(env, scope=scope)["access_token"]
    target = _other_observation(other_data)["id"]
    assert api(env, token, "GET", f"Observation/{target}").status_code == 404
    assert api(env, token, "GET", f"Patient/{OTHER}").status_code == 404
    assert search(env, token, "Observation", {"patient": OTHER}) == []
    rows = search(env, token, "Observation", {"_count": "1000"})
    assert rows and [r["id"] for r in rows if mentions_other(r)] == []


# == EHR launch context =========================================================================

def test_launch_context_of_another_client_is_refused(env, smart, other_public):
    launch = smart.records.create_launch(other_public, ME, None)
    resp = authorize(env, launch=launch, scope="launch openid fhirUser patient/*.rs")
    assert resp.status_code == 302, resp.text
    query = location_query(resp)
    assert query["error"] == ["invalid_request"] and "code" not in query


def test_launch_for_another_patient_is_refused_at_sign_in(env, smart):
    launch = smart.records.create_launch("app-public", OTHER, None)
    _, challenge = pkce_pair()
    params = env.authorize_params("app-public", "launch openid fhirUser patient/*.rs", challenge,
                                  launch=launch)
    before = issued_count(smart)
    resp = env.sign_in(params, "ann")
    assert resp.status_code == 403, resp.text
    assert "location" not in resp.headers and 'name="grant"' not in resp.text
    assert issued_count(smart) == before


# == consent ====================================================================================

def test_consent_deny_is_access_denied(env, smart):
    _, challenge = pkce_pair()
    params = env.authorize_params("app-public", PATIENT_SCOPE, challenge)
    before = issued_count(smart)
    resp = env.consent(env.sign_in(params, "ann"), decision="deny")
    assert resp.status_code == 302, resp.text
    query = location_query(resp)
    assert query["error"] == ["access_denied"] and query["state"] == ["st-1"]
    assert "code" not in query
    assert issued_count(smart) == before


def test_consent_granting_less_than_asked(env):
    scope = "launch/patient openid fhirUser patient/Observation.rs patient/Condition.rs"
    tok = fresh_token(env, scope=scope, grants=["patient/Observation.rs"])
    assert "patient/Condition.rs" not in tok["scope"].split()
    assert "patient/Observation.rs" in tok["scope"].split()
    token = tok["access_token"]
    assert api(env, token, "GET", "Condition").status_code == 403
    assert api(env, token, "GET", "Observation").status_code == 200


def test_consent_form_grants_nothing_that_was_not_asked(env):
    scope = "launch/patient patient/Observation.rs"
    tok = fresh_token(env, scope=scope,
                      grants=["patient/Observation.rs", "patient/*.cruds", "system/*.cruds",
                              "offline_access"])
    assert tok["scope"].split() == ["launch/patient", "patient/Observation.rs"]
    assert "refresh_token" not in tok
    token = tok["access_token"]
    assert api(env, token, "GET", "Condition").status_code == 403
    assert api(env, token, "POST", "Observation", body=observation(ME)).status_code == 403


@pytest.mark.parametrize("wider", ["patient/*.cruds", "patient/Observation.cruds",
                                   "system/Observation.rs", "patient/Observation.rs?category="])
def test_consent_form_cannot_widen_by_narrowing(env, smart, wider):
    _, challenge = pkce_pair()
    params = env.authorize_params("app-public", "launch/patient patient/Observation.rs",
                                  challenge)
    before = issued_count(smart)
    resp = env.consent(env.sign_in(params, "ann"), narrow={"patient/Observation.rs": wider})
    assert resp.status_code == 400, resp.text
    assert "location" not in resp.headers and "code=" not in resp.text
    assert "Nothing was shared" in resp.text
    assert issued_count(smart) == before


def test_proxy_user_picks_a_patient(env):
    _, challenge = pkce_pair()
    page = env.sign_in(env.authorize_params("app-public", PATIENT_SCOPE, challenge), "carol")
    assert page.status_code == 200
    assert set(re.findall(r'name="patient" value="([^"]+)"', page.text)) == {"pat-0001",
                                                                             "pat-0003"}
    tok = fresh_token(env, username="carol", patient="pat-0003")
    assert tok["patient"] == "pat-0003"
    token = tok["access_token"]
    assert jwt_claims(token)["patient"] == "pat-0003"
    assert api(env, token, "GET", "Patient/pat-0003").status_code == 200
    assert api(env, token, "GET", "Patient/pat-0001").status_code == 404
    assert {p["id"] for p in search(env, token, "Patient")} == {"pat-0003"}


@pytest.mark.parametrize("patient", [OTHER, "no-such-patient"])
def test_proxy_user_cannot_pick_someone_elses_patient(env, smart, patient):
    _, challenge = pkce_pair()
    params = env.authorize_params("app-public", PATIENT_SCOPE, challenge)
    before = issued_count(smart)
    resp = env.consent(env.sign_in(params, "carol"), patient=patient)
    assert resp.status_code == 403, resp.text
    assert "location" not in resp.headers and "code=" not in resp.text
    assert issued_count(smart) == before


def test_single_patient_user_cannot_pick_another(env):
    _, challenge = pkce_pair()
    params = env.authorize_params("app-public", PATIENT_SCOPE, challenge)
    resp = env.consent(env.sign_in(params, "ann"), patient=OTHER)
    assert resp.status_code == 403, resp.text
    assert "location" not in resp.headers


# == login ======================================================================================

@pytest.mark.parametrize("username", ["ann", "nobody-here"])
def test_login_wrong_password_is_a_plain_401(env, username):
    _, challenge = pkce_pair()
    params = env.authorize_params("app-public", PATIENT_SCOPE, challenge)
    resp = env.sign_in(params, username, password="wrong password!")
    assert resp.status_code == 401
    assert "The username or password is not correct." in resp.text
    assert "Traceback" not in resp.text and 'name="grant"' not in resp.text
    assert "location" not in resp.headers


def test_five_failures_lock_the_account(env, smart):
    username = unique("lockme")
    smart.accounts.add(username, PASSWORD, fhir_user="Patient/pat-0003")
    _, challenge = pkce_pair()
    params = env.authorize_params("app-public", PATIENT_SCOPE, challenge)
    for _ in range(5):
        resp = env.sign_in(params, username, password="wrong password!")
        assert resp.status_code == 401
        assert "not correct" in resp.text
    resp = env.sign_in(params, username)  # the right password, too late
    assert resp.status_code == 401
    assert "locked" in resp.text
    assert 'name="grant"' not in resp.text


def test_totp_is_required_checked_and_single_use(env, smart):
    username = unique("totp")
    secret = smart.accounts.add(username, PASSWORD, fhir_user="Patient/pat-0003", totp=True)
    totp = pyotp.TOTP(secret)
    _, challenge = pkce_pair()
    params = env.authorize_params("app-public", PATIENT_SCOPE, challenge)

    resp = env.sign_in(params, username)
    assert resp.status_code == 401
    assert "Enter the 6-digit code" in resp.text and 'name="grant"' not in resp.text

    now = int(time.time()) // totp.interval
    near = {totp.generate_otp(now + d) for d in range(-2, 3)}
    wrong = next(c for c in (f"{n:06d}" for n in range(0, 10**6, 111_111)) if c not in near)
    resp = env.sign_in(params, username, otp=wrong)
    assert resp.status_code == 401
    assert "not correct" in resp.text and 'name="grant"' not in resp.text

    code = totp.now()
    resp = env.sign_in(params, username, otp=code)
    assert resp.status_code == 200, resp.text
    assert 'name="grant"' in resp.text and 'name="decision"' in resp.text

    resp = env.sign_in(params, username, otp=code)  # the same code again
    assert resp.status_code == 401
    assert "already been used" in resp.text
