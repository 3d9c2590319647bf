"""Property: no response of the FHIR API carries a resource outside the token's compartment and
scopes, whatever the request (read, vread, history, search with includes, batch, transaction).

A module fixture seeds a few awkward resources (one moved from bob to ann, one recategorised,
ones naming a second patient by plain, nested, versioned and absolute references, one deleted),
collects every id with a system token and builds the oracle from that trusted view: a resource
belongs to the patients whose ids (`pat-NNNN`) appear anywhere in its JSON, so the oracle does
not reuse the gateway's own reference parser. Tokens come from real authorization-code flows
(patients, a proxy, a practitioner) and `smart.mint` (system); hypothesis then drives requests
over real HTTP. Deterministic tests pin the awkward resources, search totals, a RelatedPerson
user's token, `$access-log` scopes and the audit trail of FHIR access.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from fhir_gateway.audit import audit_log
from tests.smart_support import PASSWORD, REDIRECT

PATIENTS = ("pat-0001", "pat-0002", "pat-0003")
TYPES = ("Patient", "Observation", "Condition", "MedicationRequest", "Appointment",
         "Communication", "Invoice", "Account", "Immunization", "AllergyIntolerance",
         "DiagnosticReport", "Encounter", "DocumentReference", "Task", "CareTeam",
         "Practitioner", "Slot", "Schedule")
# Clinic data that belongs to no patient: a patient token may see it.
CLINIC_TYPES = frozenset({"Practitioner", "PractitionerRole", "Slot", "Schedule", "Location",
                          "Organization", "Medication"})
PATIENT_ID = re.compile(r"pat-\d{4}")
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
CATEGORIES = ("vital-signs", "laboratory", f"{CATEGORY_SYSTEM}|vital-signs",
              f"{CATEGORY_SYSTEM}|laboratory", "problem-list-item", "vital-signs,laboratory")
EXTRA_INCLUDES = (("_include", "Observation:performer"), ("_include", "Encounter:practitioner"),
                  ("_revinclude", "Encounter:practitioner"),
                  ("_revinclude", "Appointment:practitioner"),
                  ("_revinclude", "Communication:recipient"),
                  ("_include", "Communication:recipient"))
MISSING_ID = "no-such-id"


@dataclass(frozen=True)
class Kind:
    """What a token may see: its patient (None = unconfined), types, and category."""

    name: str
    patient: str | None
    types: frozenset[str] | None = None  # None: every type
    category: str | None = None

    def covers(self, rtype: str) -> bool:
        return self.types is None or rtype in self.types


KINDS = {
    "ann": Kind("ann", "pat-0001"),
    "ann_vitals": Kind("ann_vitals", "pat-0001", frozenset({"Observation"}), "vital-signs"),
    "bob": Kind("bob", "pat-0002"),
    "carol3": Kind("carol3", "pat-0003"),
    "practitioner": Kind("practitioner", None),
    "system": Kind("system", None),
}


def owners(resource: dict) -> set[str]:
    """The patients a resource belongs to or names (any `pat-NNNN` in its JSON)."""
    return set(PATIENT_ID.findall(json.dumps(resource)))


def has_category(resource: dict, code: str) -> bool:
    return any(coding.get("code") == code
               for cat in resource.get("category") or []
               for coding in cat.get("coding") or [])


def visible(kind: Kind, resource: dict) -> bool:
    """May a token of this kind be shown this resource (or this version of it)?"""
    rtype = resource.get("resourceType")
    if not kind.covers(rtype):
        return False
    if kind.category is not None and not has_category(resource, kind.category):
        return False
    if kind.patient is None:
        return True
    named = owners(resource)
    if not named <= {kind.patient}:
        return False
    return kind.patient in named or rtype in CLINIC_TYPES


def carried(body: object):
    """Every resource a response body carries: nested Bundles (search, history, transaction and
    batch responses) are opened; OperationOutcomes are not data."""
    if not isinstance(body, dict):
        return
    rtype = body.get("resourceType")
    if rtype == "OperationOutcome":
        return
    if rtype == "Bundle":
        for entry in body.get("entry") or []:
            yield from carried(entry.get("resource"))
            yield from carried((entry.get("response") or {}).get("outcome"))
        return
    yield body


@dataclass
class Record:
    """One resource as the system token sees it: its versions, oldest first (None = a
    deletion). Version ids are opaque (some EHRs use UUIDs), so order is kept, not sorted."""

    rtype: str
    id: str
    versions: dict[str, dict | None] = field(default_factory=dict)

    @property
    def current(self) -> dict | None:
        return list(self.versions.values())[-1]

    @property
    def last_content(self) -> dict | None:
        return next((v for v in reversed(list(self.versions.values())) if v is not None),
                    None)


class World:
    """Everything the property needs; a plain class so hypothesis prints it short."""

    def __init__(self, base: str, tokens: dict[str, str],
                 records: dict[tuple[str, str], Record], special: dict[str, tuple[str, str]],
                 clients: dict[str, httpx.Client]) -> None:
        self.base = base
        self.tokens = tokens
        self.records = records
        self.special = special
        self.clients = clients
        self.ids = {rtype: sorted(rid for t, rid in records if t == rtype) for rtype in TYPES}

    def __repr__(self) -> str:
        return f"World({len(self.records)} resources, awkward ones {self.special})"


def _client(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base + "/", timeout=30,
                        headers={"Authorization": f"Bearer {token}",
                                 "Accept": "application/fhir+json"})


def _exchange(env, code: str, verifier: str) -> dict:
    resp = env.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                     client_id="app-public", code_verifier=verifier)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _seed_awkward(adapter, base: str) -> dict[str, tuple[str, str]]:
    """Resources whose history or references make confinement hard."""
    everything = list(adapter.iter_all())

    def first(rtype: str, patient: str, pred=lambda r: True) -> dict:
        return next(r for r in everything if r["resourceType"] == rtype
                    and owners(r) == {patient} and pred(r))

    special: dict[str, tuple[str, str]] = {}
    # bob's vital sign, re-filed under ann: version 1 is bob's, version 2 is ann's.
    moved = first("Observation", "pat-0002", lambda r: has_category(r, "vital-signs"))
    body = json.loads(json.dumps(moved).replace("pat-0002", "pat-0001"))
    body.pop("meta", None)
    adapter.update(body)
    special["moved"] = ("Observation", moved["id"])
    # ann's lab result, recategorised as a vital sign: version 1 is laboratory.
    lab = first("Observation", "pat-0001", lambda r: has_category(r, "laboratory"))
    body = copy.deepcopy(lab)
    body.pop("meta", None)
    body["category"] = [{"coding": [{"system": CATEGORY_SYSTEM, "code": "vital-signs"}]}]
    adapter.update(body)
    special["recategorised"] = ("Observation", lab["id"])
    # A message about ann, sent to bob: it names two patients, so neither may see it.
    shared = adapter.create({
        "resourceType": "Communication", "status": "completed",
        "subject": {"reference": "Patient/pat-0001"},
        "recipient": [{"reference": "Patient/pat-0002"}],
        "payload": [{"contentString": "copy of ann's results"}]}).resource
    special["shared"] = ("Communication", shared["id"])
    # ann's allergy, noted by carol's other patient: a nested reference to pat-0003.
    allergy = first("AllergyIntolerance", "pat-0001")
    body = copy.deepcopy(allergy)
    body.pop("meta", None)
    body["note"] = [{"authorReference": {"reference": "Patient/pat-0003"}, "text": "seen"}]
    adapter.update(body)
    special["noted"] = ("AllergyIntolerance", allergy["id"])
    # The same, with the other patient named by a versioned and by an absolute reference
    # (both valid FHIR Reference.reference spellings).
    vitals = first("Observation", "pat-0001", lambda r: has_category(r, "vital-signs")
                   and r["id"] != lab["id"])
    body = copy.deepcopy(vitals)
    body.pop("meta", None)
    body["performer"] = [{"reference": "Patient/pat-0002/_history/1"}]
    adapter.update(body)
    special["versioned_ref"] = ("Observation", vitals["id"])
    shared = adapter.create({
        "resourceType": "Communication", "status": "completed",
        "subject": {"reference": "Patient/pat-0001"},
        "recipient": [{"reference": f"{base}/Patient/pat-0003"}],
        "payload": [{"contentString": "copy of ann's results"}]}).resource
    special["absolute_ref"] = ("Communication", shared["id"])
    # ann's condition, deleted: version 2 is a deletion.
    condition = first("Condition", "pat-0001")
    adapter.delete("Condition", condition["id"])
    special["deleted"] = ("Condition", condition["id"])
    return special


@pytest.fixture(scope="module")
def world(smart_env) -> Iterator[World]:
    smart, live = smart_env.smart, smart_env.live
    special = _seed_awkward(live.adapter, live.base)

    smart.clients.add("props-admin", "public", redirect_uris=["http://127.0.0.1:9/admin"])
    smart.accounts.add("dr-mitchell", PASSWORD, fhir_user="Practitioner/prac-01")
    tokens = {"system": smart.mint(smart.clients.get("props-admin"), "system/*.rs")}
    tokens["ann"] = smart_env.patient_token(
        "app-public", "ann", "launch/patient openid fhirUser patient/*.rs")["access_token"]
    vitals = smart_env.patient_token(
        "app-public", "ann",
        "launch/patient openid fhirUser patient/Observation.rs?category=vital-signs")
    assert vitals["scope"].split()[-1] == "patient/Observation.rs?category=vital-signs"
    tokens["ann_vitals"] = vitals["access_token"]
    tokens["bob"] = smart_env.patient_token("app-public", "bob")["access_token"]
    carol = _exchange(smart_env, *smart_env.code_for(
        "app-public", "carol", "launch/patient openid fhirUser patient/*.rs",
        patient="pat-0003"))
    assert carol["patient"] == "pat-0003"
    tokens["carol3"] = carol["access_token"]
    doctor = _exchange(smart_env, *smart_env.code_for(
        "app-public", "dr-mitchell", "openid fhirUser user/*.rs"))
    assert "patient" not in doctor and "user/*.rs" in doctor["scope"].split()
    tokens["practitioner"] = doctor["access_token"]

    clients = {name: _client(live.base, tok) for name, tok in tokens.items()}
    system = clients["system"]
    records: dict[tuple[str, str], Record] = {}
    for rtype in TYPES:
        resp = system.get(rtype, params={"_count": "1000"})
        assert resp.status_code == 200, resp.text
        bundle = resp.json()
        assert not any(link["relation"] == "next" for link in bundle["link"])
        for entry in bundle.get("entry", []):
            res = entry["resource"]
            records[(rtype, res["id"])] = Record(rtype, res["id"],
                                                 {res["meta"]["versionId"]: res})
        assert len([k for k in records if k[0] == rtype]) == live.adapter.count(rtype)
    for rtype, rid in special.values():
        resp = system.get(f"{rtype}/{rid}/_history")
        if resp.status_code == 404 and live.config.fhir_rest.vendor == "medplum" \
                and live.config.adapter.kind == "fhir_rest":
            # Medplum's in-memory repository forgets a deleted resource and its history.
            records[(rtype, rid)] = Record(rtype, rid, {"deleted": None})
            continue
        assert resp.status_code == 200, resp.text
        versions = {}
        for entry in reversed(resp.json()["entry"]):  # the history comes newest first
            vid = entry["response"]["etag"].split('"')[1]
            versions[vid] = entry.get("resource")
        records[(rtype, rid)] = Record(rtype, rid, versions)
    assert records[special["deleted"]].current is None
    assert len(records[special["moved"]].versions) == 2
    yield World(live.base, tokens, records, special, clients)
    for client in clients.values():
        client.close()


# -- expected statuses --------------------------------------------------------------------------

def expected_read(world: World, kind: Kind, rtype: str, rid: str) -> set[int]:
    if not kind.covers(rtype):
        return {403}
    rec = world.records.get((rtype, rid))
    if rec is None:
        return {404}
    if rec.current is None:  # deleted: Gone only to a caller who could see it
        last = rec.last_content  # None where the EHR forgot the deleted resource entirely
        return {410} if last is not None and visible(kind, last) else {404}
    return {200} if visible(kind, rec.current) else {404}


def expected_vread(world: World, kind: Kind, rtype: str, rid: str, vid: str) -> set[int]:
    if not kind.covers(rtype):
        return {403}
    rec = world.records.get((rtype, rid))
    if rec is None:
        return {404}
    last = rec.last_content
    gone = {410} if last is not None and visible(kind, last) else {404}
    if vid not in rec.versions:
        # no such version; of a deleted resource its owner may also be told it is gone
        return {404} | gone if rec.current is None else {404}
    version = rec.versions[vid]
    if version is None:
        return gone
    return {200} if visible(kind, version) else {404}


def expected_history(world: World, kind: Kind, rtype: str, rid: str) -> set[int]:
    if not kind.covers(rtype):
        return {403}
    rec = world.records.get((rtype, rid))
    if rec is None:
        return {404}
    last = rec.last_content
    return {200} if last is not None and visible(kind, last) else {404}


def status_of(entry: dict) -> int:
    return int(entry["response"]["status"].split()[0])


def match_keys(bundle: dict) -> set[tuple[str, str]]:
    return {(e["resource"]["resourceType"], e["resource"]["id"])
            for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"}


def next_link(bundle: dict) -> str | None:
    return next((link["url"] for link in bundle.get("link", [])
                 if link["relation"] == "next"), None)


# -- strategies ---------------------------------------------------------------------------------

def search_params(data, world: World, rtype: str) -> list[tuple[str, str]]:
    def patient_value() -> str:
        pid = data.draw(st.sampled_from(PATIENTS))
        return data.draw(st.sampled_from([pid, f"Patient/{pid}"]))

    options = st.sampled_from(["patient", "subject", "_id", "_include", "_revinclude",
                               "category", "_count", "extra"])
    params = []
    for name in data.draw(st.lists(options, max_size=4), label="params"):
        if name in ("patient", "subject"):
            params.append((name, patient_value()))
        elif name == "_id":
            pool = world.ids[rtype] or [MISSING_ID]
            params.append(("_id", data.draw(st.sampled_from(pool))))
        elif name == "_include":
            target = data.draw(st.sampled_from(["patient", "subject"]))
            params.append(("_include", f"{rtype}:{target}"))
        elif name == "_revinclude":
            params.append(("_revinclude", "Observation:patient"))
        elif name == "category":
            params.append(("category", data.draw(st.sampled_from(CATEGORIES))))
        elif name == "_count":
            params.append(("_count", str(data.draw(st.integers(0, 60)))))
        else:
            params.append(data.draw(st.sampled_from(EXTRA_INCLUDES)))
    return params


def any_id(data, world: World, rtype: str) -> str:
    special = [rid for t, rid in world.special.values() if t == rtype]
    pools = [st.sampled_from(world.ids[rtype])] if world.ids[rtype] else []
    if special:
        pools.append(st.sampled_from(special))
    pools.append(st.just(MISSING_ID))
    return data.draw(st.one_of(*pools), label="id")


def entry_request(data, world: World) -> tuple[str, str, str | None, list]:
    """(type, interaction, id, params) for a GET inside a Bundle."""
    rtype = data.draw(st.sampled_from(TYPES), label="entry type")
    if data.draw(st.booleans(), label="entry is a read"):
        return rtype, "read", any_id(data, world, rtype), []
    return rtype, "search", None, search_params(data, world, rtype)


def entry_url(rtype: str, rid: str | None, params: list) -> str:
    if rid is not None:
        return f"{rtype}/{rid}"
    return str(httpx.URL(rtype, params=params)) if params else rtype


# -- checks -------------------------------------------------------------------------------------

def check_carried(kind: Kind, body: object, what: str) -> None:
    for res in carried(body):
        assert visible(kind, res), (
            f"{kind.name}: {what} carried {res['resourceType']}/{res.get('id')} "
            f"(names {sorted(owners(res))}, category {res.get('category')})")


def check_search(world: World, kind: Kind, rtype: str, params: list, resp: httpx.Response,
                 what: str) -> None:
    client = world.clients[kind.name]
    if not kind.covers(rtype):
        assert resp.status_code == 403, (what, resp.status_code, resp.text[:300])
        return
    truth = world.clients["system"].get(rtype, params=params)
    assert resp.status_code == truth.status_code, (what, resp.status_code, resp.text[:300])
    if resp.status_code != 200:
        assert resp.status_code == 400, (what, resp.status_code, resp.text[:300])
        return
    bundle = resp.json()
    check_carried(kind, bundle, what)
    everything = truth.json()
    if next_link(everything) is None:
        # The whole answer fits one page: the token sees exactly the part it may see.
        wanted = {(r["resourceType"], r["id"]) for r in carried(everything)
                  if visible(kind, r) and (r["resourceType"], r["id"]) in match_keys(everything)}
        assert match_keys(bundle) == wanted, (what, match_keys(bundle) ^ wanted)
    url = next_link(bundle)
    if url is not None:
        page = client.get(url)
        assert page.status_code == 200, (what, url, page.text[:300])
        check_carried(kind, page.json(), f"{what} (next page)")


def check_bundle_post(world: World, kind: Kind, bundle_type: str, entries: list,
                      resp: httpx.Response, what: str) -> None:
    expected_each = []
    for rtype, interaction, rid, _params in entries:
        if not kind.covers(rtype):
            expected_each.append({403})
        elif interaction == "read":
            want = expected_read(world, kind, rtype, rid)
            if bundle_type == "transaction" and want == {410}:
                want = {404, 410}  # the owner may be told "absent" inside a transaction
            expected_each.append(want)
        else:
            expected_each.append({200, 400})
    if bundle_type == "batch":
        assert resp.status_code == 200, (what, resp.text[:300])
        body = resp.json()
        assert body["type"] == "batch-response"
        for got, want in zip(body["entry"], expected_each, strict=True):
            assert status_of(got) in want, (what, got["response"], want)
        check_carried(kind, body, what)
        return
    # A transaction fails whole, with the error of any one failing entry (in any order).
    failing = set().union(*(s for s in expected_each if 200 not in s))
    allowed = failing or {200}
    if any(e[1] == "search" for e in entries):
        allowed = allowed | {400}  # inside a transaction, search parameters are strict
    assert resp.status_code in allowed, (what, resp.status_code, allowed, resp.text[:300])
    if resp.status_code == 200:
        body = resp.json()
        assert body["type"] == "transaction-response"
        check_carried(kind, body, what)


# -- the property -------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_no_response_leaves_the_tokens_compartment(world, data):
    kind = KINDS[data.draw(st.sampled_from(sorted(KINDS)), label="token")]
    client = world.clients[kind.name]
    op = data.draw(st.sampled_from(["read", "vread", "history", "search", "search",
                                    "search-post", "transaction", "batch"]),
                   label="interaction")
    if op in ("read", "vread", "history"):
        rtype = data.draw(st.sampled_from(TYPES), label="type")
        rid = any_id(data, world, rtype)
        if op == "read":
            path, want = f"{rtype}/{rid}", expected_read(world, kind, rtype, rid)
        elif op == "vread":
            vid = data.draw(st.sampled_from(["1", "2", "3"]), label="version")
            path = f"{rtype}/{rid}/_history/{vid}"
            want = expected_vread(world, kind, rtype, rid, vid)
        else:
            path, want = f"{rtype}/{rid}/_history", expected_history(world, kind, rtype, rid)
            if data.draw(st.booleans(), label="paged history"):
                path += "?_count=1"
        resp = client.get(path)
        what = f"GET {path}"
        assert resp.status_code in want, (kind.name, what, want, resp.status_code,
                                          resp.text[:300])
        check_carried(kind, resp.json(), what)
        url = next_link(resp.json())
        if url is not None:
            page = client.get(url)
            assert page.status_code == 200, (what, url, page.text[:300])
            check_carried(kind, page.json(), f"{what} (next page)")
    elif op.startswith("search"):
        rtype = data.draw(st.sampled_from(TYPES), label="type")
        params = search_params(data, world, rtype)
        if op == "search":
            resp = client.get(rtype, params=params)
        else:
            resp = client.post(f"{rtype}/_search", content=str(httpx.QueryParams(params)),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        check_search(world, kind, rtype, params, resp,
                     f"{op} {rtype}?{httpx.QueryParams(params)}")
    else:
        entries = [entry_request(data, world)
                   for _ in range(data.draw(st.integers(1, 2), label="entries"))]
        bundle = {"resourceType": "Bundle", "type": op, "entry": [
            {"request": {"method": "GET", "url": entry_url(rtype, rid, params)}}
            for rtype, _i, rid, params in entries]}
        resp = client.post("", json=bundle, headers={"Content-Type": "application/fhir+json"})
        what = f"POST {op} " + ", ".join(e["request"]["url"] for e in bundle["entry"])
        check_bundle_post(world, kind, op, entries, resp, what)


# -- pinned cases (the awkward resources, for every token) --------------------------------------

@pytest.mark.parametrize("name", sorted(KINDS))
def test_awkward_resources_for_every_token(world, name):
    kind = KINDS[name]
    client = world.clients[name]
    for label, (rtype, rid) in sorted(world.special.items()):
        rec = world.records[(rtype, rid)]
        checks = [(f"{rtype}/{rid}", expected_read(world, kind, rtype, rid)),
                  (f"{rtype}/{rid}/_history", expected_history(world, kind, rtype, rid))]
        checks += [(f"{rtype}/{rid}/_history/{vid}",
                    expected_vread(world, kind, rtype, rid, vid)) for vid in rec.versions]
        for path, want in checks:
            resp = client.get(path)
            assert resp.status_code in want, (name, label, path, want, resp.status_code,
                                              resp.text[:300])
            check_carried(kind, resp.json(), f"GET {path}")
        for bundle_type in ("transaction", "batch"):
            entries = [(rtype, "read", rid, [])]
            resp = client.post("", json={"resourceType": "Bundle", "type": bundle_type,
                                         "entry": [{"request": {"method": "GET",
                                                                "url": f"{rtype}/{rid}"}}]},
                               headers={"Content-Type": "application/fhir+json"})
            check_bundle_post(world, kind, bundle_type, entries, resp,
                              f"POST {bundle_type} GET {rtype}/{rid} ({label})")


def test_patient_tokens_find_their_own_data(world):
    """Confinement must not hide a patient's own data: each patient token's unfiltered search
    of each type returns exactly the resources the oracle says it may see."""
    for name in ("ann", "ann_vitals", "bob", "carol3"):
        kind = KINDS[name]
        for rtype in TYPES:
            resp = world.clients[name].get(rtype, params={"_count": "1000"})
            if not kind.covers(rtype):
                assert resp.status_code == 403, (name, rtype, resp.text[:200])
                continue
            assert resp.status_code == 200, (name, rtype, resp.text[:200])
            wanted = {key for key, rec in world.records.items()
                      if key[0] == rtype and rec.current is not None
                      and visible(kind, rec.current)}
            assert match_keys(resp.json()) == wanted, (name, rtype)


def test_search_totals_count_only_what_the_token_may_see(world):
    """Bundle.total must not count resources the token may not see: a hidden resource is
    treated as absent, so a count that includes it reveals that it exists."""
    wrong = []
    for name in ("ann", "ann_vitals", "bob", "carol3"):
        kind = KINDS[name]
        for rtype in TYPES:
            if not kind.covers(rtype):
                continue
            wanted = sum(1 for key, rec in world.records.items()
                         if key[0] == rtype and rec.current is not None
                         and visible(kind, rec.current))
            for params in ({"_summary": "count"}, {"_total": "accurate", "_count": "1000"}):
                resp = world.clients[name].get(rtype, params=params)
                assert resp.status_code == 200, (name, rtype, params, resp.text[:200])
                total = resp.json().get("total")
                if total != wanted:
                    wrong.append(f"{name}: GET {rtype}?{httpx.QueryParams(params)} "
                                 f"total={total}, may see {wanted}")
    assert not wrong, "\n".join(wrong)


def test_related_person_user_token_stays_with_its_patient(smart_env, world):
    """A proxy (RelatedPerson) account may act for its patients only; with `user/` scopes its
    token must still be confined to the patient chosen at launch, not see the whole clinic."""
    smart_env.smart.accounts.add("rita", PASSWORD, fhir_user="RelatedPerson/rp-01",
                                 patients=["pat-0001"])
    token = _exchange(smart_env, *smart_env.code_for(
        "app-public", "rita", "launch/patient openid fhirUser user/*.rs"))
    assert token["patient"] == "pat-0001"
    kind = Kind("rita", "pat-0001")
    leaks = []
    with _client(world.base, token["access_token"]) as rita:
        for rtype, rid in (("Patient", "pat-0003"), ("Patient", "pat-0002"),
                           world.special["moved"], ("Observation", world.ids["Observation"][-1])):
            want = expected_read(world, kind, rtype, rid)
            resp = rita.get(f"{rtype}/{rid}")
            if resp.status_code not in want | {403}:
                leaks.append(f"GET {rtype}/{rid}: {resp.status_code}, expected {want}")
        for rtype, params in (("Observation", {"patient": "pat-0002", "_count": "5"}),
                              ("Patient", {}), ("Condition", {"_count": "1000"})):
            resp = rita.get(rtype, params=params)
            shown = [r for r in carried(resp.json()) if not visible(kind, r)]
            if shown:
                leaks.append(f"GET {rtype}?{httpx.QueryParams(params)}: {resp.status_code} "
                             f"with {len(shown)} resources of other patients, e.g. "
                             f"{shown[0]['resourceType']}/{shown[0]['id']}")
    assert not leaks, "\n".join(leaks)


def test_access_log_needs_a_scope_that_covers_it(smart_env, world):
    """`Patient/{id}/$access-log` returns AuditEvents: a token that may not search AuditEvent
    (system/Observation.rs) or read the Patient must not get them."""
    smart = smart_env.smart
    admin = smart.clients.get("props-admin")
    observations_only = smart.mint(admin, "system/Observation.rs")
    auditor = smart.mint(admin, "system/AuditEvent.rs")
    with _client(world.base, auditor) as client:
        assert client.get("Patient/pat-0001/$access-log").status_code == 200
    assert world.clients["ann"].get("Patient/pat-0001/$access-log").status_code == 200
    with _client(world.base, observations_only) as client:
        assert client.get("AuditEvent").status_code == 403
        resp = client.get("Patient/pat-0001/$access-log")
    assert resp.status_code in (403, 404), (resp.status_code, resp.text[:300])
    resp = world.clients["ann_vitals"].get("Patient/pat-0001/$access-log")
    assert resp.status_code in (403, 404), (resp.status_code, resp.text[:300])


# -- the audit trail of FHIR access -------------------------------------------------------------

def test_every_fhir_access_is_audited_without_secrets(smart_env, world):
    audit = smart_env.live.app.extensions["fhir_gateway"].audit
    engine = audit.engine

    def last_seq() -> int:
        audit.flush()  # the log is written behind the requests
        with engine.connect() as conn:
            return conn.execute(select(func.max(audit_log.c.seq))).scalar() or 0

    secret_value = "zz-query-value-7f3a"
    ann = world.clients["ann"]
    before = last_seq()
    requests = [
        lambda: ann.get("Patient/pat-0001"),
        lambda: ann.get("Observation", params={"code": secret_value, "_count": "3"}),
        lambda: ann.get("Observation", params={"patient": "Patient/pat-0002"}),
        lambda: ann.get("Patient/pat-0002"),  # another patient's record: refused as absent
        lambda: ann.post("", json={"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": f"Condition?code={secret_value}"}}]},
            headers={"Content-Type": "application/fhir+json"}),
    ]
    statuses = [call().status_code for call in requests]
    assert statuses == [200, 200, 200, 404, 200]
    after = last_seq()
    assert after - before == len(requests)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(
            select(audit_log).where(audit_log.c.seq > before).order_by(audit_log.c.seq))
            .mappings()]
    assert [r["action"] for r in rows] == ["read", "search-type", "search-type", "read",
                                          "bundle"]
    assert [r["outcome"] for r in rows] == ["allowed"] * 3 + ["denied", "allowed"]
    token = world.tokens["ann"]
    for row in rows:
        assert row["client_id"] == "app-public"
        assert (row["patient"] or "").rsplit("/", 1)[-1] == "pat-0001"
        text = json.dumps(row, default=str)
        assert token not in text and token.split(".")[2] not in text
        assert secret_value not in text and "Patient/pat-0002" not in text
    assert rows[0]["resource_type"] == "Patient" and rows[0]["resource_id"] == "pat-0001"
    assert rows[3]["status"] == 404
    result = audit.verify()
    assert result.ok, result.reason
    assert result.entries == after


def test_audit_names_the_patient_whose_record_was_read(smart_env, world):
    """A practitioner's or backend's read of bob's data is an access to bob's record: its audit
    entry must name pat-0002, or bob's `$access-log` ("who looked at my record") misses it."""
    audit = smart_env.live.app.extensions["fhir_gateway"].audit
    observation = next(rid for (rtype, rid), rec in sorted(world.records.items())
                       if rtype == "Observation" and rec.current is not None
                       and owners(rec.current) == {"pat-0002"})
    for name in ("practitioner", "system"):
        for path in ("Patient/pat-0002", f"Observation/{observation}"):
            assert world.clients[name].get(path).status_code == 200
            row = audit.search(count=1)[0]
            assert (row["resource_type"], row["resource_id"]) == tuple(path.split("/"))
            assert (row["patient"] or "").rsplit("/", 1)[-1] == "pat-0002", (name, path, row)
