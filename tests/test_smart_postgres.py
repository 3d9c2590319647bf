"""The gateway's own state (clients, codes, tokens, accounts, audit) on PostgreSQL, as when
several gateway processes share it: a full launch, a confined read, refresh rotation."""

from __future__ import annotations

import pytest

from fhir_gateway.synthetic import generate
from tests.conftest import SEED_TODAY, make_pg_database, start_live_gateway
from tests.smart_support import PASSWORD, REDIRECT, SmartEnv


@pytest.fixture(scope="module")
def pg_env(pg_server, tmp_path_factory):
    state_url, drop_state = make_pg_database(pg_server)
    ehr_url, drop_ehr = make_pg_database(pg_server)
    data = tmp_path_factory.mktemp("smart-pg")
    live, stop = start_live_gateway(data, ehr_url, {"DATABASE_URL": state_url}, auth=True)
    live.adapter.load(generate(2, 7, SEED_TODAY))
    smart = live.app.extensions["smart"]
    assert smart.engine.dialect.name == "postgresql"
    smart.clients.add("app-public", "public", redirect_uris=[REDIRECT])
    smart.accounts.add("ann", PASSWORD, fhir_user="Patient/pat-0001", patients=["pat-0001"])
    env = SmartEnv(live, smart)
    yield env
    env.browser.close()
    stop()
    drop_state()
    drop_ehr()


def test_launch_read_and_refresh_on_postgres(pg_env):
    token = pg_env.patient_token("app-public", "ann",
                                 scope="launch/patient offline_access patient/*.rs")
    with pg_env.fhir(token["access_token"]) as client:
        assert client.get("Patient/pat-0001").status_code == 200
        assert client.get("Patient/pat-0002").status_code == 404
    first = pg_env.token(grant_type="refresh_token", refresh_token=token["refresh_token"],
                         client_id="app-public")
    assert first.status_code == 200
    reuse = pg_env.token(grant_type="refresh_token", refresh_token=token["refresh_token"],
                         client_id="app-public")
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    with pg_env.fhir(first.json()["access_token"]) as client:
        assert client.get("Patient/pat-0001").status_code == 401  # the family was revoked
    audit = pg_env.live.app.extensions["fhir_gateway"].audit
    assert audit.engine.dialect.name == "postgresql" and audit.verify().ok
