"""The audit log through FHIR: admins search AuditEvents with a system token; a patient reads
who accessed their own record; nobody else sees either."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from tests.conftest import make_smart_env


@pytest.fixture(scope="module", params=["embedded"])
def smart_env(request, tmp_path_factory):
    """The authorization server does not depend on the EHR: the embedded store only."""
    yield from make_smart_env(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def tokens(smart_env):
    smart = smart_env.smart
    smart.clients.add("audit-admin", "public", redirect_uris=["http://127.0.0.1:9/a"])
    admin = smart.clients.get("audit-admin")
    return {
        "system": smart.mint(admin, "system/AuditEvent.rs system/Patient.rs"),
        "system_no_audit": smart.mint(admin, "system/Patient.rs"),
        "ann": smart_env.patient_token("app-public", "ann")["access_token"],
        "bob": smart_env.patient_token("app-public", "bob")["access_token"],
    }


def test_patient_sees_who_accessed_their_record(smart_env, tokens):
    with smart_env.fhir(tokens["ann"]) as ann:
        for _ in range(6):
            assert ann.get("Observation", params={"_count": "2"}).status_code == 200
        log = ann.get("Patient/pat-0001/$access-log", params={"_count": "5"})
    assert log.status_code == 200
    bundle = log.json()
    assert bundle["type"] == "searchset" and len(bundle["entry"]) == 5
    for entry in bundle["entry"]:
        event = AuditEvent.model_validate(entry["resource"])
        refs = [e.what.reference for e in event.entity or [] if e.what and e.what.reference]
        assert "Patient/pat-0001" in refs
    assert any(link["relation"] == "next" for link in bundle["link"])


def test_another_patients_access_log_is_not_found(smart_env, tokens):
    with smart_env.fhir(tokens["bob"]) as bob:
        resp = bob.get("Patient/pat-0001/$access-log")
    assert resp.status_code == 404
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_admin_searches_audit_events_by_patient(smart_env, tokens):
    with smart_env.fhir(tokens["system"]) as admin:
        resp = admin.get("AuditEvent", params={"patient": "Patient/pat-0002", "_count": "50"})
    assert resp.status_code == 200
    entries = resp.json().get("entry", [])
    assert entries, "bob's token was used above, so pat-0002 has entries"
    for entry in entries:
        text = str(entry["resource"])
        assert "Patient/pat-0002" in text and "Patient/pat-0001" not in text


@pytest.mark.parametrize("who", ["ann", "system_no_audit"])
def test_audit_search_needs_system_audit_scope(smart_env, tokens, who):
    with smart_env.fhir(tokens[who]) as client:
        resp = client.get("AuditEvent")
    assert resp.status_code == 403
    assert "system/AuditEvent" in resp.json()["issue"][0]["diagnostics"]


def test_audit_chain_verifies_after_traffic(smart_env):
    audit = smart_env.live.app.extensions["fhir_gateway"].audit
    result = audit.verify()
    assert result.ok and result.entries > 5


def test_app_agents_carry_the_apps_registered_name(smart_env, tokens):
    """So "which app" reads as the app's name, even after its access was removed."""
    smart_env.smart.clients.add("named-app", "public", redirect_uris=["http://127.0.0.1:9/n"],
                                name="Named App")
    smart_env.smart.clients.add("nameless-app", "public",
                                redirect_uris=["http://127.0.0.1:9/m"])
    for client_id in ("named-app", "nameless-app"):
        token = smart_env.smart.mint(smart_env.smart.clients.get(client_id),
                                     "patient/*.rs", patient="pat-0001")
        with smart_env.fhir(token) as app:
            assert app.get("Patient/pat-0001").status_code == 200
    with smart_env.fhir(tokens["ann"]) as ann:
        log = ann.get("Patient/pat-0001/$access-log", params={"_count": "10"}).json()
    apps = {}
    for entry in log["entry"]:
        for agent in entry["resource"]["agent"]:
            ident = agent["who"].get("identifier")
            if ident:
                apps[ident["value"]] = agent["who"].get("display")
    assert apps["named-app"] == "Named App"
    assert apps["nameless-app"] is None
