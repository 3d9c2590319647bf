"""Every FHIR R4 interaction the gateway serves, over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime

import pytest

FHIR_JSON = "application/fhir+json"
FORM = "application/x-www-form-urlencoded"
SUBSETTED = "SUBSETTED"
IDENT_SYSTEM = "urn:oid:1.2.36.146.595.217.0.1"

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": IDENT_SYSTEM, "value": "12345"}],
    "name": [{"family": "Rivera", "given": ["Ana"]}],
    "gender": "female",
    "birthDate": "1961-04-02",
    "maritalStatus": {"text": "Married"},
    "communication": [{"language": {"text": "Spanish"}}],
    "text": {"status": "generated",
             "div": '<div xmlns="http://www.w3.org/1999/xhtml">Ana Rivera</div>'},
}
OTHER = {"resourceType": "Patient", "name": [{"family": "Stone", "given": ["Bo"]}],
         "gender": "male", "birthDate": "1990-01-01"}


def observation(subject_ref: str) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}],
                     "text": "Heart rate"},
            "subject": {"reference": subject_ref},
            "effectiveDateTime": "2024-05-01T10:00:00Z",
            "valueQuantity": {"value": 72, "unit": "/min"}}


def create(gateway, resource: dict) -> dict:
    resp = gateway.post(resource["resourceType"], resource)
    assert resp.status_code == 201, resp.text
    return resp.json()


def link(bundle: dict, relation: str) -> str | None:
    return next((x["url"] for x in bundle.get("link", []) if x["relation"] == relation), None)


def matches(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def is_outcome(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    return body


def tag_codes(resource: dict) -> list[str]:
    return [t.get("code") for t in resource.get("meta", {}).get("tag", [])]


# -- metadata ---------------------------------------------------------------------------------

def test_metadata_is_an_r4_capability_statement(gateway):
    resp = gateway.get("metadata")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith(FHIR_JSON)
    cs = resp.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance"
    assert "application/fhir+json" in cs["format"]
    rest = cs["rest"][0]
    assert rest["mode"] == "server"
    assert {"transaction", "batch"} <= {i["code"] for i in rest["interaction"]}
    by_type = {r["type"]: r for r in rest["resource"]}
    patient = by_type["Patient"]
    assert {"read", "vread", "search-type", "create", "update", "delete",
            "history-instance"} <= {i["code"] for i in patient["interaction"]}
    params = {p["name"]: p["type"] for p in patient["searchParam"]}
    assert {"_id": "token", "name": "string", "family": "string", "given": "string",
            "identifier": "token", "birthdate": "date", "gender": "token"}.items() \
        <= params.items()
    obs_params = {p["name"]: p["type"] for p in by_type["Observation"]["searchParam"]}
    assert obs_params["patient"] == "reference"
    assert obs_params["date"] == "date"


# -- create / read / vread / history ----------------------------------------------------------

def test_create_assigns_its_own_id_and_returns_version_headers(gateway):
    """The server assigns the id (ignoring the client's) and answers 201 with Location/ETag."""
    resp = gateway.post("Patient", dict(PATIENT, id="client-chosen"))
    assert resp.status_code == 201
    assert resp.headers["Content-Type"].startswith(FHIR_JSON)
    body = resp.json()
    rid = body["id"]
    assert rid and rid != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert resp.headers["Location"] == f"{gateway.base}/Patient/{rid}/_history/1"
    assert resp.headers["ETag"] == 'W/"1"'
    modified = parsedate_to_datetime(resp.headers["Last-Modified"])
    updated = datetime.fromisoformat(body["meta"]["lastUpdated"].replace("Z", "+00:00"))
    assert modified == updated.replace(microsecond=0)
    assert gateway.get("Patient/client-chosen").status_code == 404


def test_read_returns_the_current_version(gateway):
    created = create(gateway, PATIENT)
    resp = gateway.get(f"Patient/{created['id']}")
    assert resp.status_code == 200
    assert resp.headers["ETag"] == 'W/"1"'
    assert resp.headers["Last-Modified"].endswith("GMT")
    body = resp.json()
    assert body == created
    assert body["name"] == PATIENT["name"] and body["birthDate"] == "1961-04-02"


def test_vread_returns_each_version(gateway):
    created = create(gateway, PATIENT)
    rid = created["id"]
    assert gateway.put(f"Patient/{rid}", dict(PATIENT, id=rid, gender="other")).status_code == 200
    v1 = gateway.get(f"Patient/{rid}/_history/1")
    v2 = gateway.get(f"Patient/{rid}/_history/2")
    assert (v1.status_code, v2.status_code) == (200, 200)
    assert v1.json()["gender"] == "female" and v1.headers["ETag"] == 'W/"1"'
    assert v2.json()["gender"] == "other" and v2.headers["ETag"] == 'W/"2"'


@pytest.mark.parametrize("vid", ["2", "99", "abc"])
def test_vread_of_a_missing_version_is_404(gateway, vid):
    rid = create(gateway, PATIENT)["id"]
    body = is_outcome(gateway.get(f"Patient/{rid}/_history/{vid}"), 404)
    assert body["issue"][0]["code"] == "not-found"


def test_history_lists_versions_newest_first_with_total(gateway):
    rid = create(gateway, PATIENT)["id"]
    for gender in ("male", "other"):
        gateway.put(f"Patient/{rid}", dict(PATIENT, id=rid, gender=gender))
    resp = gateway.get(f"Patient/{rid}/_history")
    assert resp.status_code == 200
    bundle = resp.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    assert bundle["total"] == 3
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["3", "2", "1"]
    assert [e["resource"]["gender"] for e in bundle["entry"]] == ["other", "male", "female"]
    assert [e["request"]["method"] for e in bundle["entry"]] == ["PUT", "PUT", "POST"]
    assert link(bundle, "next") is None


def test_history_pages_with_count_and_next_links(gateway):
    """`_count=1` gives one version a page; following `next` walks every version once."""
    rid = create(gateway, PATIENT)["id"]
    for gender in ("male", "other"):
        gateway.put(f"Patient/{rid}", dict(PATIENT, id=rid, gender=gender))
    resp = gateway.get(f"Patient/{rid}/_history", params={"_count": "1"})
    seen = []
    for _ in range(5):
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert page["total"] == 3
        assert len(page["entry"]) == 1
        seen.append(page["entry"][0]["resource"]["meta"]["versionId"])
        nxt = link(page, "next")
        if nxt is None:
            break
        assert "_count=1" in nxt
        resp = gateway.client.get(nxt)
    assert seen == ["3", "2", "1"]


# -- conditional create -----------------------------------------------------------------------

@pytest.mark.parametrize("existing, status", [(0, 201), (1, 200), (2, 412)],
                         ids=["no-match", "one-match", "two-matches"])
def test_conditional_create_with_if_none_exist(gateway, existing, status):
    """0 matches creates, 1 match returns the existing resource unchanged, 2+ is 412."""
    prior = [create(gateway, PATIENT) for _ in range(existing)]
    before = gateway.fingerprint()
    resp = gateway.post("Patient", PATIENT,
                        headers={"If-None-Exist": f"identifier={IDENT_SYSTEM}|12345"})
    assert resp.status_code == status, resp.text
    if existing == 0:
        assert resp.json()["meta"]["versionId"] == "1"
        assert gateway.fingerprint() != before
    elif existing == 1:
        body = resp.json()
        assert body == prior[0]
        assert body["meta"]["versionId"] == "1"
        assert gateway.fingerprint() == before  # no new resource, no new version
    else:
        outcome = is_outcome(resp, 412)
        assert "2" in outcome["issue"][0]["diagnostics"]
        assert gateway.fingerprint() == before
    total = gateway.get("Patient", params={"_summary": "count"}).json()["total"]
    assert total == max(existing, 1)


# -- update -----------------------------------------------------------------------------------

def test_update_stores_a_new_version(gateway):
    rid = create(gateway, PATIENT)["id"]
    resp = gateway.put(f"Patient/{rid}", dict(PATIENT, id=rid, gender="other"))
    assert resp.status_code == 200
    body = resp.json()
    assert body["meta"]["versionId"] == "2"
    assert resp.headers["ETag"] == 'W/"2"'
    assert resp.headers["Location"] == f"{gateway.base}/Patient/{rid}/_history/2"
    assert gateway.get(f"Patient/{rid}").json()["gender"] == "other"


def test_update_with_a_client_id_creates(gateway):
    resp = gateway.put("Patient/pat-from-client", dict(PATIENT, id="pat-from-client"))
    assert resp.status_code == 201
    assert resp.json()["id"] == "pat-from-client"
    assert resp.json()["meta"]["versionId"] == "1"
    assert resp.headers["ETag"] == 'W/"1"'
    assert resp.headers["Location"] == f"{gateway.base}/Patient/pat-from-client/_history/1"
    assert gateway.get("Patient/pat-from-client").status_code == 200


def test_update_with_matching_if_match(gateway):
    rid = create(gateway, PATIENT)["id"]
    resp = gateway.put(f"Patient/{rid}", dict(PATIENT, id=rid, gender="male"),
                       headers={"If-Match": 'W/"1"'})
    assert resp.status_code == 200
    assert resp.headers["ETag"] == 'W/"2"'


@pytest.mark.parametrize("etag", ['W/"2"', 'W/"0"', '"7"'])
def test_update_with_stale_if_match_is_412_and_changes_nothing(gateway, etag):
    created = create(gateway, PATIENT)
    rid = created["id"]
    before = gateway.fingerprint()
    resp = gateway.put(f"Patient/{rid}", dict(PATIENT, id=rid, gender="male"),
                       headers={"If-Match": etag})
    outcome = is_outcome(resp, 412)
    assert "If-Match" in outcome["issue"][0].get("expression", [])
    assert gateway.fingerprint() == before
    assert gateway.get(f"Patient/{rid}").json() == created


# -- delete -----------------------------------------------------------------------------------

def test_delete_then_read_is_gone_but_history_remains(gateway):
    rid = create(gateway, PATIENT)["id"]
    resp = gateway.delete(f"Patient/{rid}")
    assert resp.status_code == 204
    assert resp.content == b""
    gone = is_outcome(gateway.get(f"Patient/{rid}"), 410)
    assert gone["issue"][0]["code"] == "deleted"
    old = gateway.get(f"Patient/{rid}/_history/1")
    assert old.status_code == 200 and old.json()["name"] == PATIENT["name"]
    history = gateway.get(f"Patient/{rid}/_history").json()
    assert history["total"] == 2
    newest = history["entry"][0]
    assert newest["request"]["method"] == "DELETE"
    assert "resource" not in newest
    assert history["entry"][1]["request"]["method"] == "POST"
    assert gateway.get("Patient", params={"_id": rid}).json()["total"] == 0


def test_delete_of_an_unknown_id_is_404(gateway):
    before = gateway.fingerprint()
    body = is_outcome(gateway.delete("Patient/never-was"), 404)
    assert body["issue"][0]["code"] == "not-found"
    assert gateway.fingerprint() == before


# -- batch and transaction --------------------------------------------------------------------

def test_batch_runs_each_entry_on_its_own(gateway):
    """A bad entry gets its own 4xx; the entries around it still run."""
    known = create(gateway, PATIENT)
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": dict(OTHER), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": "xyz"},
         "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": f"Patient/{known['id']}"}},
        {"request": {"method": "GET", "url": "Patient/not-there"}},
        {"request": {"method": "GET", "url": "Patient?family=Stone"}},
    ]}
    resp = gateway.post("", bundle)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["resourceType"] == "Bundle" and out["type"] == "batch-response"
    statuses = [e["response"]["status"].split()[0] for e in out["entry"]]
    assert statuses == ["201", "400", "200", "404", "200"]
    created = out["entry"][0]["resource"]
    assert out["entry"][0]["response"]["location"].endswith(
        f"Patient/{created['id']}/_history/1")
    bad = out["entry"][1]["response"]["outcome"]
    assert bad["resourceType"] == "OperationOutcome"
    assert "Patient.gender" in bad["issue"][0]["expression"]
    assert out["entry"][2]["resource"]["id"] == known["id"]
    assert out["entry"][3]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    found = out["entry"][4]["resource"]
    assert [r["id"] for r in matches(found)] == [created["id"]]
    assert gateway.get(f"Patient/{created['id']}").status_code == 200


def test_transaction_rewrites_urn_uuid_references(gateway):
    pat_url = "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
         "resource": observation(pat_url), "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": pat_url, "resource": dict(PATIENT),
         "request": {"method": "POST", "url": "Patient"}},
    ]}
    resp = gateway.post("", bundle)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["resourceType"] == "Bundle" and out["type"] == "transaction-response"
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created", "201 Created"]
    obs_loc, pat_loc = (e["response"]["location"] for e in out["entry"])
    assert obs_loc.startswith("Observation/") and pat_loc.startswith("Patient/")
    pat_id = pat_loc.split("/")[1]
    obs_id = obs_loc.split("/")[1]
    stored = gateway.get(f"Observation/{obs_id}").json()
    assert stored["subject"]["reference"] == f"Patient/{pat_id}"
    assert gateway.get(f"Patient/{pat_id}").json()["name"] == PATIENT["name"]
    found = gateway.get("Observation", params={"patient": pat_id}).json()
    assert [r["id"] for r in matches(found)] == [obs_id]


@pytest.mark.parametrize("bad_entry, status, where", [
    ({"resource": {"resourceType": "Patient", "gender": "xyz"},
      "request": {"method": "POST", "url": "Patient"}}, 400, None),
    ({"resource": {"resourceType": "Patient", "id": "held", "gender": "male"},
      "request": {"method": "PUT", "url": "Patient/held", "ifMatch": 'W/"9"'}}, 412, None),
    ({"resource": {"resourceType": "Patient", "id": "held", "gender": "male"},
      "request": {"method": "PUT", "url": "Patient/held", "ifMatch": 'W/"1"\r\nX-Evil: 1'}},
     400, "Bundle.entry[2].request.ifMatch"),
    ({"resource": {"resourceType": "Patient", "id": "held", "gender": "male"},
      "request": {"method": "PUT", "url": "Patient/held", "ifMatch": 1}}, 400,
     "Bundle.entry[2].request.ifMatch"),
], ids=["invalid-resource", "stale-if-match", "if-match-with-a-line-break",
        "if-match-not-a-string"])
def test_transaction_with_one_failing_entry_stores_nothing(gateway, bad_entry, status, where):
    """Checked up front (invalid resource) or failing in the store (If-Match): all or nothing."""
    gateway.put("Patient/held", {"resourceType": "Patient", "id": "held"})
    before = gateway.fingerprint()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0f4a0f7c-7a3e-4c55-9d5e-2f0b7f0f1c11",
         "resource": {"resourceType": "Patient", "name": [{"family": "Atomic"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation("urn:uuid:0f4a0f7c-7a3e-4c55-9d5e-2f0b7f0f1c11"),
         "request": {"method": "POST", "url": "Observation"}},
        bad_entry,
    ]}
    outcome = is_outcome(gateway.post("", bundle), status)
    if where:  # refused up front, naming the element
        assert outcome["issue"][0]["expression"] == [where], outcome
    assert gateway.fingerprint() == before
    assert gateway.get("Patient", params={"family": "Atomic"}).json()["total"] == 0
    assert gateway.get("Observation").json()["total"] == 0
    assert gateway.get("Patient/held").json()["meta"]["versionId"] == "1"


# -- search -----------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [
    [("family", "riv")],
    [("gender", "female"), ("birthdate", "ge1960-01-01")],
    [("name", "zzz")],
    [("name", "Riv"), ("_summary", "true")],
    [("name", "Riv"), ("_elements", "birthDate")],
    [("_summary", "count")],
    [("_count", "1"), ("_sort", "-birthdate")],
], ids=lambda p: "&".join(f"{k}={v}" for k, v in p))
def test_get_and_post_search_agree(gateway, params):
    """POST `_search` with a form body answers exactly as GET with the same parameters."""
    create(gateway, PATIENT)
    create(gateway, OTHER)
    got = gateway.get("Patient", params=params)
    posted = gateway.post("Patient/_search", data=dict(params), headers={"Content-Type": FORM})
    assert got.status_code == posted.status_code == 200, (got.text, posted.text)
    assert posted.json() == got.json()


def test_search_finds_by_several_parameter_types(gateway):
    ana = create(gateway, PATIENT)
    create(gateway, OTHER)
    obs = create(gateway, observation(f"Patient/{ana['id']}"))
    cases = [
        ("Patient", {"name": "rIVe"}, [ana["id"]]),
        ("Patient", {"identifier": f"{IDENT_SYSTEM}|12345"}, [ana["id"]]),
        ("Patient", {"birthdate": "1961-04-02"}, [ana["id"]]),
        ("Patient", {"_id": ana["id"]}, [ana["id"]]),
        ("Observation", {"patient": f"Patient/{ana['id']}"}, [obs["id"]]),
        ("Observation", {"code": "http://loinc.org|8867-4", "date": "ge2024-01-01"}, [obs["id"]]),
    ]
    for rtype, params, want in cases:
        bundle = gateway.get(rtype, params=params).json()
        assert bundle["type"] == "searchset"
        assert [r["id"] for r in matches(bundle)] == want, params
        assert bundle["total"] == len(want)


def test_search_pages_with_next_links(gateway):
    ids = {create(gateway, dict(OTHER, birthDate=f"199{i}-01-01"))["id"] for i in range(3)}
    resp = gateway.get("Patient", params={"_count": "1"})
    seen = []
    for _ in range(5):
        page = resp.json()
        assert page["total"] == 3
        seen += [r["id"] for r in matches(page)]
        nxt = link(page, "next")
        if nxt is None:
            break
        resp = gateway.client.get(nxt)
        assert resp.status_code == 200, resp.text
    assert sorted(seen) == sorted(ids) and len(seen) == 3


@pytest.mark.parametrize("how, want", [
    ({"params": {"_format": "json"}}, FHIR_JSON),
    ({"params": {"_format": "application/fhir+json"}}, FHIR_JSON),
    ({"params": {"_format": "application/json"}}, "application/json"),
    ({"headers": {"Accept": "application/json"}}, "application/json"),
    ({"headers": {"Accept": FHIR_JSON}}, FHIR_JSON),
    ({"headers": {"Accept": "*/*"}}, FHIR_JSON),
], ids=["_format=json", "_format=fhir+json", "_format=application/json", "accept-json",
        "accept-fhir+json", "accept-any"])
def test_format_and_accept_choose_the_json_flavour(gateway, how, want):
    rid = create(gateway, PATIENT)["id"]
    for path in (f"Patient/{rid}", "Patient", "metadata"):
        resp = gateway.get(path, **how)
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].split(";")[0] == want
        assert resp.json()["resourceType"] in ("Patient", "Bundle", "CapabilityStatement")


def test_pretty_indents_the_json(gateway):
    rid = create(gateway, PATIENT)["id"]
    plain = gateway.get(f"Patient/{rid}")
    pretty = gateway.get(f"Patient/{rid}", params={"_pretty": "true"})
    assert b"\n" not in plain.content
    assert b'\n  "resourceType": "Patient"' in pretty.content
    assert pretty.json() == plain.json()
    assert b"\n  " in gateway.get("Patient", params={"_pretty": "true"}).content


def test_summary_true_keeps_summary_elements_and_marks_subsetted(gateway):
    rid = create(gateway, PATIENT)["id"]
    read = gateway.get(f"Patient/{rid}", params={"_summary": "true"})
    assert read.status_code == 200
    found = matches(gateway.get("Patient", params={"_summary": "true"}).json())
    assert len(found) == 1
    for body in (read.json(), found[0]):
        assert SUBSETTED in tag_codes(body)
        assert body["id"] == rid
        for kept in ("identifier", "name", "gender", "birthDate"):
            assert body[kept] == PATIENT[kept]
        for dropped in ("text", "maritalStatus", "communication"):
            assert dropped not in body
    assert SUBSETTED not in tag_codes(gateway.get(f"Patient/{rid}").json())


def test_summary_count_returns_only_the_total(gateway):
    for _ in range(3):
        create(gateway, OTHER)
    bundle = gateway.get("Patient", params={"_summary": "count"}).json()
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 3
    assert "entry" not in bundle


def test_elements_keeps_only_the_named_elements(gateway):
    rid = create(gateway, PATIENT)["id"]
    read = gateway.get(f"Patient/{rid}", params={"_elements": "name,birthDate"})
    assert read.status_code == 200
    found = matches(gateway.get("Patient", params={"_elements": "name,birthDate"}).json())
    for body in (read.json(), found[0]):
        assert set(body) == {"resourceType", "id", "meta", "name", "birthDate"}
        assert body["name"] == PATIENT["name"]
        assert SUBSETTED in tag_codes(body)


@pytest.mark.parametrize("method", ["create", "update"])
def test_prefer_return_minimal_sends_no_body(gateway, method):
    if method == "create":
        resp = gateway.post("Patient", PATIENT, headers={"Prefer": "return=minimal"})
        assert resp.status_code == 201
    else:
        rid = create(gateway, PATIENT)["id"]
        resp = gateway.put(f"Patient/{rid}", dict(PATIENT, id=rid),
                           headers={"Prefer": "return=minimal"})
        assert resp.status_code == 200
    assert resp.content == b""
    assert resp.headers["ETag"].startswith('W/"')
    stored = gateway.client.get(resp.headers["Location"])
    assert stored.status_code == 200 and stored.json()["name"] == PATIENT["name"]


def test_prefer_return_operation_outcome(gateway):
    resp = gateway.post("Patient", PATIENT, headers={"Prefer": "return=OperationOutcome"})
    assert resp.status_code == 201
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "information"
    assert gateway.client.get(resp.headers["Location"]).status_code == 200


@pytest.mark.parametrize("via", ["GET", "POST"])
def test_unknown_search_parameter_is_ignored_with_a_warning(gateway, via):
    create(gateway, PATIENT)
    create(gateway, OTHER)
    params = {"foo": "bar", "gender": "female"}
    resp = (gateway.get("Patient", params=params) if via == "GET" else
            gateway.post("Patient/_search", data=params, headers={"Content-Type": FORM}))
    assert resp.status_code == 200, resp.text
    bundle = resp.json()
    assert bundle["total"] == 1 and len(matches(bundle)) == 1
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    outcome = outcomes[0]["resource"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "warning"
    assert "foo" in outcome["issue"][0]["diagnostics"]
    assert "foo" not in link(bundle, "self")


@pytest.mark.parametrize("via", ["GET", "POST"])
def test_unknown_search_parameter_with_strict_handling_is_400(gateway, via):
    create(gateway, PATIENT)
    strict = {"Prefer": "handling=strict"}
    resp = (gateway.get("Patient", params={"foo": "bar"}, headers=strict) if via == "GET" else
            gateway.post("Patient/_search", data={"foo": "bar"},
                         headers={"Content-Type": FORM, **strict}))
    body = is_outcome(resp, 400)
    assert "foo" in body["issue"][0]["diagnostics"]
    assert body["issue"][0]["expression"] == ["foo"]
