"""Secrets at rest: after every kind of SMART flow, the state database holds no secret in clear.

The module runs the flows once (a confidential client with a known secret; a patient with a
known password and TOTP; an authorization code issued and exchanged; a refresh token issued for
offline_access and rotated; an EHR launch context; a backend-services assertion), then reads the
raw bytes of every file in the data directory (the SQLite file and its WAL) and every row of
every table, and looks for each secret. Then: key files are private, the audit chain verifies,
and an edited audit entry is found (on a copy of the database).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import stat
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import MetaData, create_engine, inspect, select, text

from fhir_gateway.audit import AuditLog
from tests.conftest import make_smart_env
from tests.smart_support import PASSWORD, REDIRECT, pkce_pair


@pytest.fixture(scope="module", params=["embedded"])
def smart_env(request, tmp_path_factory):
    """The authorization server does not depend on the EHR: the embedded store only."""
    yield from make_smart_env(tmp_path_factory, request.param)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _code_from(redirect: httpx.Response) -> str:
    assert redirect.status_code == 302, redirect.text
    query = parse_qs(urlsplit(redirect.headers["location"]).query)
    assert query["state"] == ["st-1"]
    return query["code"][0]


@pytest.fixture(scope="module")
def flows(smart_env) -> dict:
    """Run every flow once; return the secrets it used or produced, by name."""
    smart = smart_env.smart
    found: dict[str, str] = {"ann password": PASSWORD}

    # A confidential client with a known secret.
    client_secret = f"client-secret-{secrets.token_urlsafe(24)}"
    smart.clients.add("conf-app", "symmetric", secret=client_secret, redirect_uris=[REDIRECT])
    found["client secret"] = client_secret

    # A patient with a known password and TOTP, signing in with a current code.
    password = f"dana-pw-{secrets.token_urlsafe(12)}"
    totp_secret = smart.accounts.add("dana", password, fhir_user="Patient/pat-0002",
                                     patients=["pat-0002"], totp=True)
    assert totp_secret and smart.accounts.get("dana").totp_enrolled
    found["dana password"] = password
    found["TOTP secret"] = totp_secret

    # Standalone launch: code issued, exchanged with client_secret_basic; offline refresh.
    verifier, challenge = pkce_pair()
    params = smart_env.authorize_params(
        "conf-app", "launch/patient openid fhirUser offline_access patient/*.rs", challenge)
    consent_page = smart_env.sign_in(params, "dana", password,
                                     otp=pyotp.TOTP(totp_secret).now())
    code = _code_from(smart_env.consent(consent_page))
    resp = smart_env.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                           code_verifier=verifier, basic=("conf-app", client_secret))
    assert resp.status_code == 200, resp.text
    first = resp.json()
    assert first["patient"] == "pat-0002" and "offline_access" in first["scope"].split()
    found.update({"authorization code": code, "PKCE verifier": verifier,
                  "access token": first["access_token"], "refresh token": first["refresh_token"],
                  "id token": first["id_token"]})

    resp = smart_env.token(grant_type="refresh_token", refresh_token=first["refresh_token"],
                           basic=("conf-app", client_secret))
    assert resp.status_code == 200, resp.text
    second = resp.json()
    assert second["refresh_token"] != first["refresh_token"]
    found.update({"refreshed access token": second["access_token"],
                  "rotated refresh token": second["refresh_token"]})

    # EHR launch: a launch context used by ann through conf-app (client_secret_post), and one
    # never used.
    launch = smart.records.create_launch("conf-app", "pat-0001", None)
    unused_launch = smart.records.create_launch("conf-app", "pat-0003", None)
    ehr_code, ehr_verifier = smart_env.code_for("conf-app", "ann",
                                                "launch openid fhirUser patient/*.rs",
                                                launch=launch)
    resp = smart_env.token(grant_type="authorization_code", code=ehr_code, redirect_uri=REDIRECT,
                           code_verifier=ehr_verifier, client_id="conf-app",
                           client_secret=client_secret)
    assert resp.status_code == 200, resp.text
    ehr = resp.json()
    assert ehr["patient"] == "pat-0001"
    found.update({"launch id": launch, "unused launch id": unused_launch,
                  "EHR authorization code": ehr_code, "EHR access token": ehr["access_token"]})

    # Backend services: a signed assertion whose jti is recorded.
    key = RSAKey.generate_key(2048, private=True)
    kid = key.thumbprint()
    smart.clients.add("backend", "asymmetric", scope="system/*.rs", jwks={"keys": [
        dict(key.as_dict(private=False), kid=kid, alg="RS384", use="sig")]})
    jti = uuid.uuid4().hex
    assertion = jwt.encode({"alg": "RS384", "kid": kid, "typ": "JWT"},
                           {"iss": "backend", "sub": "backend", "aud": smart.endpoints.token,
                            "exp": int(time.time()) + 240, "jti": jti}, key,
                           algorithms=["RS384"])
    resp = httpx.post(f"{smart_env.auth}/token", timeout=30, data={
        "grant_type": "client_credentials", "scope": "system/*.rs",
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
    assert resp.status_code == 200, resp.text
    found.update({"client assertion": assertion,
                  "backend access token": resp.json()["access_token"]})

    # The tokens work (and leave FHIR-access entries in the audit log).
    for name, patient in (("refreshed access token", "pat-0002"),
                          ("EHR access token", "pat-0001"),
                          ("backend access token", "pat-0003")):
        with smart_env.fhir(found[name]) as fhir:
            assert fhir.get(f"Patient/{patient}").status_code == 200, name
    return {"secrets": found, "jti": jti}


def state_db_path(smart) -> Path:
    path = Path(smart.engine.url.database)
    assert path.name == "gateway.sqlite3" and path.is_file()
    assert path.parent == Path(smart.data_dir)
    return path


def raw_files(data_dir: Path) -> dict[Path, bytes]:
    """Every file in the data directory, byte for byte (the SQLite file, its WAL, keys...)."""
    return {p: p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()}


def all_rows(engine) -> dict[str, list[dict]]:
    meta = MetaData()
    meta.reflect(engine)
    assert set(meta.tables) == set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        return {name: [dict(r) for r in conn.execute(select(table)).mappings()]
                for name, table in meta.tables.items()}


# -- no secret in clear -------------------------------------------------------------------------

def test_the_raw_state_files_hold_no_secret(smart_env, flows):
    smart = smart_env.smart
    db = state_db_path(smart)
    files = raw_files(Path(smart.data_dir))
    assert db in files
    state = b"".join(data for path, data in files.items() if path.name.startswith(db.name))
    # The scan sees the records the flows wrote (hashed), so a miss is meaningful.
    assert sha256(flows["secrets"]["rotated refresh token"]).encode() in state
    assert flows["jti"].encode() in state
    for name, value in flows["secrets"].items():
        needle = value.encode()
        for path, data in files.items():
            assert needle not in data, f"the {name} is stored in clear in {path}"
        if name.endswith("token") and value.count(".") == 2:  # a JWT: its signature alone
            assert not any(value.split(".")[2].encode() in d for d in files.values()), name


def test_no_table_row_holds_a_secret(smart_env, flows):
    rows = all_rows(smart_env.smart.engine)
    expected = {"oauth_client", "user_account", "auth_code", "issued_token", "refresh_token",
                "launch_context", "assertion_jti", "audit_log", "audit_head"}
    assert expected <= set(rows), sorted(rows)
    assert len(rows["auth_code"]) >= 2 and len(rows["refresh_token"]) >= 2
    for table, table_rows in rows.items():
        for row in table_rows:
            cells = [str(v) for v in row.values() if v is not None]
            for name, value in flows["secrets"].items():
                assert not any(value in cell for cell in cells), \
                    f"the {name} is stored in clear in {table}: {row}"


def test_what_is_stored_instead(smart_env, flows):
    """The stored forms: argon2 hashes, an encrypted TOTP seed, SHA-256 digests, bare jtis."""
    rows = all_rows(smart_env.smart.engine)
    found = flows["secrets"]
    conf = next(r for r in rows["oauth_client"] if r["client_id"] == "conf-app")
    assert conf["secret_hash"].startswith("$argon2")
    dana = next(r for r in rows["user_account"] if r["username"] == "dana")
    assert dana["password_hash"].startswith("$argon2")
    assert dana["totp_secret"] and dana["totp_last_step"] is not None
    assert smart_env.smart.accounts.box.decrypt(dana["totp_secret"]) == found["TOTP secret"]
    codes = {r["code_hash"] for r in rows["auth_code"]}
    assert {sha256(found["authorization code"]), sha256(found["EHR authorization code"])} <= codes
    refresh = {r["token_hash"]: r for r in rows["refresh_token"]}
    assert refresh[sha256(found["refresh token"])]["rotated"]
    assert not refresh[sha256(found["rotated refresh token"])]["rotated"]
    launches = {r["launch_hash"] for r in rows["launch_context"]}
    assert {sha256(found["launch id"]), sha256(found["unused launch id"])} <= launches
    assert flows["jti"] in {r["jti"] for r in rows["assertion_jti"] if r["client_id"] == "backend"}


def test_key_files_are_private(smart_env, flows):
    keys = Path(smart_env.smart.data_dir) / "keys"
    files = [p for p in keys.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"secrets.key", "cursor.key"} <= names
    assert any(name.endswith(".jwk.json") for name in names)
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, f"{path} has mode {mode:o}"


# -- the audit chain ----------------------------------------------------------------------------

def test_audit_chain_verifies_and_an_edit_is_found(smart_env, flows, tmp_path):
    audit = smart_env.live.app.extensions["fhir_gateway"].audit
    result = audit.verify()
    assert result.ok, result.reason
    # 2 consents, 4 token grants, 3 FHIR reads at least
    assert result.entries >= 9

    # Edit the 2nd entry of a consistent copy of the state database (SQLite's backup API
    # includes what is still in the WAL), leaving the live log alone.
    copy = tmp_path / "gateway-copy.sqlite3"
    source = sqlite3.connect(state_db_path(smart_env.smart))
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    engine = create_engine(f"sqlite:///{copy}")
    try:
        copied = AuditLog(engine)
        assert copied.verify().ok
        with engine.begin() as conn:
            outcome = conn.execute(text("SELECT outcome FROM audit_log WHERE seq = 2")).scalar()
            forged = "denied" if outcome != "denied" else "allowed"
            changed = conn.execute(text("UPDATE audit_log SET outcome = :o WHERE seq = 2"),
                                   {"o": forged}).rowcount
        assert changed == 1
        tampered = copied.verify()
        assert not tampered.ok
        assert tampered.first_bad == 2
        assert "entry 2" in tampered.reason
    finally:
        engine.dispose()
    assert audit.verify().ok  # the live log was not touched
