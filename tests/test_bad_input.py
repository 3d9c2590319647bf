"""Bad input gets a clear 4xx OperationOutcome naming the problem, and changes nothing.

Every case checks the exact status, that the body is an OperationOutcome with an issue whose
`diagnostics` (and `expression`, where the server sets one) names the problem, and that the store
is untouched: `gateway.fingerprint()` is identical before and after, and a known resource still
reads back unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.conftest import start_live_gateway

FHIR_JSON = "application/fhir+json"
FORM = "application/x-www-form-urlencoded"

PATIENT = {"resourceType": "Patient", "identifier": [{"system": "urn:ex:mrn", "value": "1"}],
           "name": [{"family": "Rivera", "given": ["Ana"]}], "gender": "female",
           "birthDate": "1961-04-02"}
OTHER = {"resourceType": "Patient", "name": [{"family": "Stone"}], "gender": "male"}


def observation(**extra) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "Heart rate"},
            **extra}


@dataclass
class Known:
    """Resources stored before each case; they must read back unchanged afterwards."""

    patient: dict
    observation: dict

    @property
    def pid(self) -> str:
        return self.patient["id"]


@pytest.fixture
def known(gateway) -> Known:
    pat = gateway.post("Patient", PATIENT).json()
    gateway.post("Patient", OTHER)
    obs = gateway.post("Observation",
                       observation(subject={"reference": f"Patient/{pat['id']}"},
                                   effectiveDateTime="2020-01-01")).json()
    return Known(pat, obs)


def assert_outcome(resp, status: int, words: tuple[str, ...] = (),
                   expression: str | None = None) -> dict:
    """`resp` is `status` with an OperationOutcome; one issue names the problem."""
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith(FHIR_JSON)
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"], body
    for issue in body["issue"]:
        text = issue.get("diagnostics", "").lower()
        if not text or not all(w.lower() in text for w in words):
            continue
        if expression is None or expression in issue.get("expression", []):
            assert issue["severity"] in ("error", "fatal")
            return issue
    raise AssertionError(f"no issue names {words} at {expression!r}: {body}")


def assert_intact(gateway, known: Known, before: tuple) -> None:
    assert gateway.fingerprint() == before
    for res in (known.patient, known.observation):
        again = gateway.get(f"{res['resourceType']}/{res['id']}")
        assert again.status_code == 200 and again.json() == res


def nested(levels: int) -> bytes:
    """A Patient whose extensions nest `levels` deep (built as text: encoders cap depth)."""
    inner = '{"url":"http://example.org/x","valueString":"deep"}'
    for _ in range(levels):
        inner = '{"url":"http://example.org/x","extension":[' + inner + "]}"
    return ('{"resourceType":"Patient","extension":[' + inner + "]}").encode()


def nested_lists(levels: int) -> bytes:
    return b'{"resourceType":"Patient","name":' + b"[" * levels + b"]" * levels + b"}"


def raw(value) -> bytes:
    return json.dumps(value).encode()


# -- bodies -----------------------------------------------------------------------------------
# (id, method, path, body, status, words the diagnostics must contain, expression or None).
# `{pid}` in a path, and a callable body, stand for the known Patient's id.

BODY_CASES = [
    ("malformed-json", "POST", "Patient", b'{"resourceType": "Patient",', 400,
     ("not valid JSON",), None),
    ("malformed-json-put", "PUT", "Patient/{pid}", b'{"resourceType": Patient}', 400,
     ("not valid JSON",), None),
    ("malformed-json-bundle", "POST", "", b"{", 400, ("not valid JSON",), None),
    ("empty-body", "POST", "Patient", b"", 400, ("not valid JSON",), None),
    ("json-array", "POST", "Patient", raw([PATIENT]), 400, ("JSON object",), None),
    ("json-string", "POST", "Patient", raw("Patient"), 400, ("JSON object",), None),
    ("json-array-put", "PUT", "Patient/{pid}", raw([PATIENT]), 400, ("JSON object",), None),
    ("json-array-bundle", "POST", "", raw([]), 400, ("Bundle",), None),
    ("type-mismatch", "POST", "Patient", observation(), 400, ("Observation", "Patient"),
     "resourceType"),
    ("type-mismatch-put", "PUT", "Patient/{pid}",
     lambda pid: {"resourceType": "Practitioner", "id": pid}, 400, ("Practitioner", "Patient"),
     "resourceType"),
    ("missing-resourceType", "POST", "Patient", {"name": [{"family": "X"}]}, 400,
     ("resourceType",), "resourceType"),
    ("missing-resourceType-put", "PUT", "Patient/{pid}", lambda pid: {"id": pid}, 400,
     ("resourceType",), "resourceType"),
    ("id-mismatch-put", "PUT", "Patient/{pid}", dict(PATIENT, id="someone-else"), 400,
     ("someone-else", "match"), "Patient.id"),
    ("put-without-id", "PUT", "Patient/{pid}", PATIENT, 400, ("id",), "Patient.id"),
    ("invalid-id-in-body", "PUT", "Patient/{pid}", dict(PATIENT, id="a b"), 400,
     ("not a valid resource id",), "Patient.id"),
    ("deep-extensions", "POST", "Patient", nested(200), 400, ("nests", "64"), None),
    ("deep-lists", "POST", "Patient", nested_lists(200), 400, ("nests", "64"), None),
    ("deep-bundle", "POST", "", nested_lists(100), 400, ("nests", "64"), None),
    ("impossible-birthDate", "POST", "Patient", dict(PATIENT, birthDate="2023-02-30"), 400,
     ("date",), "Patient.birthDate"),
    ("impossible-effectiveDateTime", "POST", "Observation",
     observation(effectiveDateTime="2024-13-01T00:00:00Z"), 400, ("datetime",),
     "Observation.effectiveDateTime"),
    ("unknown-type-in-body", "POST", "Patient", {"resourceType": "Foo"}, 400,
     ("'Foo'", "not a FHIR R4 resource type"), "resourceType"),
    ("unknown-type-to-base", "POST", "", {"resourceType": "Foo"}, 400, ("Bundle",),
     "resourceType"),
    ("unknown-type-in-url", "POST", "Foo", {"resourceType": "Foo"}, 404, ("Foo",), None),
    ("not-storable-type", "POST", "OperationOutcome",
     {"resourceType": "OperationOutcome", "issue": []}, 404, ("OperationOutcome",), None),
    ("unknown-element", "POST", "Patient", {"resourceType": "Patient", "foo": 1}, 400,
     ("not permitted",), "Patient.foo"),
    ("name-as-object", "POST", "Patient",
     {"resourceType": "Patient", "name": {"family": "Rivera"}}, 400, ("list",), "Patient.name"),
    ("gender-xyz", "POST", "Patient", dict(PATIENT, gender="xyz"), 400, ("xyz",),
     "Patient.gender"),
    ("gender-xyz-put", "PUT", "Patient/{pid}", lambda pid: dict(PATIENT, id=pid, gender="xyz"),
     400, ("xyz",), "Patient.gender"),
    ("observation-status-done", "POST", "Observation", observation(status="done"), 400,
     ("done",), "Observation.status"),
    ("medicationrequest-intent-wish", "POST", "MedicationRequest",
     {"resourceType": "MedicationRequest", "status": "active", "intent": "wish",
      "medicationCodeableConcept": {"text": "Aspirin"},
      "subject": {"reference": "Patient/x"}}, 400, ("wish",), "MedicationRequest.intent"),
    ("appointment-status-maybe", "POST", "Appointment",
     {"resourceType": "Appointment", "status": "maybe",
      "participant": [{"status": "accepted", "actor": {"reference": "Patient/x"}}]}, 400,
     ("maybe",), "Appointment.status"),
    ("observation-without-code", "POST", "Observation",
     {"resourceType": "Observation", "status": "final"}, 400, ("required",),
     "Observation.code"),
    # R4 `string` forbids control characters below U+0020 other than tab, CR and LF.
    ("nul-in-string", "POST", "Patient",
     {"resourceType": "Patient", "name": [{"family": "Riv\u0000era"}]}, 400, (), None),
]


@pytest.mark.parametrize("method, path, body, status, words, expression",
                         [c[1:] for c in BODY_CASES], ids=[c[0] for c in BODY_CASES])
def test_bad_body_is_rejected_and_changes_nothing(gateway, known, method, path, body, status,
                                                  words, expression):
    if callable(body):
        body = body(known.pid)
    content = body if isinstance(body, bytes) else raw(body)
    before = gateway.fingerprint()
    resp = gateway.client.request(method, gateway.url(path.format(pid=known.pid)),
                                  content=content, headers={"Content-Type": FHIR_JSON})
    assert_outcome(resp, status, words, expression)
    assert_intact(gateway, known, before)


# -- body size --------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["create", "update", "bundle", "chunked-create"])
def test_body_over_the_size_limit_is_413(database_url, tmp_path, how):
    """With limits.max_body_bytes=4096 a larger body is 413, however it is sent."""
    small, stop = start_live_gateway(tmp_path / "small", database_url,
                                     env={"FHIR_GATEWAY_LIMITS_MAX_BODY_BYTES": "4096"})
    try:
        pid = small.post("Patient", PATIENT).json()["id"]
        known = Known(small.get(f"Patient/{pid}").json(),
                      small.post("Observation", observation()).json())
        big = dict(PATIENT, name=[{"family": "x" * 5000}])
        before = small.fingerprint()
        headers = {"Content-Type": FHIR_JSON}
        if how == "create":
            resp = small.client.post(small.url("Patient"), content=raw(big), headers=headers)
        elif how == "update":
            resp = small.client.put(small.url(f"Patient/{pid}"), content=raw(dict(big, id=pid)),
                                    headers=headers)
        elif how == "bundle":
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": big, "request": {"method": "POST", "url": "Patient"}}]}
            resp = small.client.post(small.url(""), content=raw(bundle), headers=headers)
        else:  # no Content-Length: Transfer-Encoding chunked
            resp = small.client.post(small.url("Patient"), content=iter([raw(big)]),
                                     headers=headers)
        assert_outcome(resp, 413, ("4096",))
        assert_intact(small, known, before)
        # A body under the limit still goes through.
        assert small.post("Patient", OTHER).status_code == 201
    finally:
        stop()


# -- search parameters ------------------------------------------------------------------------
# (resource type, parameters, status). 200 means "no match, and nothing leaked": the value is
# data, never SQL or a LIKE pattern. 400 names the parameter in `expression`.

INJECTION_CASES = [
    ("string", "Patient", {"name": "' OR 1=1 --"}, 200),
    ("string-percent", "Patient", {"name": "%"}, 200),
    ("string-underscore", "Patient", {"name": "_"}, 200),
    ("string-contains-percent", "Patient", {"name:contains": "%"}, 200),
    ("string-exact-quote", "Patient", {"name:exact": "Rivera' --"}, 200),
    ("string-backslash", "Patient", {"family": "Riv\\%"}, 200),
    ("token", "Patient", {"identifier": "x' OR '1'='1|y"}, 200),
    ("token-gender", "Patient", {"gender": "female' OR 'a'='a"}, 200),
    ("_id", "Patient", {"_id": "' OR 1=1"}, 200),
    ("reference", "Observation", {"patient": "1;DROP TABLE resource"}, 400),
    ("reference-typed", "Observation", {"subject": "Patient/1' OR '1'='1"}, 400),
    ("date", "Observation", {"date": "2020' OR 1=1"}, 400),
    ("date-prefixed", "Patient", {"birthdate": "ge1961' --"}, 400),
    ("_lastUpdated", "Patient", {"_lastUpdated": "gt2020'; DELETE FROM resource"}, 400),
    ("_sort", "Patient", {"_sort": "rid; DROP"}, 400),
    ("_include", "Observation", {"_include": "Observation:patient' OR 1=1"}, 400),
    ("_revinclude", "Patient", {"_revinclude": "Observation:patient;DROP"}, 400),
    # A NUL can never match stored FHIR data; it must be refused as a bad value, not reach SQL.
    ("string-nul", "Patient", {"name": "Riv\x00"}, 400),
    ("token-nul", "Patient", {"identifier": "urn:ex:mrn|\x00"}, 400),
    ("_id-nul", "Patient", {"_id": "\x00"}, 400),
]


@pytest.mark.parametrize("rtype, params, status", [c[1:] for c in INJECTION_CASES],
                         ids=[c[0] for c in INJECTION_CASES])
def test_injection_looking_search_values_are_inert(gateway, known, rtype, params, status):
    before = gateway.fingerprint()
    resp = gateway.get(rtype, params=params)
    if status == 200:
        assert resp.status_code == 200, resp.text
        bundle = resp.json()
        assert bundle["resourceType"] == "Bundle" and bundle["total"] == 0
        assert "entry" not in bundle
    else:
        name = next(iter(params)).split(":")[0]
        assert_outcome(resp, 400, (), name)
    assert_intact(gateway, known, before)
    assert gateway.get("Patient", params={"_summary": "count"}).json()["total"] == 2


@pytest.mark.parametrize("path", ["Patient", "Patient/{pid}/_history"])
@pytest.mark.parametrize("count", ["-1", "abc", "100000", "1.5", "", "\u00b2"])
def test_bad_count_is_400(gateway, known, path, count):
    before = gateway.fingerprint()
    resp = gateway.get(path.format(pid=known.pid), params={"_count": count})
    assert_outcome(resp, 400, ("_count",), "_count")
    assert_intact(gateway, known, before)


def _next_cursor(gateway, path: str, params: dict) -> str:
    page = gateway.get(path, params=params).json()
    url = next(x["url"] for x in page["link"] if x["relation"] == "next")
    return dict(parse_qsl(urlsplit(url).query))["_cursor"]


def _tamper(token: str) -> str:
    """The token with one character of its signed payload changed."""
    i = 5
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]


@pytest.mark.parametrize("case", [
    "random-text", "random-base64", "one-char-changed", "other-count", "other-filter",
    "other-type", "search-cursor-on-history", "history-cursor-on-search",
])
def test_forged_or_moved_cursor_is_400(gateway, known, case):
    """Cursors are signed and bound to their search: edited or moved ones are refused."""
    gateway.put(f"Patient/{known.pid}", dict(PATIENT, id=known.pid))
    known.patient = gateway.get(f"Patient/{known.pid}").json()
    cursor = _next_cursor(gateway, "Patient", {"_count": "1"})
    history_cursor = _next_cursor(gateway, f"Patient/{known.pid}/_history", {"_count": "1"})
    path, params = "Patient", {"_count": "1"}
    if case == "random-text":
        params["_cursor"] = "not a cursor at all"
    elif case == "random-base64":
        params["_cursor"] = "eyJzIjoiIiwiciI6MSwiZCI6Im4ifQ"
    elif case == "one-char-changed":
        params["_cursor"] = _tamper(cursor)
    elif case == "other-count":
        params = {"_count": "2", "_cursor": cursor}
    elif case == "other-filter":
        params = {"_count": "1", "name": "Riv", "_cursor": cursor}
    elif case == "other-type":
        path, params = "Observation", {"_count": "1", "_cursor": cursor}
    elif case == "search-cursor-on-history":
        path, params = f"Patient/{known.pid}/_history", {"_count": "1", "_cursor": cursor}
    else:
        params["_cursor"] = history_cursor
    before = gateway.fingerprint()
    assert_outcome(gateway.get(path, params=params), 400, ("cursor",), "_cursor")
    assert_intact(gateway, known, before)
    # The untouched cursor still works on its own search.
    assert gateway.get("Patient", params={"_count": "1", "_cursor": cursor}).status_code == 200


# -- content negotiation ----------------------------------------------------------------------

@pytest.mark.parametrize("method, path, content_type", [
    ("POST", "Patient", "text/plain"),
    ("POST", "Patient", "application/xml"),
    ("POST", "Patient", "application/fhir+xml"),
    ("POST", "Patient", None),
    ("PUT", "Patient/{pid}", "text/plain"),
    ("POST", "", "application/xml"),
    ("POST", "Patient/_search", "text/plain"),
])
def test_unsupported_content_type_is_415(gateway, known, method, path, content_type):
    body = dict(PATIENT, id=known.pid) if method == "PUT" else PATIENT
    headers = {"Content-Type": content_type} if content_type else {}
    before = gateway.fingerprint()
    resp = gateway.client.request(method, gateway.url(path.format(pid=known.pid)),
                                  content=raw(body), headers=headers)
    assert_outcome(resp, 415, ("application/fhir+json",), "Content-Type")
    assert_intact(gateway, known, before)


@pytest.mark.parametrize("accept, answered", [
    ("application/fhir+json; fhirVersion=4.0", FHIR_JSON),
    ("application/fhir+json;fhirVersion=4.0.1;q=0.9, application/json;q=0.5", FHIR_JSON),
    ("application/json; charset=utf-8", "application/json"),
    ("application/*", FHIR_JSON),
])
def test_accept_parameters_do_not_stop_a_match(gateway, known, accept, answered):
    """R4 http.html: a FHIR type may carry `fhirVersion` (and other parameters); an R4 one,
    or none, is this server's JSON."""
    resp = gateway.client.get(gateway.url(f"Patient/{known.pid}"), headers={"Accept": accept})
    assert resp.status_code == 200, (accept, resp.text)
    assert resp.headers["content-type"].split(";")[0] == answered
    assert resp.json()["id"] == known.pid


@pytest.mark.parametrize("how", [
    {"headers": {"Accept": "application/fhir+xml"}},
    {"headers": {"Accept": "application/xml, text/html"}},
    {"headers": {"Accept": "application/fhir+json; fhirVersion=5.0"}},
    {"headers": {"Accept": "application/fhir+json;q=0, application/json;q=0"}},
    {"headers": {"Accept": "application/fhir+json;q=0, application/json;q=0, */*"}},
    {"params": {"_format": "xml"}},
    {"params": {"_format": "application/fhir+xml"}},
    {"params": {"_format": "turtle"}},
], ids=["accept-fhir+xml", "accept-xml-html", "accept-fhirVersion-5", "accept-q0",
        "accept-q0-over-wildcard",
        "_format=xml", "_format=fhir+xml", "_format=turtle"])
def test_unservable_format_is_406(gateway, known, how):
    """406 before anything runs, on every endpoint: a create asked for in XML stores nothing."""
    where = "_format" if "params" in how else "Accept"
    for method, path in [("GET", f"Patient/{known.pid}"), ("GET", "Patient"), ("GET", "metadata"),
                         ("POST", "Patient"), ("PUT", f"Patient/{known.pid}")]:
        before = gateway.fingerprint()
        kw = {"params": how.get("params"),
              "headers": {"Content-Type": FHIR_JSON, **how.get("headers", {})}}
        if method != "GET":
            kw["content"] = raw(dict(OTHER, id=known.pid) if method == "PUT" else OTHER)
        resp = gateway.client.request(method, gateway.url(path), **kw)
        assert_outcome(resp, 406, (), where)
        assert_intact(gateway, known, before)


# -- conditional create -----------------------------------------------------------------------

@pytest.mark.parametrize("condition, words", [
    ("notaparam=1", ("notaparam",)),
    ("identifier", ("If-None-Exist",)),
    ("_count=1", ("no search criteria",)),
    ("birthdate=2020-13-45", ("birthdate",)),
])
def test_invalid_if_none_exist_is_400(gateway, known, condition, words):
    before = gateway.fingerprint()
    resp = gateway.post("Patient", OTHER, headers={"If-None-Exist": condition,
                                                   "Prefer": "handling=strict"})
    assert_outcome(resp, 400, words)
    assert_intact(gateway, known, before)


# -- batch / transaction ----------------------------------------------------------------------

def _entry(method: str, url: str, resource: dict | None = None) -> dict:
    out: dict = {"request": {"method": method, "url": url}}
    if resource is not None:
        out["resource"] = resource
    return out


BUNDLE_CASES = [
    ("type-collection", {"resourceType": "Bundle", "type": "collection",
                         "entry": [_entry("POST", "Patient", OTHER)]},
     ("collection",), "Bundle.type"),
    ("type-missing", {"resourceType": "Bundle", "entry": [_entry("POST", "Patient", OTHER)]},
     ("Bundle.type",), "Bundle.type"),
    ("method-unknown", {"resourceType": "Bundle", "type": "transaction",
                        "entry": [_entry("POST", "Patient", OTHER), _entry("FETCH", "Patient")]},
     ("Bundle.entry[1].request.method",), "Bundle.entry[1].request.method"),
    ("method-patch", {"resourceType": "Bundle", "type": "transaction",
                      "entry": [_entry("PATCH", "Patient/x", OTHER)]},
     ("Bundle.entry[0].request.method",), "Bundle.entry[0].request.method"),
    ("entry-without-request", {"resourceType": "Bundle", "type": "transaction",
                               "entry": [{"resource": OTHER}]},
     ("request",), "Bundle.entry[0].request"),
    ("entry-not-a-list", {"resourceType": "Bundle", "type": "transaction", "entry": {}},
     ("list",), "Bundle.entry"),
    ("post-without-resource", {"resourceType": "Bundle", "type": "transaction",
                               "entry": [_entry("POST", "Patient")]},
     ("Bundle.entry[0]", "JSON object"), None),
    ("repeated-fullUrl", {"resourceType": "Bundle", "type": "transaction", "entry": [
        dict(_entry("POST", "Patient", OTHER), fullUrl="urn:uuid:1"),
        dict(_entry("POST", "Patient", OTHER), fullUrl="urn:uuid:1")]},
     ("urn:uuid:1",), "Bundle.entry[1].fullUrl"),
    ("put-id-mismatch", {"resourceType": "Bundle", "type": "transaction",
                         "entry": [_entry("PUT", "Patient/abc", dict(OTHER, id="xyz"))]},
     ("does not match",), "Bundle.entry[0].resource.id"),
    ("history-in-transaction", {"resourceType": "Bundle", "type": "transaction",
                                "entry": [_entry("GET", "Patient/abc/_history")]},
     ("cannot run inside a transaction",), "Bundle.entry[0].request"),
]


@pytest.mark.parametrize("bundle, words, expression", [c[1:] for c in BUNDLE_CASES],
                         ids=[c[0] for c in BUNDLE_CASES])
def test_malformed_transaction_is_400(gateway, known, bundle, words, expression):
    before = gateway.fingerprint()
    assert_outcome(gateway.post("", bundle), 400, words, expression)
    assert_intact(gateway, known, before)


# -- methods and ids --------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, status", [
    ("PATCH", "Patient/{pid}", 405),
    ("PATCH", "Patient", 405),
    ("POST", "Patient/{pid}", 405),
    ("PUT", "Patient", 405),
    ("DELETE", "Patient", 405),
])
def test_unsupported_method_is_405(gateway, known, method, path, status):
    before = gateway.fingerprint()
    patch = [{"op": "replace", "path": "/gender", "value": "male"}]
    resp = gateway.client.request(method, gateway.url(path.format(pid=known.pid)),
                                  content=raw(patch),
                                  headers={"Content-Type": "application/json-patch+json"})
    issue = assert_outcome(resp, status)
    assert issue["code"] == "not-supported"
    assert_intact(gateway, known, before)


@pytest.mark.parametrize("method, path", [
    ("GET", "Patient/bad%20id!"),
    ("PUT", "Patient/bad%20id!"),
    ("DELETE", "Patient/bad%20id!"),
    ("GET", "Patient/bad%20id!/_history"),
    ("GET", "Patient/bad%20id!/_history/1"),
    ("GET", "Patient/" + "a" * 65),
    ("DELETE", "Patient/a_b"),
])
def test_bad_id_in_the_url_is_400(gateway, known, method, path):
    before = gateway.fingerprint()
    kw = {}
    if method == "PUT":
        kw = {"content": raw(dict(OTHER, id="bad id!")), "headers": {"Content-Type": FHIR_JSON}}
    resp = gateway.client.request(method, gateway.url(path), **kw)
    assert_outcome(resp, 400, ("not a valid resource id",), "id")
    assert_intact(gateway, known, before)


@pytest.mark.parametrize("version", ["a%3Fb=1", "1%20", "a" * 65, "1;x"])
def test_bad_version_id_in_the_url_is_400(gateway, known, version):
    """A version id has an id's syntax: anything else (a `?` that would reach an EHR's query)
    is refused before any adapter is asked."""
    before = gateway.fingerprint()
    resp = gateway.get(f"Patient/{known.pid}/_history/{version}")
    assert_outcome(resp, 400, ("not a valid version id",), "vid")
    assert_intact(gateway, known, before)


@pytest.mark.parametrize("path", ["Foo", "Foo/1", "Foo/1/_history", "patient"])
def test_unknown_resource_type_in_the_url_is_404(gateway, known, path):
    before = gateway.fingerprint()
    name = path.split("/")[0]
    assert_outcome(gateway.get(path), 404, (name,))
    assert_intact(gateway, known, before)
