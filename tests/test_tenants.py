"""Several clinics in one gateway: `/t/{clinic}/fhir`, each with its own EHR, discovery
document and tokens."""

from __future__ import annotations

import threading

import httpx
import pytest
from werkzeug.serving import make_server

from adapters.embedded import EmbeddedAdapter
from fhir_gateway.config import load_config
from fhir_gateway.synthetic import generate
from fhir_gateway.tenants import create_wsgi
from tests.conftest import FHIR_JSON, SEED_TODAY, free_port
from tests.rest_support import seeded_upstream


@pytest.fixture(scope="module")
def clinics(tmp_path_factory):
    root = tmp_path_factory.mktemp("tenants")
    upstream = seeded_upstream(root / "upstream", patients=2)
    b_store = root / "b-ehr.sqlite3"
    store = EmbeddedAdapter(f"sqlite:///{b_store}")
    store.load(generate(1, 99, SEED_TODAY))  # a different clinic, different people
    store.close()
    (root / "clinic-a.toml").write_text(
        f'[adapter]\nkind = "fhir_rest"\n[fhir_rest]\nbase_url = "{upstream.base}"\n'
        'vendor = "fhir-gateway"\nname = "clinic-a-ehr"\n')
    (root / "clinic-b.toml").write_text(f'[embedded]\ndatabase_url = "sqlite:///{b_store}"\n')
    port = free_port()
    (root / "main.toml").write_text(
        f'data_dir = "{root / "data"}"\n[server]\nport = {port}\n'
        '[tenants]\nclinic-a = "clinic-a.toml"\nclinic-b = "clinic-b.toml"\n')
    cfg = load_config(root / "main.toml", env={})
    app = create_wsgi(cfg)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"Accept": FHIR_JSON})
    yield client, app
    client.close()
    server.shutdown()
    upstream.stop()


def _token(app, tenant: str, patient: str) -> str:
    smart = app.extensions["tenants"][f"/t/{tenant}"].extensions["smart"]
    if smart.clients.get("portal") is None:
        smart.clients.add("portal", "public", redirect_uris=["http://127.0.0.1:9/cb"])
    return smart.mint(smart.clients.get("portal"), "launch/patient patient/*.rs",
                      patient=patient)


def test_each_clinic_has_its_own_discovery(clinics):
    client, _ = clinics
    for name in ("clinic-a", "clinic-b"):
        found = client.get(f"/t/{name}/fhir/.well-known/smart-configuration")
        assert found.status_code == 200, found.text
        doc = found.json()
        assert doc["issuer"].endswith(f"/t/{name}/fhir")
        assert doc["authorization_endpoint"].endswith(f"/t/{name}/auth/authorize")
        assert doc["token_endpoint"].endswith(f"/t/{name}/auth/token")
        statement = client.get(f"/t/{name}/fhir/metadata").json()
        assert statement["implementation"]["url"].endswith(f"/t/{name}/fhir")
    software = {n: client.get(f"/t/{n}/fhir/metadata").json()["implementation"]["description"]
                for n in ("clinic-a", "clinic-b")}
    assert "via FHIR REST" in software["clinic-a"] and "embedded" in software["clinic-b"]


def test_each_clinic_serves_its_own_ehr(clinics):
    client, app = clinics
    a = _token(app, "clinic-a", "pat-0001")
    got = client.get("/t/clinic-a/fhir/Patient/pat-0001", headers={"Authorization": f"Bearer {a}"})
    assert got.status_code == 200, got.text
    bundle = client.get("/t/clinic-a/fhir/Observation", params={"_count": "2"},
                        headers={"Authorization": f"Bearer {a}"}).json()
    assert all(link["url"].startswith(str(client.base_url) + "/t/clinic-a/fhir/")
               for link in bundle["link"])
    b = _token(app, "clinic-b", "pat-0001")
    there = client.get("/t/clinic-b/fhir/Patient/pat-0001",
                       headers={"Authorization": f"Bearer {b}"})
    assert there.status_code == 200
    assert there.json()["name"] != got.json()["name"]  # another clinic's person


def test_a_token_of_one_clinic_is_refused_at_another(clinics):
    client, app = clinics
    b = _token(app, "clinic-b", "pat-0001")
    resp = client.get("/t/clinic-a/fhir/Patient/pat-0001", headers={"Authorization": f"Bearer {b}"})
    assert resp.status_code == 401
    assert resp.json()["resourceType"] == "OperationOutcome"
    assert client.get("/t/clinic-a/fhir/Patient/pat-0001").status_code == 401


def test_an_unknown_clinic_is_a_clear_404(clinics):
    client, _ = clinics
    resp = client.get("/t/nope/fhir/metadata")
    assert resp.status_code == 404
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_the_environment_configures_the_main_app_not_the_clinics(tmp_path, monkeypatch):
    """FHIR_GATEWAY_DATA and DATABASE_URL set for the main app must not become every
    clinic's data directory and state database."""
    from fhir_gateway.tenants import tenant_config

    (tmp_path / "a.toml").write_text(f'[database]\nurl = "sqlite:///{tmp_path / "a.db"}"\n')
    (tmp_path / "b.toml").write_text(f'data_dir = "{tmp_path / "b-data"}"\n')
    (tmp_path / "main.toml").write_text('[tenants]\nclinic-a = "a.toml"\nclinic-b = "b.toml"\n')
    monkeypatch.setenv("FHIR_GATEWAY_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'main.db'}")
    main = load_config(tmp_path / "main.toml")
    a, b = tenant_config(main, "clinic-a"), tenant_config(main, "clinic-b")
    assert main.state_database_url.endswith("/main.db")
    assert a.state_database_url.endswith("/a.db")
    assert a.data_dir == str(tmp_path / "data" / "tenants" / "clinic-a")
    assert b.data_dir == str(tmp_path / "b-data")
    assert b.state_database_url == f"sqlite:///{tmp_path / 'b-data' / 'gateway.sqlite3'}"


def test_clinics_that_would_share_a_database_refuse_to_start(tmp_path):
    from fhir_gateway.config import ConfigError

    shared = f"sqlite:///{tmp_path / 'one.db'}"
    (tmp_path / "a.toml").write_text(f'[database]\nurl = "{shared}"\n')
    (tmp_path / "b.toml").write_text(f'[database]\nurl = "{shared}"\n')
    (tmp_path / "main.toml").write_text(
        f'data_dir = "{tmp_path / "data"}"\n[tenants]\nclinic-a = "a.toml"\nclinic-b = "b.toml"\n')
    with pytest.raises(ConfigError) as refused:
        create_wsgi(load_config(tmp_path / "main.toml", env={}))
    assert "tenant clinic-b and tenant clinic-a would share one state database" in str(
        refused.value)
    assert not (tmp_path / "one.db").exists()  # refused before anything was made


def test_a_clinics_sign_in_cookie_is_sent_back_to_that_clinic(clinics):
    """The pending sign-in cookie's path is the clinic's own /t/{clinic}/auth (a browser never
    sent a Path=/auth cookie to /t/clinic-b/auth/login, so sign-in at a clinic failed)."""
    _, app = clinics
    smart = app.extensions["tenants"]["/t/clinic-b"].extensions["smart"]
    if smart.clients.get("cookie-app") is None:
        smart.clients.add("cookie-app", "public", redirect_uris=["http://127.0.0.1:9/cb"])
    resp = app.test_client().get("/t/clinic-b/auth/authorize", query_string={
        "response_type": "code", "client_id": "cookie-app",
        "redirect_uri": "http://127.0.0.1:9/cb", "scope": "launch/patient patient/*.rs",
        "state": "s", "aud": smart.audience, "code_challenge": "x" * 43,
        "code_challenge_method": "S256"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert "Path=/t/clinic-b/auth;" in resp.headers["Set-Cookie"]


def test_a_clinic_never_calls_its_ehr_with_the_main_apps_token(tmp_path, monkeypatch):
    """FHIR_GATEWAY_FHIR_REST_BEARER_TOKEN is the main app's; a clinic with its own token file
    uses that file."""
    from fhir_gateway.ehr import rest_settings
    from fhir_gateway.tenants import tenant_config

    (tmp_path / "b.token").write_text("clinic-b-token\n")
    (tmp_path / "b.toml").write_text(
        '[adapter]\nkind = "fhir_rest"\n[fhir_rest]\nbase_url = "https://ehr.test/fhir"\n'
        f'auth = "bearer"\nbearer_token_file = "{tmp_path / "b.token"}"\n')
    (tmp_path / "main.toml").write_text(
        f'data_dir = "{tmp_path / "data"}"\n[tenants]\nclinic-b = "b.toml"\n')
    monkeypatch.setenv("FHIR_GATEWAY_FHIR_REST_BEARER_TOKEN", "main-token")
    main = load_config(tmp_path / "main.toml")
    assert main.fhir_rest.bearer_token == "main-token"
    assert rest_settings(tenant_config(main, "clinic-b")).bearer_token == "clinic-b-token"
