"""Faults injected into the REST adapter's outbound client with respx: what an EHR can do wrong
(time out, reset, 5xx, rate limit, cut off or mangled bodies, R5 or foreign resources, paging
links elsewhere) and what the adapter and the gateway make of it.

Every expectation names the error class; no message that reaches an app may name the upstream
host. Sleeps are recorded, never slept; the cache is aged with a shifted clock.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
import respx

import adapters.fhir_rest.cache as cache_module
from adapters.base import collect_notices
from adapters.errors import (
    Conflict,
    FhirError,
    Gone,
    Invalid,
    NotFound,
    PreconditionFailed,
    Unprocessable,
    UpstreamError,
    UpstreamUnavailable,
)
from adapters.fhir_rest import FhirRestAdapter, RestSettings
from adapters.fhir_rest.resilience import CircuitBreaker, CircuitOpen, retry_after_seconds
from adapters.search import ParamClause, SearchQuery
from fhir_gateway.errors import outcome_for, status_for

BASE = "http://ehr.test/fhir"
HOST = "ehr.test"
FJ = "application/fhir+json"
PATIENT = {"resourceType": "Patient", "id": "1", "meta": {"versionId": "1"},
           "name": [{"family": "Rivera"}]}
OBSERVATION = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
               "subject": {"reference": "Patient/1"}}


# -- helpers ----------------------------------------------------------------------------------

class Sleeps(list):
    """Stands in for time.sleep: records what the client would have slept."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class ShiftedTime:
    """The cache module's clock, moved forward on demand (entries age without sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


def fhir(status: int = 200, body: dict | list | None = None, ctype: str = FJ,
         **headers: str) -> httpx.Response:
    content = orjson.dumps(body) if body is not None else b""
    return httpx.Response(status, content=content,
                          headers={"Content-Type": ctype, **headers})


def outcome(text: str, code: str = "invalid") -> dict:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


def bundle(*resources: dict, next_url: str | None = None) -> dict:
    out: dict = {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
                 "entry": [{"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": r,
                            "search": {"mode": "match"}} for r in resources]}
    if next_url:
        out["link"] = [{"relation": "next", "url": next_url}]
    return out


def query(**params: str) -> SearchQuery:
    return SearchQuery(clauses=[ParamClause(k, "token", [v]) for k, v in params.items()],
                       count=10)


def no_host(exc: FhirError) -> None:
    """Nothing an app would see of this error names the upstream host."""
    assert HOST not in orjson.dumps(outcome_for(exc)).decode()


def make(**kw) -> tuple[FhirRestAdapter, Sleeps]:
    sleeps = Sleeps()
    # respx patches httpcore: these faults reach the code above the wire over httpx's transport
    # (the curl transport has its own tests against real sockets in test_rest_wire.py).
    settings = RestSettings(**{"base_url": BASE, "vendor": "hapi", "retries": 2,
                               "backoff": 0.0, "transport": "httpx", **kw})
    return FhirRestAdapter(settings, sleep=sleeps), sleeps


@pytest.fixture
def ehr() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        # No CapabilityStatement: the hapi profile assumes the standard R4 interactions.
        router.get("/metadata").respond(404, json=outcome("no metadata", "not-found"))
        yield router


@pytest.fixture
def adapter(ehr) -> Iterator[FhirRestAdapter]:
    a, sleeps = make()
    a.sleeps = sleeps
    yield a
    a.close()


@pytest.fixture
def clock(monkeypatch) -> ShiftedTime:
    shifted = ShiftedTime()
    monkeypatch.setattr(cache_module, "time", shifted)
    return shifted


TRANSPORT_FAULTS = [
    httpx.ConnectError("[Errno 111] Connection refused to ehr.test"),
    httpx.ConnectTimeout("timed out connecting to ehr.test"),
    httpx.ReadTimeout("read timed out"),
    httpx.ReadError("[Errno 104] Connection reset by peer"),
    httpx.RemoteProtocolError("Server disconnected without sending a response."),
]


# -- transport faults and retries ---------------------------------------------------------------

@pytest.mark.parametrize("fault", TRANSPORT_FAULTS, ids=lambda e: type(e).__name__)
def test_get_transport_fault_is_retried_then_unavailable(ehr, adapter, fault):
    route = ehr.get("/Patient/1").mock(side_effect=fault)
    with pytest.raises(UpstreamUnavailable) as info:
        adapter.read("Patient", "1")
    assert route.call_count == 1 + 2
    assert adapter.sleeps == [0.0, 0.0]  # backoff 0: two waits between three attempts
    assert "timed out" in info.value.diagnostics or "reached" in info.value.diagnostics
    assert status_for(info.value) == 503
    no_host(info.value)


def test_get_recovers_when_a_retry_succeeds(ehr, adapter):
    route = ehr.get("/Patient/1").mock(side_effect=[httpx.ReadTimeout("slow"), fhir(200, PATIENT)])
    assert adapter.read("Patient", "1")["id"] == "1"
    assert route.call_count == 2


@pytest.mark.parametrize("fault", TRANSPORT_FAULTS[:1] + TRANSPORT_FAULTS[3:4],
                         ids=lambda e: type(e).__name__)
def test_post_without_condition_is_not_retried(ehr, adapter, fault):
    route = ehr.post("/Observation").mock(side_effect=fault)
    with pytest.raises(UpstreamUnavailable) as info:
        adapter.create(dict(OBSERVATION))
    assert route.call_count == 1
    assert adapter.sleeps == []
    no_host(info.value)


def test_post_with_if_none_exist_is_retried(ehr, adapter):
    route = ehr.post("/Observation").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(UpstreamUnavailable):
        adapter.create(dict(OBSERVATION), if_none_exist=query(identifier="urn:x|42"))
    assert route.call_count == 3
    assert route.calls.last.request.headers["If-None-Exist"] == "identifier=urn%3Ax%7C42"


def test_post_with_if_none_exist_succeeds_after_a_reset(ehr, adapter):
    stored = dict(OBSERVATION, id="o1", meta={"versionId": "1"})
    route = ehr.post("/Observation").mock(side_effect=[
        httpx.ReadError("Connection reset by peer"), fhir(201, stored)])
    result = adapter.create(dict(OBSERVATION), if_none_exist=query(identifier="urn:x|42"))
    assert result.created and result.resource["id"] == "o1"
    assert route.call_count == 2


def test_put_is_retried(ehr, adapter):
    route = ehr.put("/Patient/1").mock(side_effect=httpx.ConnectTimeout("slow"))
    with pytest.raises(UpstreamUnavailable):
        adapter.update(dict(PATIENT))
    assert route.call_count == 3


# -- 5xx and 429 --------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_statuses_are_retried_then_unavailable(ehr, adapter, status):
    route = ehr.get("/Patient/1").respond(status, json=outcome("busy", "transient"))
    with pytest.raises(UpstreamUnavailable) as info:
        adapter.read("Patient", "1")
    assert route.call_count == 3
    assert f"({status})" in info.value.diagnostics
    assert info.value.retry_after is None
    no_host(info.value)


def test_500_is_not_retried(ehr, adapter):
    route = ehr.get("/Patient/1").respond(500, json=outcome("NullPointerException", "exception"))
    with pytest.raises(UpstreamUnavailable) as info:
        adapter.read("Patient", "1")
    assert route.call_count == 1
    assert adapter.sleeps == []
    assert "(500)" in info.value.diagnostics


def test_503_with_retry_after_sleeps_that_long(ehr, adapter):
    route = ehr.get("/Patient/1").mock(side_effect=[
        fhir(503, outcome("later", "transient"), **{"Retry-After": "2"}), fhir(200, PATIENT)])
    assert adapter.read("Patient", "1")["id"] == "1"
    assert route.call_count == 2
    assert adapter.sleeps == [2.0]


def test_429_with_short_retry_after_sleeps_then_retries(ehr, adapter):
    route = ehr.get("/Patient/1").mock(side_effect=[
        fhir(429, outcome("slow down", "throttled"), **{"Retry-After": "1"}),
        fhir(200, PATIENT)])
    assert adapter.read("Patient", "1")["name"][0]["family"] == "Rivera"
    assert route.call_count == 2
    assert adapter.sleeps == [1.0]


def test_429_with_long_retry_after_is_reported_not_slept(ehr, adapter):
    route = ehr.get("/Patient/1").respond(429, headers={"Retry-After": "7200"},
                                          json=outcome("quota", "throttled"))
    with pytest.raises(UpstreamUnavailable) as info:
        adapter.read("Patient", "1")
    assert route.call_count == 1
    assert adapter.sleeps == []
    assert info.value.retry_after == 7200
    assert "rate limiting" in info.value.diagnostics
    no_host(info.value)


def test_retry_after_as_http_date():
    now = 1_750_000_000.0  # 2025-06-15T15:06:40Z
    assert retry_after_seconds("Sun, 15 Jun 2025 15:08:40 GMT", now=now) == 120.0
    assert retry_after_seconds("Sun, 15 Jun 2025 15:00:00 GMT", now=now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
    assert retry_after_seconds(" 30 ") == 30.0


# -- circuit breaker ---------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_unit_open_half_open_closed():
    clock = FakeClock()
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    for _ in range(2):
        breaker.before()
        breaker.failure()
    assert breaker.state == "closed"
    breaker.before()
    breaker.failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as info:
        breaker.before()
    assert info.value.retry_in == pytest.approx(10.0)
    clock.now += 4
    with pytest.raises(CircuitOpen) as info:
        breaker.before()
    assert info.value.retry_in == pytest.approx(6.0)
    clock.now += 6
    assert breaker.state == "half-open"
    breaker.before()  # the one trial
    with pytest.raises(CircuitOpen):
        breaker.before()  # no second request while the trial runs
    breaker.failure()  # the trial failed: open again for a full period
    assert breaker.state == "open"
    clock.now += 10
    breaker.before()
    breaker.success()
    assert breaker.state == "closed"
    breaker.before()
    breaker.failure()
    assert breaker.state == "closed"  # the count started again from zero


def test_breaker_unit_success_resets_the_count():
    breaker = CircuitBreaker(2, 10.0, clock=FakeClock())
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state == "closed"


def test_breaker_unit_an_abandoned_trial_does_not_block_forever():
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    breaker.failure()
    clock.now += 10
    breaker.before()  # a trial whose outcome never reports (an unexpected exception)
    clock.now += 10
    breaker.before()  # after another period, a new trial may go


def _fake_breaker(adapter: FhirRestAdapter, failures: int, reset: float) -> FakeClock:
    clock = FakeClock()
    adapter.client.breaker = CircuitBreaker(failures, reset, clock=clock)
    return clock


def test_breaker_fails_fast_then_a_trial_closes_it(ehr, adapter):
    clock = _fake_breaker(adapter, failures=3, reset=30.0)
    route = ehr.get("/Patient/1").respond(503)
    with pytest.raises(UpstreamUnavailable):
        adapter.read("Patient", "1")
    assert route.call_count == 3
    assert adapter.client.breaker.state == "open"
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable) as info:
            adapter.read("Patient", "1")
        assert "not answering" in info.value.diagnostics
        assert 0 < info.value.retry_after <= 30
        no_host(info.value)
    assert route.call_count == 3  # no HTTP call while open
    assert adapter.health()["circuit"] == "open"
    clock.now += 30
    route.mock(return_value=fhir(200, PATIENT))
    assert adapter.read("Patient", "1")["id"] == "1"
    assert route.call_count == 4
    assert adapter.client.breaker.state == "closed"


def test_breaker_failed_trial_opens_again(ehr, adapter):
    clock = _fake_breaker(adapter, failures=2, reset=5.0)
    route = ehr.get("/Patient/1").respond(503)
    with pytest.raises(UpstreamUnavailable):
        adapter.read("Patient", "1")
    calls = route.call_count
    assert calls == 2  # the second failure opened it before the third attempt
    clock.now += 5
    with pytest.raises(UpstreamUnavailable):
        adapter.read("Patient", "1")
    assert route.call_count == calls + 1  # one trial only, not retried into an open circuit
    assert adapter.client.breaker.state == "open"


def test_breaker_trial_answered_429_does_not_stick_open(ehr, adapter):
    clock = _fake_breaker(adapter, failures=1, reset=5.0)
    route = ehr.get("/Patient/1").respond(503)
    with pytest.raises(UpstreamUnavailable):
        adapter.read("Patient", "1")
    clock.now += 5
    route.mock(return_value=fhir(429, outcome("quota", "throttled"), **{"Retry-After": "600"}))
    with pytest.raises(UpstreamUnavailable) as info:
        adapter.read("Patient", "1")
    assert info.value.retry_after == 600
    route.mock(return_value=fhir(200, PATIENT))
    clock.now += 1
    assert adapter.read("Patient", "1")["id"] == "1"  # the EHR answered: not left open
    assert adapter.client.breaker.state == "closed"


# -- bodies that are not FHIR JSON ----------------------------------------------------------------

def test_body_shorter_than_content_length_is_an_upstream_error(ehr, adapter):
    raw = orjson.dumps(PATIENT)
    ehr.get("/Patient/1").respond(200, content=raw, headers={
        "Content-Type": FJ, "Content-Length": str(len(raw) + 500)})
    with pytest.raises(UpstreamError) as info:
        adapter.read("Patient", "1")
    assert "cut off" in info.value.diagnostics
    assert status_for(info.value) == 502
    no_host(info.value)


def test_json_cut_mid_way_is_an_upstream_error(ehr, adapter):
    ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT)[:25],
                                  headers={"Content-Type": FJ})
    with pytest.raises(UpstreamError) as info:
        adapter.read("Patient", "1")
    assert "not valid JSON" in info.value.diagnostics
    assert status_for(info.value) == 502


@pytest.mark.parametrize("raw", [b"{resourceType: Patient}", b"\xff\xfe{", b"[1, 2]", b'"Patient"',
                                 b'{"id": "1"}'])
def test_invalid_json_is_an_upstream_error(ehr, adapter, raw):
    route = ehr.get("/Patient/1").respond(200, content=raw, headers={"Content-Type": FJ})
    with pytest.raises(UpstreamError) as info:
        adapter.read("Patient", "1")
    assert route.call_count == 1
    assert "JSON" in info.value.diagnostics or "not a FHIR resource" in info.value.diagnostics


def test_corrupt_gzip_is_an_upstream_error(ehr, adapter):
    bad = gzip.compress(orjson.dumps(PATIENT))[:10] + b"\xff" * 20
    ehr.get("/Patient/1").mock(return_value=httpx.Response(200, headers={
        "Content-Type": FJ, "Content-Encoding": "gzip"}, stream=httpx.ByteStream(bad)))
    with pytest.raises(UpstreamError) as info:
        adapter.read("Patient", "1")
    assert "decoded" in info.value.diagnostics
    assert status_for(info.value) == 502


class _CutStream(httpx.SyncByteStream):
    """A body whose connection drops half-way, as h11 reports a short Content-Length."""

    def __iter__(self):
        yield orjson.dumps(PATIENT)[:20]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete "
                                        "message body: received 20 bytes, expected 80")


def test_connection_dropped_mid_body_on_get_is_retried_then_unavailable(ehr, adapter):
    route = ehr.get("/Patient/1").mock(side_effect=lambda request: httpx.Response(
        200, headers={"Content-Type": FJ, "Content-Length": "80"}, stream=_CutStream()))
    with pytest.raises(UpstreamUnavailable) as info:
        adapter.read("Patient", "1")
    assert route.call_count == 3
    no_host(info.value)


def test_gzip_body_is_read(ehr, adapter):
    raw = gzip.compress(orjson.dumps(PATIENT))
    ehr.get("/Patient/1").respond(200, content=raw, headers={
        "Content-Type": FJ, "Content-Encoding": "gzip", "Content-Length": str(len(raw))})
    assert adapter.read("Patient", "1")["id"] == "1"


HTML = b"<html><head><title>502 Bad Gateway</title></head><body>nginx at ehr.test</body></html>"


def test_html_error_page_with_502_is_unavailable(ehr, adapter):
    route = ehr.get("/Patient/1").respond(502, content=HTML, headers={"Content-Type": "text/html"})
    with pytest.raises(UpstreamUnavailable) as info:
        adapter.read("Patient", "1")
    assert route.call_count == 3
    no_host(info.value)


def test_html_page_with_200_is_an_upstream_error(ehr, adapter):
    ehr.get("/Patient/1").respond(200, content=b"<html><body>Please log in</body></html>",
                                  headers={"Content-Type": "text/html; charset=utf-8"})
    with pytest.raises(UpstreamError) as info:
        adapter.read("Patient", "1")
    assert "text/html" in info.value.diagnostics
    assert status_for(info.value) == 502


def test_html_page_with_404_is_not_found(ehr, adapter):
    ehr.get("/Patient/1").respond(404, content=b"<html>Not Found</html>",
                                  headers={"Content-Type": "text/html"})
    with pytest.raises(NotFound):
        adapter.read("Patient", "1")


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "application/fhir+xml", ""])
def test_wrong_content_type_is_an_upstream_error(ehr, adapter, ctype):
    ehr.get("/Patient/1").mock(return_value=httpx.Response(
        200, content=orjson.dumps(PATIENT), headers={"Content-Type": ctype} if ctype else {}))
    with pytest.raises(UpstreamError) as info:
        adapter.read("Patient", "1")
    assert (ctype or "without a content type") in info.value.diagnostics


@pytest.mark.parametrize("ctype", ["application/json", "application/json+fhir",
                                   "application/fhir+json; fhirVersion=4.0",
                                   "Application/FHIR+JSON; charset=UTF-8"])
def test_json_content_types_are_accepted(ehr, adapter, ctype):
    ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                  headers={"Content-Type": ctype})
    assert adapter.read("Patient", "1")["id"] == "1"


# -- R5 and resources that are not what was asked ---------------------------------------------

@pytest.mark.parametrize("param", ["fhirVersion=5.0", 'fhirversion="5.0"', "fhirVersion=4.3"])
def test_other_fhir_version_in_mime_type_is_an_upstream_error(ehr, adapter, param):
    ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                  headers={"Content-Type": f"{FJ}; {param}"})
    with pytest.raises(UpstreamError) as info:
        adapter.read("Patient", "1")
    assert "R4" in info.value.diagnostics


def test_resource_type_not_in_r4_is_an_upstream_error(ehr, adapter):
    ehr.get("/Patient/1").respond(200, content=orjson.dumps(
        {"resourceType": "ActorDefinition", "id": "1", "status": "active"}),
        headers={"Content-Type": FJ})
    with pytest.raises(UpstreamError) as info:
        adapter.read("Patient", "1")
    assert "ActorDefinition" in info.value.diagnostics and "R4" in info.value.diagnostics


def test_r5_resource_inside_a_search_is_an_upstream_error(ehr, adapter):
    ehr.get("/Patient").respond(200, content=orjson.dumps(bundle(
        PATIENT, {"resourceType": "ActorDefinition", "id": "a"})), headers={"Content-Type": FJ})
    with pytest.raises(UpstreamError):
        adapter.search("Patient", query())


@pytest.mark.parametrize("body, words", [
    ({"resourceType": "Patient"}, "without a valid id"),
    ({"resourceType": "Patient", "id": "bad id/../x"}, "without a valid id"),
    ({"resourceType": "Patient", "id": 1}, "without a valid id"),
    ({"resourceType": "Observation", "id": "1", "status": "final"}, "where a Patient"),
    ({"resourceType": "Patient", "id": "2"}, "Patient/2 for a read of Patient/1"),
])
def test_read_answered_with_the_wrong_resource(ehr, adapter, body, words):
    ehr.get("/Patient/1").respond(200, content=orjson.dumps(body), headers={"Content-Type": FJ})
    with pytest.raises(UpstreamError) as info:
        adapter.read("Patient", "1")
    assert words in info.value.diagnostics
    # Nothing wrong was cached: a good answer afterwards is fetched.
    ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                  headers={"Content-Type": FJ})
    assert adapter.read("Patient", "1")["id"] == "1"


def test_search_without_a_bundle_is_an_upstream_error(ehr, adapter):
    ehr.get("/Patient").respond(200, content=orjson.dumps(PATIENT), headers={"Content-Type": FJ})
    with pytest.raises(UpstreamError) as info:
        adapter.search("Patient", query())
    assert "without a Bundle" in info.value.diagnostics


@pytest.mark.parametrize("broken", [{"entry": ["Patient/1"]}, {"link": ["next"]},
                                    {"entry": {"resource": PATIENT}}])
def test_malformed_bundle_is_an_upstream_error(ehr, adapter, broken):
    body = {"resourceType": "Bundle", "type": "searchset", **broken}
    ehr.get("/Patient").respond(200, content=orjson.dumps(body), headers={"Content-Type": FJ})
    with pytest.raises(UpstreamError):
        adapter.search("Patient", query())


# -- paging links ---------------------------------------------------------------------------------

@pytest.mark.parametrize("link", [
    "http://evil.test/fhir/Patient?page=2",
    "https://ehr.test/fhir/Patient?page=2",  # another scheme is another origin
    "http://ehr.test:8443/fhir/Patient?page=2",
    "http://ehr.test.evil.test/fhir/Patient?page=2",
    "http://ehr.test/other/Patient?page=2",
    "http://ehr.test/fhirx/Patient?page=2",
    "http://ehr.test/fhir/http://evil.test/steal?page=2",  # an absolute URL after the base
    "http://ehr.test/fhir/../admin/Patient?page=2",
    "http://ehr.test/fhir/%2e%2e/admin/Patient?page=2",
    "http://ehr.test/fhir//evil.test/x",
    "//evil.test/fhir/Patient?page=2",
    "/other/Patient?page=2",
])
def test_next_link_leaving_the_ehr_is_not_followed(ehr, adapter, link):
    ehr.get("/Patient").respond(200, content=orjson.dumps(bundle(PATIENT, next_url=link)),
                                headers={"Content-Type": FJ})
    evil = ehr.route(host="evil.test").respond(200)
    page = adapter.search("Patient", query())
    assert [r["id"] for r in page.resources] == ["1"]
    assert page.next_cursor is None
    assert page.warnings and "outside the EHR" in page.warnings[0]
    assert HOST not in " ".join(page.warnings)
    assert evil.call_count == 0


@pytest.mark.parametrize("link, path, params", [
    (f"{BASE}/Patient?_count=10&page=2", "/fhir/Patient", {"_count": "10", "page": "2"}),
    ("/fhir/Patient?page=2", "/fhir/Patient", {"page": "2"}),
    ("HTTP://EHR.TEST/fhir/Patient?page=2", "/fhir/Patient", {"page": "2"}),
])
def test_next_link_on_the_same_base_becomes_an_opaque_cursor(ehr, adapter, link, path, params):
    first = ehr.get("/Patient", params={"name": "Rivera"}).respond(
        200, content=orjson.dumps(bundle(PATIENT, next_url=link)), headers={"Content-Type": FJ})
    page = adapter.search("Patient", query(name="Rivera"))
    assert first.call_count == 1
    assert page.next_cursor and not page.warnings
    assert HOST not in page.next_cursor and "page" not in page.next_cursor
    second = ehr.get("/Patient", params={"page": "2"}).respond(
        200, content=orjson.dumps(bundle(dict(PATIENT, id="2"))), headers={"Content-Type": FJ})
    page2 = adapter.search("Patient", SearchQuery(cursor=page.next_cursor))
    assert second.call_count == 1
    request = second.calls.last.request
    assert request.url.host == HOST and request.url.path == path
    assert dict(request.url.params) == params
    assert [r["id"] for r in page2.resources] == ["2"] and page2.next_cursor is None


def test_hapi_style_next_link_on_the_base_itself_is_followed(ehr, adapter):
    """HAPI's next links are the base plus `?_getpages=...` (no trailing slash)."""
    link = f"{BASE}?_getpages=abc-123&_getpagesoffset=10&_count=10&_bundletype=searchset"
    ehr.get("/Patient").respond(200, content=orjson.dumps(bundle(PATIENT, next_url=link)),
                                headers={"Content-Type": FJ})
    page = adapter.search("Patient", query())
    assert page.next_cursor and not page.warnings
    pages = ehr.get(url__regex=r"^http://ehr\.test/fhir/?\?_getpages=").respond(
        200, content=orjson.dumps(bundle(dict(PATIENT, id="2"))), headers={"Content-Type": FJ})
    page2 = adapter.search("Patient", SearchQuery(cursor=page.next_cursor))
    assert pages.call_count == 1
    assert pages.calls.last.request.url.params["_getpages"] == "abc-123"
    assert [r["id"] for r in page2.resources] == ["2"]


def test_the_same_next_link_is_sealed_into_the_same_cursor(ehr):
    """A search asked of the EHR twice (no cache) gives the same cursor (kept, not encrypted
    anew); another link another one; each opens to its own link."""
    adapter, _ = make(default_cache_ttl=0)
    routes = {page_no: ehr.get("/Patient", params={"name": f"n{page_no}"}).respond(
        200, content=orjson.dumps(bundle(PATIENT, next_url=f"{BASE}/Patient?page={page_no}")),
        headers={"Content-Type": FJ}) for page_no in ("2", "3")}
    try:
        one = adapter.search("Patient", query(name="n2")).next_cursor
        again = adapter.search("Patient", query(name="n2")).next_cursor
        other = adapter.search("Patient", query(name="n3")).next_cursor
    finally:
        adapter.close()
    assert routes["2"].call_count == 2 and routes["3"].call_count == 1
    assert one == again and one != other
    assert adapter.sealer.open(one) == "Patient?page=2"
    assert adapter.sealer.open(other) == "Patient?page=3"


def test_tampered_cursor_is_invalid(ehr, adapter):
    with pytest.raises(Invalid):
        adapter.search("Patient", SearchQuery(cursor="not-a-cursor"))


# -- references -----------------------------------------------------------------------------

def test_absolute_references_into_the_ehr_become_relative(ehr, adapter):
    obs = dict(OBSERVATION, id="o1",
               subject={"reference": f"{BASE}/Patient/1"},
               performer=[{"reference": f"{BASE}/Practitioner/p9/_history/3"},
                          {"reference": "http://other.test/fhir/Practitioner/p1"},
                          {"reference": "#contained"}],
               hasMember=[{"reference": "Observation/o2"}])
    ehr.get("/Observation/o1").respond(200, content=orjson.dumps(obs),
                                       headers={"Content-Type": FJ})
    got = adapter.read("Observation", "o1")
    assert got["subject"]["reference"] == "Patient/1"
    assert [p["reference"] for p in got["performer"]] == [
        "Practitioner/p9/_history/3", "http://other.test/fhir/Practitioner/p1", "#contained"]
    assert got["hasMember"][0]["reference"] == "Observation/o2"
    assert HOST not in orjson.dumps(got).decode()
    # The cached copy is rewritten the same way.
    assert adapter.read("Observation", "o1")["subject"]["reference"] == "Patient/1"


def test_absolute_references_in_search_results_become_relative(ehr, adapter):
    obs = dict(OBSERVATION, id="o1", subject={"reference": f"{BASE}/Patient/1"})
    ehr.get("/Observation").respond(200, content=orjson.dumps(bundle(obs)),
                                    headers={"Content-Type": FJ})
    page = adapter.search("Observation", query(patient="1"))
    assert page.resources[0]["subject"]["reference"] == "Patient/1"


# -- cache ---------------------------------------------------------------------------------------

def test_second_read_within_ttl_makes_no_call(ehr, adapter):
    route = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                          headers={"Content-Type": FJ, "ETag": 'W/"1"'})
    adapter.read("Patient", "1")
    assert adapter.read("Patient", "1") == adapter.read("Patient", "1")
    assert route.call_count == 1


def test_ttl_zero_disables_the_cache(ehr):
    a, _ = make(cache_ttl={"Patient": 0})
    route = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                          headers={"Content-Type": FJ})
    a.read("Patient", "1")
    a.read("Patient", "1")
    assert route.call_count == 2
    a.close()


def test_after_ttl_revalidates_with_etag_and_304_serves_the_cache(ehr, adapter, clock):
    route = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                          headers={"Content-Type": FJ, "ETag": 'W/"1"'})
    first = adapter.read("Patient", "1")
    assert "If-None-Match" not in route.calls.last.request.headers
    clock.offset += 31  # default TTL 30 s
    route.mock(return_value=httpx.Response(304, headers={"ETag": 'W/"1"'}))
    assert adapter.read("Patient", "1") == first
    assert route.call_count == 2
    assert route.calls.last.request.headers["If-None-Match"] == 'W/"1"'
    # The 304 made the copy fresh again.
    assert adapter.read("Patient", "1") == first
    assert route.call_count == 2


def test_after_ttl_a_changed_resource_replaces_the_cache(ehr, adapter, clock):
    route = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                          headers={"Content-Type": FJ, "ETag": 'W/"1"'})
    adapter.read("Patient", "1")
    clock.offset += 31
    changed = dict(PATIENT, meta={"versionId": "2"}, name=[{"family": "Moreno"}])
    route.mock(return_value=fhir(200, changed, ETag='W/"2"'))
    assert adapter.read("Patient", "1")["name"][0]["family"] == "Moreno"
    clock.offset += 31
    route.mock(return_value=httpx.Response(304))
    assert adapter.read("Patient", "1")["name"][0]["family"] == "Moreno"
    assert route.calls.last.request.headers["If-None-Match"] == 'W/"2"'


def test_update_through_the_adapter_invalidates_the_cached_read(ehr, adapter):
    read = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                         headers={"Content-Type": FJ, "ETag": 'W/"1"'})
    adapter.read("Patient", "1")
    changed = dict(PATIENT, meta={"versionId": "2"}, name=[{"family": "Moreno"}])
    ehr.put("/Patient/1").respond(200, content=orjson.dumps(changed),
                                  headers={"Content-Type": FJ})
    adapter.update(dict(changed))
    read.mock(return_value=fhir(200, changed, ETag='W/"2"'))
    assert adapter.read("Patient", "1")["name"][0]["family"] == "Moreno"
    assert read.call_count == 2
    assert "If-None-Match" not in read.calls.last.request.headers


def test_failed_update_still_invalidates_the_cached_read(ehr, adapter):
    read = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                         headers={"Content-Type": FJ})
    adapter.read("Patient", "1")
    ehr.put("/Patient/1").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(UpstreamUnavailable):
        adapter.update(dict(PATIENT))
    adapter.read("Patient", "1")
    assert read.call_count == 2  # the write may have landed: the copy was dropped



@pytest.mark.parametrize("revalidating", [False, True], ids=["first-read", "after-ttl-304"])
def test_a_read_answered_before_a_write_is_never_stored_after_it(ehr, adapter, clock,
                                                                   revalidating):
    """The EHR answered a read with version 1, the answer was still on its way, and an update
    (version 2) went through the gateway meanwhile: the old answer must not be stored as
    fresh after the update dropped the copy (it would be served for the whole TTL, and write
    checks would read it)."""
    import threading

    changed = dict(PATIENT, meta={"versionId": "2"}, name=[{"family": "Moreno"}])
    read = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                         headers={"Content-Type": FJ, "ETag": 'W/"1"'})
    if revalidating:
        adapter.read("Patient", "1")  # cached, then too old: the next read revalidates
        clock.offset += 31
    asked, answer = threading.Event(), threading.Event()

    def old_answer_in_flight(request):
        asked.set()
        assert answer.wait(5)
        return httpx.Response(304, headers={"ETag": 'W/"1"'}) if revalidating else \
            fhir(200, PATIENT, ETag='W/"1"')

    read.mock(side_effect=old_answer_in_flight)
    ehr.put("/Patient/1").respond(200, content=orjson.dumps(changed),
                                  headers={"Content-Type": FJ})
    reader = threading.Thread(target=adapter.read, args=("Patient", "1"))
    reader.start()
    assert asked.wait(5)
    read.mock(side_effect=None, return_value=fhir(200, changed, ETag='W/"2"'))
    adapter.update(dict(changed))
    answer.set()
    reader.join(5)
    assert adapter.read("Patient", "1")["meta"]["versionId"] == "2"
    assert adapter.read("Patient", "1")["meta"]["versionId"] == "2"  # and that one is kept
    assert read.call_count == (3 if revalidating else 2)


def test_upstream_down_after_ttl_serves_stale_with_a_notice(ehr, adapter, clock):
    route = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                          headers={"Content-Type": FJ, "ETag": 'W/"1"'})
    first = adapter.read("Patient", "1")
    clock.offset += 120
    route.mock(side_effect=httpx.ConnectError("refused"))
    notices = collect_notices()
    assert adapter.read("Patient", "1") == first
    assert route.call_count == 1 + 3
    assert [n.kind for n in notices] == ["stale"]
    assert 120 <= notices[0].age < 130
    assert HOST not in notices[0].text


def test_stale_copy_older_than_stale_for_is_not_served(ehr, clock):
    a, _ = make(stale_for=600)
    route = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                          headers={"Content-Type": FJ})
    a.read("Patient", "1")
    clock.offset += 601
    route.mock(return_value=fhir(503))
    notices = collect_notices()
    with pytest.raises(UpstreamUnavailable):
        a.read("Patient", "1")
    assert notices == []
    a.close()


def test_upstream_error_after_ttl_is_not_hidden_by_the_cache(ehr, adapter, clock):
    route = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                          headers={"Content-Type": FJ})
    adapter.read("Patient", "1")
    clock.offset += 31
    route.mock(return_value=httpx.Response(404, json=outcome("gone away", "not-found")))
    with pytest.raises(NotFound):
        adapter.read("Patient", "1")
    route.mock(return_value=fhir(503))
    with pytest.raises(UpstreamUnavailable):  # the 404 dropped the copy: nothing stale to serve
        adapter.read("Patient", "1")


def test_search_served_stale_when_upstream_down(ehr, adapter, clock):
    route = ehr.get("/Patient").respond(200, content=orjson.dumps(bundle(PATIENT)),
                                        headers={"Content-Type": FJ})
    assert [r["id"] for r in adapter.search("Patient", query(name="R")).resources] == ["1"]
    adapter.search("Patient", query(name="R"))
    assert route.call_count == 1
    clock.offset += 31
    route.mock(return_value=fhir(503))
    notices = collect_notices()
    page = adapter.search("Patient", query(name="R"))
    assert [r["id"] for r in page.resources] == ["1"]
    assert notices and notices[0].kind == "stale" and notices[0].age >= 31


# -- 4xx from the EHR ---------------------------------------------------------------------------

@pytest.mark.parametrize("status, cls", [
    (400, Invalid), (409, Conflict), (412, PreconditionFailed), (422, Unprocessable),
])
def test_client_errors_keep_their_meaning(ehr, adapter, status, cls):
    route = ehr.get("/Patient/1").respond(
        status, content=orjson.dumps(outcome("Bad _count value", "invalid")),
        headers={"Content-Type": FJ})
    with pytest.raises(cls) as info:
        adapter.read("Patient", "1")
    assert type(info.value) is cls
    assert route.call_count == 1
    assert f"({status}): EHR: Bad _count value" in info.value.diagnostics
    assert status_for(info.value) == status


@pytest.mark.parametrize("status, cls", [(404, NotFound), (410, Gone)])
def test_missing_and_deleted_keep_their_meaning(ehr, adapter, status, cls):
    route = ehr.get("/Patient/1").respond(
        status, content=orjson.dumps(outcome(f"HAPI-2001: {BASE}/Patient/1 is gone", "not-found")),
        headers={"Content-Type": FJ})
    with pytest.raises(cls) as info:
        adapter.read("Patient", "1")
    assert type(info.value) is cls
    assert route.call_count == 1
    assert "Patient/1" in info.value.diagnostics
    assert status_for(info.value) == status
    no_host(info.value)


@pytest.mark.parametrize("status, cls", [(404, NotFound), (410, Gone), (412, PreconditionFailed),
                                         (422, Unprocessable), (400, Invalid)])
def test_write_refusals_keep_their_meaning(ehr, adapter, status, cls):
    route = ehr.put("/Patient/1").respond(
        status, content=orjson.dumps(outcome("version conflict", "conflict")),
        headers={"Content-Type": FJ})
    with pytest.raises(cls) as info:
        adapter.update(dict(PATIENT), if_match="1")
    assert type(info.value) is cls
    assert route.call_count == 1
    assert route.calls.last.request.headers["If-Match"] == 'W/"1"'
    assert "EHR: version conflict" in info.value.diagnostics


def test_400_carries_every_ehr_issue_prefixed(ehr, adapter):
    body = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "invalid", "diagnostics": "Observation.status: missing",
         "expression": ["Observation.status"]},
        {"severity": "warning", "code": "code-invalid",
         "details": {"text": "Unknown code x"}}]}
    ehr.post("/Observation").respond(400, content=orjson.dumps(body), headers={"Content-Type": FJ})
    with pytest.raises(Invalid) as info:
        adapter.create(dict(OBSERVATION))
    assert info.value.diagnostics.endswith("EHR: Observation.status: missing")
    assert info.value.issues == [{"severity": "warning", "code": "code-invalid",
                                  "diagnostics": "EHR: Unknown code x"}]


def test_ehr_diagnostics_do_not_leak_the_upstream_host(ehr, adapter):
    body = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "processing",
         "diagnostics": f"Reference {BASE}/Patient/9 is not resolvable at HTTP://EHR.TEST:8080/x"},
        {"severity": "error", "code": "processing", "details": {"text": "see ehr.test logs"}}]}
    ehr.post("/Observation").respond(422, content=orjson.dumps(body),
                                     headers={"Content-Type": FJ})
    with pytest.raises(Unprocessable) as info:
        adapter.create(dict(OBSERVATION))
    assert info.value.diagnostics.endswith(
        "EHR: Reference /fhir/Patient/9 is not resolvable at /x")
    assert info.value.issues[0]["diagnostics"] == "EHR: see the EHR logs"
    no_host(info.value)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_an_upstream_error(ehr, adapter, status):
    ehr.get("/Patient/1").respond(status, content=orjson.dumps(outcome("denied", "security")),
                                  headers={"Content-Type": FJ})
    with pytest.raises(UpstreamError) as info:
        adapter.read("Patient", "1")
    assert type(info.value) is UpstreamError
    assert status_for(info.value) == 502
    assert "credentials" in info.value.diagnostics
    no_host(info.value)


def test_no_authorization_header_without_auth(ehr, adapter):
    route = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                          headers={"Content-Type": FJ})
    adapter.read("Patient", "1")
    assert "Authorization" not in route.calls.last.request.headers


def test_static_bearer_is_sent_with_auth_bearer(ehr):
    a, _ = make(auth="bearer", bearer_token="clinic-static-token")
    read = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                         headers={"Content-Type": FJ})
    post = ehr.post("/Observation").respond(201, content=orjson.dumps(
        dict(OBSERVATION, id="o1")), headers={"Content-Type": FJ})
    a.read("Patient", "1")
    a.create(dict(OBSERVATION))
    for route in (read, post):
        assert route.calls.last.request.headers["Authorization"] == "Bearer clinic-static-token"
    a.close()


@pytest.mark.filterwarnings("ignore:Using implicit key type")
def test_backend_services_discovery_failure_does_not_name_the_host(ehr):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    a, _ = make(auth="backend-services", client_id="gw", private_key_pem=pem)
    ehr.get("/.well-known/smart-configuration").respond(404)
    ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                  headers={"Content-Type": FJ})
    try:
        with pytest.raises(UpstreamError) as info:
            a.read("Patient", "1")
        no_host(info.value)
    finally:
        a.close()


# -- through the gateway over HTTP ------------------------------------------------------------

@pytest.fixture
def front(tmp_path):
    """A gateway (adapter fhir_rest, vendor hapi) in front of the mocked EHR, over loopback HTTP.
    respx lets the loopback traffic to the gateway itself through; only ehr.test is mocked."""
    from tests.rest_support import start_rest_gateway

    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()
        router.get("/metadata").respond(404, json=outcome("no metadata", "not-found"))
        live, stop = start_rest_gateway(tmp_path, BASE, {
            "FHIR_GATEWAY_OUTBOX_WORKER": "false",  # the Task stays as queued, no race
            "FHIR_GATEWAY_FHIR_REST_TRANSPORT": "httpx",  # respx patches httpcore
            "FHIR_GATEWAY_FHIR_REST_BREAKER_FAILURES": "100"}, vendor="hapi")
        try:
            yield live, router
        finally:
            stop()


def test_gateway_read_with_upstream_503_is_503_with_outcome(front):
    live, ehr = front
    route = ehr.get("/Patient/1").respond(503, content=HTML, headers={"Content-Type": "text/html"})
    resp = live.get("Patient/1")
    assert resp.status_code == 503
    assert resp.headers["Content-Type"].startswith(FJ)
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "transient"
    assert "Retry-After" not in resp.headers
    assert HOST not in resp.text
    assert route.call_count == 3


def test_gateway_429_long_retry_after_is_503_with_retry_after(front):
    live, ehr = front
    ehr.get("/Patient/1").respond(429, headers={"Retry-After": "7200"},
                                  json=outcome("quota", "throttled"))
    resp = live.get("Patient/1")
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "7200"
    assert resp.json()["issue"][0]["code"] == "transient"
    assert HOST not in resp.text


def test_gateway_upstream_error_is_502(front):
    live, ehr = front
    ehr.get("/Patient/1").respond(200, content=b"<html>login</html>",
                                  headers={"Content-Type": "text/html"})
    resp = live.get("Patient/1")
    assert resp.status_code == 502
    assert "text/html" in resp.json()["issue"][0]["diagnostics"]


def test_gateway_queues_a_create_when_upstream_is_down(front):
    live, ehr = front
    post = ehr.post("/Observation").mock(side_effect=httpx.ConnectError("refused"))
    resp = live.post("Observation", OBSERVATION)
    assert resp.status_code == 202
    status_url = resp.headers["Content-Location"]
    assert status_url.startswith(f"{live.base}/_outbox/")
    assert resp.headers["Location"] == status_url
    assert resp.json()["resourceType"] == "OperationOutcome"
    assert HOST not in resp.text
    # A conditional create (the gateway's write id), so it was safe to retry.
    assert post.call_count == 3
    assert "If-None-Exist" in post.calls.last.request.headers
    task = live.client.get(status_url)
    assert task.status_code == 200
    body = task.json()
    assert body["resourceType"] == "Task" and body["status"] == "requested"
    assert body["code"]["text"] == "create Observation"
    assert HOST not in task.text


def test_gateway_serves_a_stale_read_with_age_and_warning(front, clock):
    live, ehr = front
    route = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                          headers={"Content-Type": FJ, "ETag": 'W/"1"'})
    fresh = live.get("Patient/1")
    assert fresh.status_code == 200 and "Warning" not in fresh.headers
    clock.offset += 120
    route.mock(return_value=fhir(503))
    stale = live.get("Patient/1")
    assert stale.status_code == 200
    assert stale.json()["name"] == PATIENT["name"]
    assert 120 <= int(stale.headers["Age"]) < 130
    assert stale.headers["Warning"].startswith("110 ")
    assert route.calls.last.request.headers["If-None-Match"] == 'W/"1"'


def test_gateway_serves_a_stale_search_with_an_outcome_entry(front, clock):
    live, ehr = front
    route = ehr.get("/Patient").respond(200, content=orjson.dumps(bundle(PATIENT)),
                                        headers={"Content-Type": FJ})
    fresh = live.get("Patient", params={"family": "Rivera"})
    assert fresh.status_code == 200
    assert all(e["search"]["mode"] == "match" for e in fresh.json()["entry"])
    clock.offset += 60
    route.mock(side_effect=httpx.ReadTimeout("slow"))
    stale = live.get("Patient", params={"family": "Rivera"})
    assert stale.status_code == 200
    assert stale.headers["Warning"].startswith("110 ") and int(stale.headers["Age"]) >= 60
    entries = stale.json()["entry"]
    assert [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"] == ["1"]
    outcomes = [e for e in entries if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    assert outcomes[0]["resource"]["resourceType"] == "OperationOutcome"
    assert "copy kept by the gateway" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    assert HOST not in stale.text


def test_gateway_search_paging_never_shows_upstream_links(front):
    live, ehr = front
    ehr.get("/Patient", params={"_getpages": "abc"}).respond(
        200, content=orjson.dumps(bundle(dict(PATIENT, id="2"))), headers={"Content-Type": FJ})
    ehr.get("/Patient").respond(200, content=orjson.dumps(
        bundle(PATIENT, next_url=f"{BASE}/Patient?_getpages=abc")), headers={"Content-Type": FJ})
    first = live.get("Patient", params={"family": "Rivera"})
    assert first.status_code == 200 and HOST not in first.text
    nxt = next(link["url"] for link in first.json()["link"] if link["relation"] == "next")
    assert nxt.startswith(live.base)
    second = live.client.get(nxt)
    assert second.status_code == 200
    assert [e["resource"]["id"] for e in second.json()["entry"]] == ["2"]


def test_gateway_never_forwards_the_apps_token(front):
    live, ehr = front
    route = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                          headers={"Content-Type": FJ})
    resp = live.get("Patient/1", headers={"Authorization": "Bearer the-apps-own-token"})
    assert resp.status_code == 200
    assert "Authorization" not in route.calls.last.request.headers


def test_open_breaker_serves_the_stale_copy_without_calling(ehr, adapter, clock):
    fake = _fake_breaker(adapter, failures=1, reset=60.0)
    route = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                          headers={"Content-Type": FJ})
    adapter.read("Patient", "1")
    ehr.get("/Patient/2").respond(503)
    with pytest.raises(UpstreamUnavailable):
        adapter.read("Patient", "2")
    assert adapter.client.breaker.state == "open"
    clock.offset += 31
    notices = collect_notices()
    assert adapter.read("Patient", "1")["id"] == "1"
    assert route.call_count == 1
    assert [n.kind for n in notices] == ["stale"]
    assert "not answering" in notices[0].text
    fake.now += 60
    assert adapter.read("Patient", "1")["id"] == "1"  # the trial revalidates and closes
    assert route.call_count == 2
    assert adapter.client.breaker.state == "closed"


def test_pages_to_show_share_their_cached_resources_read_only(ehr, adapter):
    """`search_to_show` parses a cached page once and hands every caller the same frozen
    resources in lists of its own; `search` (for callers that may change what they get) still
    gets private, changeable copies; a page stored again is parsed again."""
    from mappings.frozen import FrozenDict

    route = ehr.get("/Observation").respond(
        200, content=orjson.dumps(bundle({**OBSERVATION, "id": "o1"})),
        headers={"Content-Type": FJ})
    fetched = adapter.search_to_show("Observation", query(patient="1"))  # from the EHR
    assert type(fetched.resources[0]) is dict  # just parsed: the caller's own
    first = adapter.search_to_show("Observation", query(patient="1"))
    second = adapter.search_to_show("Observation", query(patient="1"))
    assert route.call_count == 1
    assert first.resources[0] is second.resources[0]
    assert isinstance(first.resources[0], FrozenDict)
    assert first.resources is not second.resources and first.patients == [frozenset({"1"})]
    with pytest.raises(TypeError):
        first.resources[0]["status"] = "cancelled"
    with pytest.raises(TypeError):
        first.resources[0]["code"]["text"] = "changed"
    first.resources.clear()  # the list is the caller's own
    assert adapter.search_to_show("Observation", query(patient="1")).resources == \
        [second.resources[0]]
    private = adapter.search("Observation", query(patient="1"))
    assert type(private.resources[0]) is dict and private.resources[0] == second.resources[0]
    private.resources[0]["status"] = "cancelled"  # changes nothing anyone else sees
    assert second.resources[0]["status"] == "final"
    adapter._invalidate("Observation", None)  # a write through the gateway: stored anew
    adapter.search_to_show("Observation", query(patient="1"))
    third = adapter.search_to_show("Observation", query(patient="1"))
    assert route.call_count == 2 and third.resources[0] is not second.resources[0]
    assert isinstance(third.resources[0], FrozenDict)


def test_reads_to_show_share_their_cached_resource_read_only(ehr, adapter):
    """`read_to_show` checks and freezes a cached resource once per stored entry and writes
    its JSON once; `read` still gives private copies; a write through the gateway stores it
    anew (and it is parsed again)."""
    from mappings import frozen
    from mappings.frozen import FrozenDict

    route = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                          headers={"Content-Type": FJ, "ETag": 'W/"1"'})
    fetched = adapter.read_to_show("Patient", "1")  # from the EHR: the caller's own
    assert type(fetched) is dict
    first, second = adapter.read_to_show("Patient", "1"), adapter.read_to_show("Patient", "1")
    assert route.call_count == 1 and first is second and isinstance(first, FrozenDict)
    assert first == PATIENT and frozen.dumps(first) == orjson.dumps(PATIENT)
    with pytest.raises(TypeError):
        first["name"][0]["family"] = "Okafor"
    private = adapter.read("Patient", "1")
    assert type(private) is dict and private == first
    private["name"][0]["family"] = "Okafor"  # changes nothing anyone else sees
    assert adapter.read_to_show("Patient", "1")["name"][0]["family"] == "Rivera"
    adapter._invalidate("Patient", "1")
    adapter.read_to_show("Patient", "1")
    assert route.call_count == 2 and adapter.read_to_show("Patient", "1") is not first


# -- writes whose answer was lost ----------------------------------------------------------------

SLOT = {"resourceType": "Slot", "id": "s1", "schedule": {"reference": "Schedule/sch1"},
        "status": "free", "start": "2026-07-01T09:00:00Z", "end": "2026-07-01T09:30:00Z"}
APPOINTMENT = {"resourceType": "Appointment", "status": "booked",
               "slot": [{"reference": "Slot/s1"}],
               "participant": [{"actor": {"reference": "Patient/1"}, "status": "accepted"}]}


def test_a_put_with_if_match_is_not_retried(ehr, adapter):
    """Its answer lost after it landed, a retry would meet its own new version (412) and be
    taken for a conflict: it is sent once."""
    route = ehr.put("/Slot/s1").mock(side_effect=[httpx.ReadTimeout("slow"),
                                                  fhir(200, dict(SLOT, meta={"versionId": "2"}))])
    with pytest.raises(UpstreamUnavailable):
        adapter.update(dict(SLOT), if_match="1")
    assert route.call_count == 1 and adapter.sleeps == []


@pytest.mark.parametrize(("first", "retried"), [
    (httpx.ConnectError("refused"), True), (httpx.ConnectTimeout("slow to connect"), True),
    (fhir(503, outcome("busy")), True), (fhir(429, outcome("slow down")), True),
    (httpx.ReadTimeout("slow"), False), (httpx.ReadError("reset"), False),
    (fhir(502, outcome("bad gateway")), False), (fhir(504, outcome("timeout")), False),
], ids=["connect-error", "connect-timeout", "503", "429", "read-timeout", "reset", "502", "504"])
def test_a_put_with_if_match_is_retried_only_when_the_ehr_cannot_have_taken_it(
        ehr, adapter, first, retried):
    stored = fhir(200, dict(SLOT, meta={"versionId": "2"}))
    route = ehr.put("/Slot/s1").mock(side_effect=[first, stored])
    if retried:
        assert adapter.update(dict(SLOT), if_match="1").version_id == "2"
    else:
        with pytest.raises(UpstreamUnavailable):
            adapter.update(dict(SLOT), if_match="1")
    assert route.call_count == (2 if retried else 1)


def test_an_emulated_booking_whose_slot_update_landed_unanswered_is_kept(ehr):
    """$book as entry-by-entry writes (Medplum): the Slot's If-Match update timed out but the
    EHR holds it: the booking stands; its Appointment is not undone, leaving a busy Slot."""
    from adapters.base import BundleEntryRequest

    a, _ = make(vendor="medplum")
    busy = dict(SLOT, status="busy")
    ehr.get("/Slot/s1").mock(side_effect=[fhir(200, dict(SLOT, meta={"versionId": "1"})),
                                          fhir(200, dict(busy, meta={"versionId": "2"}))])
    ehr.post("/Appointment").respond(201, content=orjson.dumps(
        dict(APPOINTMENT, id="a1", meta={"versionId": "1"})), headers={"Content-Type": FJ})
    put = ehr.put("/Slot/s1").mock(side_effect=httpx.ReadTimeout("slow"))
    undo = ehr.delete("/Appointment/a1").respond(204)
    results = a.transaction([
        BundleEntryRequest(method="POST", resource_type="Appointment",
                           resource=dict(APPOINTMENT), full_url="urn:uuid:a"),
        BundleEntryRequest(method="PUT", resource_type="Slot", id="s1", resource=busy,
                           if_match="1")])
    assert results[0].resource["id"] == "a1"
    assert results[1].resource["status"] == "busy" and results[1].version_id == "2"
    assert put.call_count == 1 and undo.call_count == 0
    a.close()


def test_an_emulated_booking_whose_slot_update_did_not_land_is_undone(ehr):
    from adapters.base import BundleEntryRequest

    a, _ = make(vendor="medplum")
    ehr.get("/Slot/s1").respond(200, content=orjson.dumps(dict(SLOT, meta={"versionId": "1"})),
                                headers={"Content-Type": FJ})
    ehr.post("/Appointment").respond(201, content=orjson.dumps(
        dict(APPOINTMENT, id="a1", meta={"versionId": "1"})), headers={"Content-Type": FJ})
    ehr.put("/Slot/s1").mock(side_effect=httpx.ReadTimeout("slow"))
    undo = ehr.delete("/Appointment/a1").respond(204)
    with pytest.raises(UpstreamUnavailable):
        a.transaction([
            BundleEntryRequest(method="POST", resource_type="Appointment",
                               resource=dict(APPOINTMENT), full_url="urn:uuid:a"),
            BundleEntryRequest(method="PUT", resource_type="Slot", id="s1",
                               resource=dict(SLOT, status="busy"), if_match="1")])
    assert undo.call_count == 1
    a.close()


def test_an_emulated_create_whose_answer_was_lost_is_found_and_undone(ehr):
    """Entry by entry, a create tagged with a write id is a conditional create on it: its
    answer lost, the retry finds its own copy. When a later step fails, that copy is undone
    with the rest: "nothing was stored" holds."""
    from adapters.base import WRITE_ID_SYSTEM, BundleEntryRequest, assign_write_id

    a, _ = make(vendor="medplum")
    appointment = dict(APPOINTMENT)
    write_id = assign_write_id(appointment)
    stored = dict(appointment, id="a1", meta={"versionId": "1"})
    post = ehr.post("/Appointment").mock(side_effect=[
        httpx.ReadTimeout("answer lost"), fhir(200, stored)])  # the retry matches its copy
    ehr.get("/Slot/s1").respond(200, content=orjson.dumps(dict(SLOT, meta={"versionId": "3"})),
                                headers={"Content-Type": FJ})
    ehr.put("/Slot/s1").respond(412, content=orjson.dumps(outcome("version moved", "conflict")),
                                headers={"Content-Type": FJ})
    undo = ehr.delete("/Appointment/a1").respond(204)
    with pytest.raises(FhirError):
        a.transaction([
            BundleEntryRequest(method="POST", resource_type="Appointment", resource=appointment,
                               full_url="urn:uuid:a", write_id=write_id,
                               if_none_exist=query(identifier=f"{WRITE_ID_SYSTEM}|{write_id}")),
            BundleEntryRequest(method="PUT", resource_type="Slot", id="s1",
                               resource=dict(SLOT, status="busy"), if_match="1")])
    assert post.call_count == 2
    assert post.calls.last.request.headers["If-None-Exist"] == \
        f"identifier={WRITE_ID_SYSTEM}|{write_id}".replace(":", "%3A").replace("|", "%7C")
    assert undo.call_count == 1
    a.close()
