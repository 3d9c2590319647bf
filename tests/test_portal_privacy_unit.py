"""The privacy page's pure helpers: scopes in plain words, AuditEvents as plain rows, the
`$apps` answer and the log's paging; and that every word they can produce is in both
catalogues."""

from __future__ import annotations

import pytest

from portal.messages import EN, ES, translate
from portal.privacy import apps_of, log_rows, older_than, scope_phrases, type_words, when


def en(key: str, **values) -> str:
    assert key in EN, key
    return translate("en", key, **values)


def es(key: str, **values) -> str:
    assert key in ES, key
    return translate("es", key, **values)


def test_scopes_in_plain_words():
    assert scope_phrases("launch/patient openid fhirUser online_access patient/*.cruds", en) == [
        "Can see your whole record", "Can add or change your whole record",
        "Knows who you are (your name and account)", "Has access only while you are using it"]
    assert scope_phrases("patient/Observation.rs?category=vital-signs patient/Patient.read",
                         en) == ["Can see your test results and measurements (only vital "
                                 "signs), your personal details"]
    assert scope_phrases("patient/Communication.c offline_access", en) == [
        "Can add or change your messages",
        "Keeps access even when you are not using it, until you remove it"]
    assert scope_phrases("patient/Observation.rs?code=1234-5", en) == [
        "Can see your test results and measurements (only part of them)"]
    assert scope_phrases("patient/Flag.write weird-scope", en) == [
        "Can add or change Flag", "Other permission: weird-scope"]
    assert scope_phrases("", en) == []
    assert scope_phrases("patient/*.rs", es) == ["Puede ver todo su expediente"]


def test_type_words_fall_back_to_the_type():
    assert type_words("MedicationRequest", en) == "your prescriptions"
    assert type_words("Basic", en) == "Basic"


def _event(**kw) -> dict:
    event = {"resourceType": "AuditEvent", "id": "7", "recorded": "2026-12-01T14:30:05.123Z",
             "type": {"code": "rest"}, "subtype": [{"code": "read"}], "action": "R",
             "outcome": "0",
             "agent": [{"who": {"reference": "Patient/pat-0001"}, "requestor": True},
                       {"who": {"identifier": {"system": "http://x/fhir/client-id",
                                               "value": "portal"}}, "requestor": False}],
             "entity": [{"what": {"reference": "Observation/o1"}, "type": {"code": "Observation"},
                         "role": {"code": "4"}},
                        {"what": {"reference": "Patient/pat-0001"}, "role": {"code": "1"}}]}
    event.update(kw)
    return event


def test_access_log_rows_in_plain_words():
    names = {"portal": "This website", "app-two": "Vitals Diary"}
    rows = log_rows([
        _event(),
        _event(subtype=[{"code": "search-type"}], action="E", outcome="4",
               agent=[{"who": {"reference": "Practitioner/prac-01"}, "requestor": True},
                      {"who": {"identifier": {"system": "http://x/fhir/client-id",
                                              "value": "app-two"}}}],
               entity=[{"type": {"code": "Condition"}, "role": {"code": "24"}}]),
        _event(type={"code": "110110"}, subtype=[], action="E", outcome="8",
               agent=[{"who": {"identifier": {"system": "http://x/fhir/client-id",
                                              "value": "backend"}}, "requestor": True}],
               entity=[{"what": {"reference": "Patient/pat-0001"}, "role": {"code": "1"}}]),
        _event(type={"code": "110114"}, subtype=[], action="E",
               agent=[{"who": {"reference": "Patient/pat-0003"}, "requestor": True}]),
        {"resourceType": "OperationOutcome"},
    ], "pat-0001", names, en)
    assert rows == [
        {"when": "2026-12-01 14:30 UTC", "who": "You", "app": "This website",
         "what": "Looked at your test results and measurements", "outcome": "Done",
         "failed": False},
        {"when": "2026-12-01 14:30 UTC", "who": "Clinic staff", "app": "Vitals Diary",
         "what": "Searched your health problems", "outcome": "Refused", "failed": True},
        {"when": "2026-12-01 14:30 UTC", "who": "An app or clinic system (not a person)",
         "app": "backend", "what": "Used a service on your personal details",
         "outcome": "Failed", "failed": True},
        {"when": "2026-12-01 14:30 UTC", "who": "Someone acting for you", "app": "",
         "what": "Sign-in or app access (given, renewed or removed)", "outcome": "Done",
         "failed": False},
    ]


@pytest.mark.parametrize("sub,action,word", [
    ("create", "C", "Added to"), ("update", "U", "Changed"), ("delete", "D", "Deleted from"),
    ("history-instance", "R", "Looked at earlier versions of"), ("vread", "R", "Looked at")])
def test_every_interaction_has_words_in_both_languages(sub, action, word):
    event = _event(subtype=[{"code": sub}], action=action)
    (row,) = log_rows([event], "pat-0001", {}, en)
    assert row["what"].startswith(word) and row["app"] == "portal"
    (row,) = log_rows([event], "pat-0001", {}, es)
    assert row["who"] == "Usted" and row["outcome"] == "Hecho"


def test_apps_answer_and_paging():
    answer = {"resourceType": "Parameters", "parameter": [
        {"name": "app", "part": [{"name": "client", "valueString": "app-two"},
                                 {"name": "scope", "valueString": "patient/*.rs"},
                                 {"name": "current", "valueBoolean": False}]},
        {"name": "other", "valueString": "ignored"}]}
    assert apps_of(answer) == [{"client": "app-two", "scope": "patient/*.rs",
                                "current": False}]
    assert apps_of({"resourceType": "Parameters"}) == []
    bundle = {"link": [{"relation": "self", "url": "http://x/fhir/Patient/p/$access-log"},
                       {"relation": "next",
                        "url": "http://x/fhir/Patient/p/$access-log?_count=20&_before=412"}]}
    assert older_than(bundle) == "412"
    assert older_than({"link": [{"relation": "next", "url": "http://x?_before=abc"}]}) is None
    assert older_than({"link": []}) is None
    assert when("2026-12-01T14:30:05.123Z") == "2026-12-01 14:30 UTC"
    assert when(None) == ""


# -- views with the Flask test client, the server faked at the HTTP boundary (respx) --------

BASE = "http://fhir.test/fhir"


@pytest.fixture
def signed_in_client():
    from portal import PortalSettings, create_portal

    app = create_portal(PortalSettings(fhir_base=BASE, client_id="portal",
                                       redirect_uri="http://127.0.0.1:8081/callback",
                                       secret_key="unit-secret"))
    sid, entry = app.extensions["portal"].store.create()
    entry.signed_in = True
    entry.fhir_state = {"server": {"auth": {"access_token": "tok"}}, "patient_id": "pat-1"}
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["sid"] = sid
    return client


APPS = {"resourceType": "Parameters", "parameter": [
    {"name": "app", "part": [{"name": "client", "valueString": "portal"},
                             {"name": "scope", "valueString": "patient/*.cruds"}]},
    {"name": "app", "part": [{"name": "client", "valueString": "diary"},
                             {"name": "name", "valueString": "Diary"},
                             {"name": "scope", "valueString": "patient/Observation.rs"}]}]}
LOG = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": _event()}]}


def test_a_part_the_server_cannot_answer_says_so(signed_in_client):
    import respx

    with respx.mock(assert_all_called=True) as mock:
        mock.get(f"{BASE}/Patient/pat-1/$apps").respond(
            404, json={"resourceType": "OperationOutcome",
                       "issue": [{"severity": "error", "code": "not-supported"}]})
        mock.get(f"{BASE}/Patient/pat-1/$access-log").respond(200, json=LOG)
        resp = signed_in_client.get("/privacy")
    assert resp.status_code == 200
    assert "cannot show this part right now" in resp.text
    assert "Looked at your test results and measurements" in resp.text
    assert "This website" in resp.text  # the log's app is this portal's client id


def test_bad_removals_never_reach_the_server(signed_in_client):
    import re

    import respx

    with respx.mock() as mock:
        mock.get(f"{BASE}/Patient/pat-1/$apps").respond(200, json=APPS)
        mock.get(f"{BASE}/Patient/pat-1/$access-log").respond(200, json=LOG)
        revoke = mock.post(f"{BASE}/Patient/pat-1/$revoke-app").respond(
            200, json={"resourceType": "Parameters"})
        page = signed_in_client.get("/privacy").text
        assert "(this website)" in page and "Diary" in page
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        fids = re.findall(r'name="form_id" value="([^"]+)"', page)
        post = lambda **form: signed_in_client.post(  # noqa: E731
            "/privacy/remove", data={"csrf_token": csrf, **form})
        assert post(client="", form_id=fids[0], confirm="yes").status_code == 400
        assert post(client="x" * 129, form_id=fids[0], confirm="yes").status_code == 400
        assert post(client="diary", form_id="made-up", confirm="yes").status_code == 409
        assert post(client="other", form_id=fids[0], confirm="yes").status_code == 404
        resp = post(client="diary", form_id=fids[1])  # the confirm step, nothing sent yet
        assert resp.status_code == 200 and "Remove access for Diary?" in resp.text
        assert post(client="diary", form_id=fids[1], confirm="yes").status_code == 409
        assert not revoke.called
        fid = re.search(r'name="form_id" value="([^"]+)"', resp.text).group(1)
        done = post(client="diary", form_id=fid, confirm="yes")
        assert done.status_code == 303 and done.headers["Location"].endswith("/privacy")
        assert revoke.call_count == 1
        sent = revoke.calls[0].request
        assert b'"valueString":"diary"' in sent.content.replace(b" ", b"")
        assert "diary" not in str(sent.url)  # the choice goes in the body, not the URL
