"""`Patient/{id}/$apps` and `Patient/{id}/$revoke-app`: the apps holding a live grant for a
patient, and removing one. Two patients, two apps: removing one app from ann's record makes
its tokens fail at once (401, and its refresh token is refused) while her other app and bob's
grant of the same app keep working; nobody sees another patient's grants; no token values."""

from __future__ import annotations

import hashlib

import pytest

from tests.conftest import make_smart_env
from tests.smart_support import REDIRECT

FULL = "launch/patient openid fhirUser offline_access patient/*.cruds"
VITALS = "launch/patient online_access patient/Observation.rs patient/Patient.rs"


@pytest.fixture(scope="module", params=["embedded"])
def smart_env(request, tmp_path_factory):
    yield from make_smart_env(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def grants(smart_env):
    smart = smart_env.smart
    smart.clients.add("app-two", "public", redirect_uris=[REDIRECT], name="Vitals Diary")
    return {
        ("ann", "app-public"): smart_env.patient_token("app-public", "ann", FULL),
        ("ann", "app-two"): smart_env.patient_token("app-two", "ann", VITALS),
        ("bob", "app-two"): smart_env.patient_token("app-two", "bob", VITALS),
        ("bob", "app-public"): smart_env.patient_token("app-public", "bob", FULL),
    }


def _apps(resp) -> dict[str, dict]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["resourceType"] == "Parameters"
    out = {}
    for param in body.get("parameter", []):
        assert param["name"] == "app"
        parts = {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
                 for p in param["part"]}
        out[parts["client"]] = parts
    return out


def _status(smart_env, token: str) -> int:
    with smart_env.fhir(token) as fhir:
        return fhir.get("Observation", params={"_count": "1"}).status_code


def _secrets(grants) -> list[str]:
    values = [v for t in grants.values() for k, v in t.items()
              if k in ("access_token", "refresh_token")]
    return values + [hashlib.sha256(v.encode()).hexdigest() for v in values]


def test_apps_lists_each_live_grant_of_this_patient_only(smart_env, grants):
    with smart_env.fhir(grants[("ann", "app-public")]["access_token"]) as ann:
        resp = ann.get("Patient/pat-0001/$apps")
    apps = _apps(resp)
    assert set(apps) == {"app-public", "app-two"}
    two = apps["app-two"]
    assert two["name"] == "Vitals Diary" and two["current"] is False
    assert set(two["scope"].split()) == set(grants[("ann", "app-two")]["scope"].split())
    assert two["granted"] < two["expires"] and two["last-used"] >= two["granted"][:19]
    assert apps["app-public"]["current"] is True
    assert "offline_access" in apps["app-public"]["scope"].split()
    for secret in _secrets(grants):
        assert secret not in resp.text
    with smart_env.fhir(grants[("bob", "app-two")]["access_token"]) as bob:
        mine = bob.get("Patient/pat-0002/$apps")
        theirs = bob.get("Patient/pat-0001/$apps")
    assert set(_apps(mine)) == {"app-two", "app-public"}
    assert theirs.status_code == 404 and theirs.json()["resourceType"] == "OperationOutcome"
    assert "pat-0001" not in mine.text


def test_bad_calls_are_refused_and_change_nothing(smart_env, grants):
    smart = smart_env.smart
    before = {p: smart.records.live_grants(p) for p in ("pat-0001", "pat-0002")}
    ann_token = grants[("ann", "app-public")]["access_token"]
    with smart_env.fhir(ann_token) as ann:
        def revoke(client=None, path="Patient/pat-0001/$revoke-app"):
            params = [] if client is None else [{"name": "client", "valueString": client}]
            return ann.post(path, json={"resourceType": "Parameters", "parameter": params},
                            headers={"Content-Type": "application/fhir+json"})
        cases = {
            "missing": (revoke(), 400, "client"),
            "blank": (revoke("  "), 400, "client"),
            "too long": (revoke("x" * 129), 400, "client"),
            "unknown": (revoke("no-such-app"), 404, "client"),
            "another patient's": (revoke("app-two", "Patient/pat-0002/$revoke-app"), 404,
                                  "Patient"),
        }
        by_get = ann.get("Patient/pat-0001/$revoke-app", params={"client": "app-two"})
    for what, (resp, status, where) in cases.items():
        assert resp.status_code == status, (what, resp.text)
        issue = resp.json()["issue"][0]
        assert issue["expression"] == [where], (what, issue)
    assert by_get.status_code == 405
    smart.clients.add("audit-admin", "public", redirect_uris=["http://127.0.0.1:9/a"])
    admin_app = smart.clients.get("audit-admin")
    # not the patient's own choice: a system token, and tokens that carry this patient's
    # context but are no patient's sign-in (a system or clinic-user token with a patient)
    for scope, patient in (("system/Patient.rs system/Patient.u", None),
                           ("system/Patient.rs system/Patient.u", "pat-0001"),
                           ("user/Patient.rs user/Patient.u", "pat-0001")):
        with smart_env.fhir(smart.mint(admin_app, scope, patient=patient)) as admin:
            listed = admin.get("Patient/pat-0001/$apps")
            resp = admin.post("Patient/pat-0001/$revoke-app", json={
                "resourceType": "Parameters",
                "parameter": [{"name": "client", "valueString": "app-two"}]})
        # a system/ grant on a token that carries a patient is not used at all
        refusal = "scopes do not allow" if scope.startswith("system/") and patient else \
            "patient's own token"
        for answer in (listed, resp):
            assert answer.status_code == 403, (scope, patient, answer.text)
            issue = answer.json()["issue"][0]
            assert issue["expression"] == ["Patient"] and refusal in issue["diagnostics"], \
                issue
    smart.records.revoke_client_for_patient("audit-admin", "pat-0001")  # minted just now
    # app-two's token may read Patient but not write it: it can list, not remove
    with smart_env.fhir(grants[("ann", "app-two")]["access_token"]) as two:
        assert two.get("Patient/pat-0001/$apps").status_code == 200
        resp = two.post("Patient/pat-0001/$revoke-app", json={
            "resourceType": "Parameters",
            "parameter": [{"name": "client", "valueString": "app-public"}]})
        assert resp.status_code == 403
    after = {p: smart.records.live_grants(p) for p in ("pat-0001", "pat-0002")}
    assert before == after
    for token in (ann_token, grants[("ann", "app-two")]["access_token"]):
        assert _status(smart_env, token) == 200


def test_revoking_one_app_ends_only_its_grant_for_this_patient(smart_env, grants):
    ann_two = grants[("ann", "app-two")]
    assert _status(smart_env, ann_two["access_token"]) == 200  # and now remembered as live
    epoch = smart_env.smart.records._epoch  # shared by every process on this machine
    assert epoch is not None
    moved_from = epoch.read()
    with smart_env.fhir(grants[("ann", "app-public")]["access_token"]) as ann:
        resp = ann.post("Patient/pat-0001/$revoke-app", json={
            "resourceType": "Parameters",
            "parameter": [{"name": "client", "valueString": "app-two"}]})
        assert resp.status_code == 200, resp.text
        done = {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
                for p in resp.json()["parameter"]}
        assert done["client"] == "app-two" and done["name"] == "Vitals Diary"
        assert done["tokens"] >= 1 and done["grants"] == 1
        for secret in _secrets(grants):
            assert secret not in resp.text
        assert epoch.read() > moved_from  # other processes ask the database again
        # the revoked token fails on its next use; its refresh token is refused
        assert _status(smart_env, ann_two["access_token"]) == 401
        refreshed = smart_env.token(grant_type="refresh_token", client_id="app-two",
                                    refresh_token=ann_two["refresh_token"])
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
        assert set(_apps(ann.get("Patient/pat-0001/$apps"))) == {"app-public"}
        again = ann.post("Patient/pat-0001/$revoke-app", json={
            "resourceType": "Parameters",
            "parameter": [{"name": "client", "valueString": "app-two"}]})
        assert again.status_code == 404 and again.json()["issue"][0]["expression"] == ["client"]
    # ann's other app and bob's grant of the same app keep working
    assert _status(smart_env, grants[("ann", "app-public")]["access_token"]) == 200
    assert _status(smart_env, grants[("bob", "app-two")]["access_token"]) == 200
    with smart_env.fhir(grants[("bob", "app-two")]["access_token"]) as bob:
        assert set(_apps(bob.get("Patient/pat-0002/$apps"))) == {"app-two", "app-public"}
    # the removal is in ann's access log
    audit = smart_env.live.app.extensions["fhir_gateway"].audit
    rows = audit.search(patient="pat-0001", client_id="app-two", count=5)
    assert rows[0]["action"] == "revoke" and rows[0]["outcome"] == "allowed"


def test_operations_are_declared(smart_env, grants):
    with smart_env.fhir(grants[("ann", "app-public")]["access_token"]) as ann:
        statement = ann.get("metadata").json()
        apps = ann.get("OperationDefinition/Patient-apps").json()
        revoke = ann.get("OperationDefinition/Patient-revoke-app").json()
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert {"apps", "revoke-app"} <= {op["name"] for op in patient["operation"]}
    assert apps["code"] == "apps" and apps["affectsState"] is False
    (app,) = apps["parameter"]
    assert "type" not in app and {p["name"] for p in app["part"]} >= {
        "client", "scope", "granted", "expires", "last-used", "current"}
    from fhir.resources.R4B.operationdefinition import OperationDefinition

    for definition in (apps, revoke):
        OperationDefinition.model_validate(definition)
    assert revoke["affectsState"] is True and revoke["instance"] is True
    assert [p["name"] for p in revoke["parameter"] if p["use"] == "in"] == ["client"]
