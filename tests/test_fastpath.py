"""The fast path for reads and searches answers exactly as Flask's views do: same status,
headers and bytes, same access-log entry and log line, for good requests and bad ones; and it
leaves every other request to Flask.

Both WSGI stacks of one app are driven side by side: `app.wsgi_app` (the fast path in front)
and the Flask pipeline behind it (`FastReads.next`).
"""

from __future__ import annotations

import logging
import re

import pytest
from werkzeug.test import Client

from fhir_gateway.app import create_app
from fhir_gateway.config import load_config
from fhir_gateway.http.fastpath import FastReads
from fhir_gateway.synthetic import generate
from tests.conftest import SEED_TODAY

FJ = "application/fhir+json"


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    data = tmp_path_factory.mktemp("fastpath")
    cfg = load_config(env={"FHIR_GATEWAY_DATA": str(data), "FHIR_GATEWAY_AUTH_ENABLED": "true",
                           "FHIR_GATEWAY_AUTH_AUDIT_BATCH_MS": "0",
                           "FHIR_GATEWAY_EHR_DATABASE_URL": f"sqlite:///{data / 'ehr.db'}"})
    app = create_app(cfg)
    gateway = app.extensions["fhir_gateway"]
    gateway.adapter.load(generate(3, 7, SEED_TODAY))
    smart = app.extensions["smart"]
    client = smart.clients.add("app", "public", redirect_uris=["http://127.0.0.1:9/cb"])
    tokens = {
        "ann": smart.mint(client, "launch/patient patient/*.rs", patient="pat-0001"),
        "ann-patients-only": smart.mint(client, "patient/Patient.rs", patient="pat-0001"),
        "ann-labs": smart.mint(client, "patient/Observation.rs?category=laboratory",
                               patient="pat-0001"),
        "system": smart.mint(client, "system/*.rs"),
    }
    revoked = smart.mint(client, "patient/*.rs", patient="pat-0001")
    smart.records.revoke_access_token(_jti(smart, revoked))
    tokens["revoked"] = revoked
    fast = app.wsgi_app
    assert isinstance(fast, FastReads)
    yield app, fast, tokens
    gateway.adapter.close()


def _jti(smart, token: str) -> str:
    return smart.verifier.verify(token).jti


def exchange(stack, path: str, headers: dict[str, str], method: str = "GET"):
    resp = Client(stack).open(path, method=method, headers=headers)
    return resp.status_code, sorted(resp.headers.items()), resp.get_data()


def last_audit(app) -> tuple:
    entry = app.extensions["fhir_gateway"].audit.search(count=1)[0]
    return tuple(entry.get(k) for k in ("action", "outcome", "user", "client_id", "patient",
                                        "resource_type", "resource_id", "status", "request_id"))


READS = [
    "/fhir/Patient/pat-0001",
    "/fhir/Patient/pat-0002",  # another patient's: hidden (404)
    "/fhir/Patient/no-such-patient",
    "/fhir/Patient/bad$id",
    "/fhir/NoSuchType/1",
    "/fhir/Observation/obs-0001-0001",
    "/fhir/Patient/pat-0001?_format=json",
    "/fhir/Patient/pat-0001?_format=application/fhir%2Bxml",  # 406
    "/fhir/Patient/pat-0001?_summary=true&_pretty=true",
    "/fhir/Patient/pat-0001?_elements=name,gender",
    "/fhir/Observation?patient=pat-0001&_count=3",
    "/fhir/Observation?patient=pat-0002",  # another patient's search
    "/fhir/Observation?code=http://loinc.org|8867-4&_count=2",
    "/fhir/Observation?patient=pat-0001&_summary=count",
    "/fhir/Observation?patient=pat-0001&_count=2&_elements=code",
    "/fhir/Observation?patient=pat-0001&no-such-param=1",
    "/fhir/Observation?patient=pat-0001&_cursor=forged",
    "/fhir/Observation?_count=abc",
    "/fhir/Patient?family=a",
    "/fhir/Encounter?_include=Encounter:subject",
    "/fhir/NoSuchType",
    "/fhir/Patient/" + "a" * 64,  # the longest valid id
    "/fhir/Patient/" + "a" * 300,  # too long to be an id (and to be remembered by path)
    "/fhir/Patient/%C3%A9",  # not ASCII: decoded as UTF-8, as Flask does
    "/fhir/Observation%C3%A9?patient=pat-0001",
]


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("who", ["ann", "ann-patients-only", "ann-labs", "system", "revoked",
                                 None])
def test_fast_and_flask_answer_alike(stacks, caplog, path, who):
    app, fast, tokens = stacks
    headers = {"Accept": FJ, "X-Request-Id": f"req-{who}"}
    if who:
        headers["Authorization"] = f"Bearer {tokens[who]}"
    served = fast.served
    with caplog.at_level(logging.INFO, logger="fhir_gateway.request"):
        answers, audits, lines = [], [], []
        for stack in (fast, fast.next):
            caplog.clear()
            answers.append(exchange(stack, path, headers))
            audits.append(last_audit(app))
            lines.append([re.sub(r" [\d.]+ms ", " ", r.getMessage()) for r in caplog.records
                          if r.name == "fhir_gateway.request"])
    assert fast.served == served + 1, "the fast path did not take this request"
    assert answers[0] == answers[1]
    assert audits[0] == audits[1]
    assert lines[0] == lines[1] and len(lines[0]) == 1


@pytest.mark.parametrize("headers", [
    {"Accept": "application/json"}, {"Accept": "text/html"}, {"Accept": "*/*"}, {},
    {"Accept": FJ, "Prefer": "handling=strict"},
    {"Accept": FJ, "Authorization": "Basic abc"},
    {"Accept": FJ, "Authorization": "Bearer "},
    {"Accept": FJ, "Authorization": "Bearer not-a-token"},
])
@pytest.mark.parametrize("path", ["/fhir/Patient/pat-0001",
                                  "/fhir/Observation?patient=pat-0001&bogus=1"])
def test_headers_are_read_alike(stacks, path, headers):
    app, fast, tokens = stacks
    headers = {"X-Request-Id": "req-h", **headers}
    if "Authorization" not in headers:
        headers["Authorization"] = f"Bearer {tokens['ann']}"
    assert exchange(fast, path, headers) == exchange(fast.next, path, headers)


@pytest.mark.parametrize("path,method,extra", [
    ("/fhir/metadata", "GET", {}),
    ("/fhir/AuditEvent?patient=pat-0001", "GET", {}),
    ("/fhir/Patient/pat-0001/_history", "GET", {}),
    ("/fhir/Patient/pat-0001/$everything", "GET", {}),
    ("/fhir/Observation/$lastn?patient=pat-0001", "GET", {}),
    ("/fhir/OperationDefinition/everything", "GET", {}),
    ("/fhir/Patient/pat-0001", "HEAD", {}),
    ("/fhir/Patient/pat-0001", "DELETE", {}),
    ("/fhir/Patient/pat-0001", "GET", {"Origin": "https://app.example"}),  # CORS: Flask's
    ("/fhir/Patient/", "GET", {}),
    ("/auth/jwks", "GET", {}),
])
def test_other_requests_are_left_to_flask(stacks, path, method, extra):
    app, fast, tokens = stacks
    headers = {"Accept": FJ, "Authorization": f"Bearer {tokens['ann']}",
               "X-Request-Id": "req-o", **extra}
    served = fast.served
    answer = exchange(fast, path, headers, method)
    assert fast.served == served
    assert answer == exchange(fast.next, path, headers, method)


def test_an_unexpected_error_in_the_service_is_the_500_flask_gives(stacks, monkeypatch,
                                                                   caplog):
    """A bug behind the service is answered as Flask's handler answers it (500, the request
    id, the traceback logged), once: the EHR is not asked again through Flask."""
    app, fast, tokens = stacks
    service = app.extensions["fhir_gateway"].service
    calls = []

    def broken(freq, base):
        calls.append(freq.interaction)
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "handle", broken)
    headers = {"Accept": FJ, "Authorization": f"Bearer {tokens['ann']}", "X-Request-Id": "r-500"}
    answers = []
    for stack in (fast, fast.next):
        calls.clear()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="fhir_gateway.request"):
            answers.append(exchange(stack, "/fhir/Patient/pat-0001", headers))
        assert calls == ["read"]
        assert [r.getMessage() for r in caplog.records if r.exc_info] == \
            ["unhandled error request_id=r-500"]
        assert len([r for r in caplog.records if r.getMessage().startswith("GET ")]) == 1
        assert last_audit(app)[:2] == ("read", "denied") and last_audit(app)[7] == 500
    assert answers[0] == answers[1]
    assert answers[0][0] == 500 and b"Internal error (request id r-500)" in answers[0][2]


def test_an_unexpected_error_before_the_service_is_left_to_flask(stacks, monkeypatch):
    """Before the service is asked nothing has happened: Flask serves the request from the
    start (here its own negotiation works, so the read succeeds)."""
    app, fast, tokens = stacks
    import fhir_gateway.http.fastpath as fastpath

    def broken(req):
        raise RuntimeError("a bug")

    monkeypatch.setattr(fastpath, "response_mimetype", broken)
    headers = {"Accept": FJ, "Authorization": f"Bearer {tokens['ann']}", "X-Request-Id": "r-f"}
    served = fast.served
    status, _, body = exchange(fast, "/fhir/Patient/pat-0001", headers)
    assert status == 200 and b'"id":"pat-0001"' in body
    assert fast.served == served
    assert last_audit(app)[:2] == ("read", "allowed") and last_audit(app)[8] == "r-f"


def test_fast_reads_can_be_turned_off(tmp_path):
    cfg = load_config(env={"FHIR_GATEWAY_DATA": str(tmp_path), "FHIR_GATEWAY_AUTH_ENABLED":
                           "false", "FHIR_GATEWAY_SERVER_FAST_READS": "false"})
    app = create_app(cfg)
    assert not isinstance(app.wsgi_app, FastReads)
    app.extensions["fhir_gateway"].adapter.close()


@pytest.mark.parametrize("path", ["/fhir/Patient/" + "a" * 300, "/fhir/" + "X" * 100,
                                  "/fhir/Patient/a%00b"])
def test_odd_types_and_ids_are_still_recorded(stacks, path):
    """The access log records a request whatever type or id its URL names: cut to the log's
    limits (ending in an ellipsis) and without NULs, never left out."""
    app, fast, tokens = stacks
    headers = {"Accept": FJ, "Authorization": f"Bearer {tokens['ann']}", "X-Request-Id": "odd"}
    status, _, _ = exchange(fast, path, headers)
    entry = last_audit(app)
    assert entry[8] == "odd" and entry[7] == status and status in (400, 403, 404)
    assert len(entry[5]) <= 64 and (entry[6] is None or len(entry[6]) <= 64)
    assert "\x00" not in (entry[6] or "")
    if len(path) > 100:
        assert (entry[6] or entry[5]).endswith("\u2026")
