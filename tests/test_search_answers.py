"""Kept search answers (`fhir_gateway.search_answers`): a repeated search is answered with the
Bundle and bytes built the first time, but never after the EHR's page would differ (the cache's
TTL, a write through the gateway to any type the search covers, refreshed capabilities), never
across access decisions, and never instead of a stale answer's warning."""
# ruff: noqa: F811 - pytest fixtures imported from test_rest_faults are redefined as arguments

from __future__ import annotations

import orjson
import pytest

from adapters.fhir_rest import FhirRestAdapter, RestSettings
from fhir_gateway.access import AccessDecision
from fhir_gateway.request import FhirRequest, FhirResponse
from fhir_gateway.search_answers import SearchAnswers, answer_key
from tests.smart_support import smart_env_for
from tests.test_rest_faults import (  # noqa: F401 - fixtures
    BASE,
    FJ,
    OBSERVATION,
    PATIENT,
    bundle,
    clock,
    ehr,
    front,
    query,
)


def _page(*resources: dict) -> bytes:
    return orjson.dumps(bundle(*resources))


def _matches(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [e["resource"]["id"] for e in resp.json().get("entry", [])
            if e["search"]["mode"] == "match"]


def test_a_repeated_search_is_answered_again_until_the_ttl_ends(front, clock):
    live, ehr = front
    route = ehr.get("/Observation").respond(
        200, content=_page({**OBSERVATION, "id": "o1"}), headers={"Content-Type": FJ})
    first = live.get("Observation", params={"patient": "1"})
    again = live.get("Observation", params={"patient": "1"})
    assert _matches(first) == ["o1"] and again.content == first.content
    assert route.call_count == 1
    route.respond(200, content=_page({**OBSERVATION, "id": "o2"}), headers={"Content-Type": FJ})
    clock.offset += 29  # the default TTL is 30 s: still the same page
    assert _matches(live.get("Observation", params={"patient": "1"})) == ["o1"]
    clock.offset += 2
    assert _matches(live.get("Observation", params={"patient": "1"})) == ["o2"]
    assert route.call_count == 2


def test_a_write_through_the_gateway_ends_the_answers_of_its_type(front):
    live, ehr = front
    route = ehr.get("/Observation").respond(
        200, content=_page({**OBSERVATION, "id": "o1"}), headers={"Content-Type": FJ})
    assert _matches(live.get("Observation", params={"patient": "1"})) == ["o1"]
    assert _matches(live.get("Observation", params={"patient": "1"})) == ["o1"]
    created = {**OBSERVATION, "id": "o2", "meta": {"versionId": "1"}}
    ehr.post("/Observation").respond(201, content=orjson.dumps(created), headers={
        "Content-Type": FJ, "Location": f"{BASE}/Observation/o2/_history/1"})
    route.respond(200, content=_page({**OBSERVATION, "id": "o1"}, created),
                  headers={"Content-Type": FJ})
    assert live.post("Observation", OBSERVATION).status_code == 201
    assert _matches(live.get("Observation", params={"patient": "1"})) == ["o1", "o2"]
    assert route.call_count == 2



def test_a_create_that_got_no_answer_still_ends_the_answers_of_its_type(front):
    """The EHR may have stored it: the next search asks the EHR again."""
    import httpx

    live, ehr = front
    route = ehr.get("/Observation").respond(
        200, content=_page({**OBSERVATION, "id": "o1"}), headers={"Content-Type": FJ})
    for _ in range(2):
        assert _matches(live.get("Observation", params={"patient": "1"})) == ["o1"]
    ehr.post("/Observation").mock(side_effect=httpx.ReadTimeout("no answer"))
    assert live.post("Observation", OBSERVATION).status_code == 202  # queued
    live.get("Observation", params={"patient": "1"})
    assert route.call_count == 2

def test_a_write_to_an_included_type_ends_the_answers_that_include_it(front):
    live, ehr = front
    page = bundle({**OBSERVATION, "id": "o1"})
    page["entry"].append({"fullUrl": f"{BASE}/Patient/1", "resource": PATIENT,
                          "search": {"mode": "include"}})
    route = ehr.get("/Observation").respond(200, content=orjson.dumps(page),
                                            headers={"Content-Type": FJ})
    params = {"patient": "1", "_include": "Observation:subject"}
    for _ in range(2):
        found = live.get("Observation", params=params)
        assert found.status_code == 200, found.text
    assert route.call_count == 1
    renamed = {**PATIENT, "meta": {"versionId": "2"}, "name": [{"family": "Okafor"}]}
    ehr.put("/Patient/1").respond(200, content=orjson.dumps(renamed), headers={
        "Content-Type": FJ, "ETag": 'W/"2"'})
    ehr.get("/Patient/1").respond(200, content=orjson.dumps(renamed), headers={
        "Content-Type": FJ, "ETag": 'W/"2"'})
    page["entry"][1]["resource"] = renamed
    route.respond(200, content=orjson.dumps(page), headers={"Content-Type": FJ})
    assert live.put("Patient/1", {**PATIENT, "name": [{"family": "Okafor"}]}).status_code == 200
    found = live.get("Observation", params=params)
    assert route.call_count == 2
    assert "Okafor" in found.text
    assert _matches(live.get("Observation", params={"patient": "1"})) == ["o1"]


def test_each_spelling_of_a_search_is_its_own_answer(front):
    """`_elements`, `_pretty` and `_format` are part of the request: each is written as asked,
    from one page of the EHR."""
    live, ehr = front
    route = ehr.get("/Observation").respond(
        200, content=_page({**OBSERVATION, "id": "o1"}), headers={"Content-Type": FJ})
    full = live.get("Observation", params={"patient": "1"})
    for _ in range(2):
        slim = live.get("Observation", params={"patient": "1", "_elements": "status"})
        assert "weight" not in slim.text and slim.json()["entry"][0]["resource"]["status"]
        pretty = live.get("Observation", params={"patient": "1", "_pretty": "true"})
        assert pretty.content.startswith(b'{\n  "resourceType"')
        plain = live.get("Observation", params={"patient": "1",
                                                "_format": "application/json"})
        assert plain.headers["Content-Type"].startswith("application/json")
    assert live.get("Observation", params={"patient": "1"}).content == full.content
    assert orjson.loads(pretty.content)["entry"] == full.json()["entry"]
    assert route.call_count == 1  # the EHR is asked the same search for every spelling


def test_a_stale_answer_is_never_served_from_the_kept_one(front, clock):
    """After the TTL, with the EHR down, the answer is the adapter's stale copy with its
    warning, not the kept answer without one."""
    import httpx

    live, ehr = front
    route = ehr.get("/Observation").respond(
        200, content=_page({**OBSERVATION, "id": "o1"}), headers={"Content-Type": FJ})
    for _ in range(2):
        assert "Warning" not in live.get("Observation", params={"patient": "1"}).headers
    clock.offset += 60
    route.mock(side_effect=httpx.ConnectError("refused"))
    stale = live.get("Observation", params={"patient": "1"})
    assert stale.status_code == 200 and stale.headers["Warning"].startswith("110 ")
    assert any(e["search"]["mode"] == "outcome" for e in stale.json()["entry"])


def test_adapter_pages_say_how_long_they_hold(ehr, clock):
    adapter = FhirRestAdapter(RestSettings(base_url=BASE, vendor="hapi", transport="httpx"))
    try:
        ehr.get("/Observation").respond(200, content=_page({**OBSERVATION, "id": "o1"}),
                                        headers={"Content-Type": FJ})
        fetched = adapter.search_to_show("Observation", query(patient="1"))
        cached = adapter.search_to_show("Observation", query(patient="1"))
        assert adapter.still_valid(fetched.validity) and adapter.still_valid(cached.validity)
        adapter._invalidate("Patient", None)  # another type: this search is unchanged
        assert adapter.still_valid(cached.validity)
        adapter._invalidate("Observation", None)
        assert not adapter.still_valid(cached.validity)
        renewed = adapter.search_to_show("Observation", query(patient="1"))
        assert adapter.still_valid(renewed.validity)
        clock.offset += 31
        assert not adapter.still_valid(renewed.validity)
        assert not adapter.still_valid(None) and not adapter.still_valid("forged")
    finally:
        adapter.close()


class _Adapter:
    """Only what `SearchAnswers` asks of an adapter."""

    def __init__(self) -> None:
        self.valid = True

    def still_valid(self, validity: object) -> bool:
        return self.valid and validity == "page-1"


def test_kept_answers_are_read_only_and_end_with_the_page_or_the_capabilities():
    answers, adapter, caps = SearchAnswers(), _Adapter(), object()
    req = FhirRequest(interaction="search-type", resource_type="Observation",
                      params=[("patient", "1")])
    key = answer_key(req, "http://gw/fhir", AccessDecision(patient="1"))
    bundle_ = {"resourceType": "Bundle", "entry": [{"resource": dict(OBSERVATION)}]}
    sent = answers.keep(key, FhirResponse(200, bundle_, shape=True), "page-1", caps)
    hit = answers.get(key, adapter, caps)
    assert hit is not None and hit is not sent and hit.resource is sent.resource
    assert hit.rendered is sent.rendered  # bodies written for one serve the next
    with pytest.raises(TypeError):
        hit.resource["entry"][0]["resource"]["status"] = "cancelled"
    assert bundle_["entry"][0]["resource"] == OBSERVATION  # the builder's copy is not frozen
    assert answers.get(key, adapter, object()) is None  # capabilities refreshed
    answers.keep(key, FhirResponse(200, bundle_), "page-1", caps)
    adapter.valid = False
    assert answers.get(key, adapter, caps) is None
    adapter.valid = True
    assert answers.get(key, adapter, caps) is None  # dropped when found invalid


def test_answer_keys_tell_every_input_apart():
    base = FhirRequest(interaction="search-type", resource_type="Observation",
                       params=[("patient", "1")])
    mine = AccessDecision(patient="1", narrowing=[("patient", "Patient/1")], exact=False)
    keys = {
        answer_key(base, "http://gw/fhir", mine),
        answer_key(base, "http://gw/fhir", AccessDecision(patient="2")),
        answer_key(base, "http://gw/fhir", AccessDecision(
            patient="1", queries=[(("category", "vital-signs"),)],
            narrowing=[("patient", "Patient/1")], exact=False)),
        answer_key(base, "http://gw/fhir", None),
        answer_key(base, "http://other/fhir", mine),
        answer_key(FhirRequest(interaction="search-type", resource_type="Observation",
                               params=[("patient", "1")], prefer={"handling": "strict"}),
                   "http://gw/fhir", mine),
        answer_key(FhirRequest(interaction="search-type", resource_type="Observation",
                               params=[("patient", "1"), ("_count", "5")]),
                   "http://gw/fhir", mine),
        answer_key(FhirRequest(interaction="search-type", resource_type="Condition",
                               params=[("patient", "1")]), "http://gw/fhir", mine),
    }
    assert len(keys) == 8


def test_answers_with_includes_are_apart_for_tokens_with_other_scopes():
    """Included resources are judged by the scopes for their own types: the same decision for
    the searched type is not enough to share an answer that includes anything."""
    from fhir_gateway.access import Principal
    from smart_launch.scopes import parse_scopes

    def key(params, scope):
        principal = Principal(client_id="app", scopes=parse_scopes(scope), patient="1")
        req = FhirRequest(interaction="search-type", resource_type="Observation",
                          params=params, principal=principal)
        return answer_key(req, "http://gw/fhir", AccessDecision(patient="1"))

    wide, narrow = "patient/Observation.rs patient/Patient.rs", "patient/Observation.rs"
    included = [("_include", "Observation:subject")]
    assert key(included, wide) != key(included, narrow)
    assert key([("_revinclude:iterate", "Provenance:target")], wide) != \
        key([("_revinclude:iterate", "Provenance:target")], narrow)
    assert key([("code", "x")], wide) == key([("code", "x")], narrow)  # nothing included


def test_a_kept_answer_never_reaches_another_patient_or_a_narrower_scope(tmp_path):
    """Over real HTTP with SMART on, in front of a real upstream gateway: ann's answer, kept,
    is not what bob gets for the very same search, nor ann with a token that may see only
    her vital signs."""
    from tests.rest_support import seeded_upstream, start_rest_gateway

    upstream = seeded_upstream(tmp_path / "upstream")
    live, stop = start_rest_gateway(tmp_path / "front", upstream.base, {
        "FHIR_GATEWAY_FHIR_REST_DEFAULT_CACHE_TTL": "300"}, auth=True)
    env = smart_env_for(live)
    try:
        ann = env.patient_token("app-public", "ann")["access_token"]
        bob = env.patient_token("app-public", "bob")["access_token"]
        vitals = env.patient_token(
            "app-public", "ann", scope="launch/patient openid fhirUser patient/Observation.rs?"
            "category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
        )["access_token"]
        params = {"patient": "pat-0001", "_count": "50"}
        with env.fhir(ann) as client:
            mine = [client.get("Observation", params=params) for _ in range(2)]
        assert mine[0].content == mine[1].content and _matches(mine[0])
        categories = {c["code"] for e in mine[0].json()["entry"]
                      for cat in e["resource"].get("category", []) for c in cat["coding"]}
        assert "vital-signs" in categories and len(categories) > 1
        with env.fhir(bob) as client:
            theirs = client.get("Observation", params=params)
        assert theirs.status_code in (200, 403)
        if theirs.status_code == 200:
            assert not theirs.json().get("entry")
        with env.fhir(vitals) as client:
            narrow = client.get("Observation", params=params)
        assert narrow.status_code == 200, narrow.text
        shown = {c["code"] for e in narrow.json()["entry"]
                 for cat in e["resource"].get("category", []) for c in cat["coding"]}
        assert shown == {"vital-signs"}
    finally:
        env.browser.close()
        stop()
        upstream.stop()


def test_answers_are_kept_within_a_byte_budget():
    """Each answer counts about twelve times its JSON; the least recently used go first, and
    one too large for the budget is sent but not kept."""
    adapter, caps = _Adapter(), object()
    answers = SearchAnswers(budget=32 * 12 * 2_000)  # keeps answers of up to ~2 KB of JSON

    def answer(n: int) -> FhirResponse:
        entries = [{"resource": {**OBSERVATION, "id": f"o{i}"}} for i in range(n)]
        return FhirResponse(200, {"resourceType": "Bundle", "entry": entries})

    def key(i: int) -> tuple:
        req = FhirRequest(interaction="search-type", resource_type="Observation",
                          params=[("code", str(i))])
        return answer_key(req, "http://gw/fhir", None)

    for i in range(100):  # ~1.3 KB of JSON each: about 48 fit
        answers.keep(key(i), answer(10), "page-1", caps)
    assert 0 < answers.held <= 32 * 12 * 2_000
    assert answers.get(key(99), adapter, caps) is not None
    assert answers.get(key(0), adapter, caps) is None  # the oldest went first
    big = answer(40)  # ~5 KB of JSON: over a 32nd of the budget
    sent = answers.keep(key(200), big, "page-1", caps)
    assert sent is big and answers.get(key(200), adapter, caps) is None
    many = answer(101)  # more entries than any kept answer holds: not even frozen
    roomy = SearchAnswers()
    assert roomy.keep(key(201), many, "page-1", caps) is many and roomy.held == 0
    assert type(many.resource) is dict


class _Down:
    """A shared cache that cannot be reached: every call fails."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise ConnectionError("redis is down")
        return fail


def test_nothing_is_kept_while_the_shared_cache_is_down(ehr):
    """Without the write generations no page may say it holds: a write in another process
    could not end it."""
    from adapters.fhir_rest.cache import ResponseCache

    adapter = FhirRestAdapter(RestSettings(base_url=BASE, vendor="hapi", transport="httpx"),
                              cache=ResponseCache(_Down(), "test", 60))
    try:
        route = ehr.get("/Observation").respond(
            200, content=_page({**OBSERVATION, "id": "o1"}), headers={"Content-Type": FJ})
        for _ in range(2):
            page = adapter.search_to_show("Observation", query(patient="1"))
            assert [r["id"] for r in page.resources] == ["o1"] and page.validity is None
        assert route.call_count == 2  # nothing cached either
    finally:
        adapter.close()


class _Flaky:
    """An in-process cache backend that can be switched off, as Redis going away."""

    def __init__(self) -> None:
        from adapters.fhir_rest.cache import MemoryBackend

        self.inner, self.down = MemoryBackend(100, 3600), False

    def __getattr__(self, name):
        call = getattr(self.inner, name)

        def maybe(*args, **kwargs):
            if self.down:
                raise ConnectionError("redis is down")
            return call(*args, **kwargs)
        return maybe


def test_a_write_the_shared_cache_missed_is_recorded_before_it_is_used_again(ehr):
    """Drops and bumps that failed while the shared cache was away are done as soon as it is
    back, before any answer is taken from it: a write is never lost to the outage."""
    from adapters.fhir_rest.cache import ResponseCache

    backend = _Flaky()
    adapter = FhirRestAdapter(RestSettings(base_url=BASE, vendor="hapi", transport="httpx"),
                              cache=ResponseCache(backend, "test", 3600))
    try:
        search = ehr.get("/Observation").respond(
            200, content=_page({**OBSERVATION, "id": "o1"}), headers={"Content-Type": FJ})
        read = ehr.get("/Patient/1").respond(200, content=orjson.dumps(PATIENT),
                                             headers={"Content-Type": FJ})
        kept = adapter.search_to_show("Observation", query(patient="1")).validity
        adapter.read("Patient", "1")
        assert adapter.still_valid(kept) and adapter.read("Patient", "1") == PATIENT
        assert (search.call_count, read.call_count) == (1, 1)
        backend.down = True
        adapter._invalidate("Observation", None)  # writes while the cache is away
        adapter._invalidate("Patient", "1")
        assert not adapter.still_valid(kept)
        backend.down = False
        assert not adapter.still_valid(kept)  # the missed bump was done first
        adapter.search_to_show("Observation", query(patient="1"))
        adapter.read("Patient", "1")
        assert (search.call_count, read.call_count) == (2, 2)  # the missed drop too
        assert adapter.cache.settled()
    finally:
        adapter.close()
