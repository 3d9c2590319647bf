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
