"""The independent FHIR server (Medplum's router, tests/medplum) behaves as a FHIR R4 server
over real HTTP. Other suites lean on it as a reference, so what it does and does not do is
pinned here: a Medplum upgrade that changes either shows up in this file first."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.medplum_support import medplum_base  # noqa: F401  (pytest fixture)

FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="module")
def fhir(medplum_base: str) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(base_url=medplum_base, timeout=30,
                      headers={"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}) as client:
        yield client


def _base(fhir: httpx.Client) -> str:
    return str(fhir.base_url).rstrip("/")


def _family() -> str:
    return f"Fam{uuid.uuid4().hex[:12]}"


def _patient(family: str, **extra) -> dict:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Ann"]}], **extra}


def _create(fhir: httpx.Client, resource: dict, **kw) -> httpx.Response:
    return fhir.post(resource["resourceType"], json=resource, **kw)


def test_base_url_and_content_type(fhir: httpx.Client) -> None:
    base = _base(fhir)
    assert base.startswith("http://127.0.0.1:")
    assert base.endswith("/fhir")
    resp = fhir.get("Patient", params={"family": _family()})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith(FHIR_JSON)
    # Outside the FHIR base: a 404 OperationOutcome from our wrapper.
    outside = httpx.get(base.removesuffix("/fhir") + "/Patient", timeout=30)
    assert outside.status_code == 404
    assert outside.json()["resourceType"] == "OperationOutcome"


def test_create_then_read(fhir: httpx.Client) -> None:
    base = _base(fhir)
    family = _family()
    created = _create(fhir, _patient(family, gender="female"))
    assert created.status_code == 201, created.text
    body = created.json()
    pid, vid = body["id"], body["meta"]["versionId"]
    assert pid and vid and body["meta"]["lastUpdated"]
    assert created.headers["etag"] == f'W/"{vid}"'
    assert created.headers["location"] == f"{base}/Patient/{pid}/_history/{vid}"

    read = fhir.get(f"Patient/{pid}")
    assert read.status_code == 200
    assert read.headers["etag"] == f'W/"{vid}"'
    assert read.json()["name"][0]["family"] == family
    assert read.json()["gender"] == "female"


def test_update_makes_a_new_version(fhir: httpx.Client) -> None:
    created = _create(fhir, _patient(_family())).json()
    pid, v1 = created["id"], created["meta"]["versionId"]

    updated = fhir.put(f"Patient/{pid}", json={**created, "gender": "male"})
    assert updated.status_code == 200, updated.text
    v2 = updated.json()["meta"]["versionId"]
    # Medplum's versionIds are UUIDs, not counters: a new version means a different id.
    assert v2 != v1
    assert updated.headers["etag"] == f'W/"{v2}"'
    assert fhir.get(f"Patient/{pid}").json()["gender"] == "male"

    # vread keeps the old version; _history lists both, newest first, on every call.
    old = fhir.get(f"Patient/{pid}/_history/{v1}")
    assert old.status_code == 200 and "gender" not in old.json()
    for _ in range(3):
        history = fhir.get(f"Patient/{pid}/_history").json()
        assert history["type"] == "history"
        assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == [v2, v1]

    # If-Match: a stale version is refused with 412, the current one goes through.
    stale = fhir.put(f"Patient/{pid}", json={**created, "gender": "other"},
                     headers={"If-Match": f'W/"{v1}"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    current = fhir.put(f"Patient/{pid}", json={**created, "gender": "other"},
                       headers={"If-Match": f'W/"{v2}"'})
    assert current.status_code == 200
    assert current.json()["meta"]["versionId"] not in (v1, v2)


def test_search_by_family(fhir: httpx.Client) -> None:
    base = _base(fhir)
    family = _family()
    pid = _create(fhir, _patient(family)).json()["id"]
    _create(fhir, _patient(_family()))

    resp = fhir.get("Patient", params={"family": family})
    assert resp.status_code == 200
    bundle = resp.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] == 1
    assert [e["resource"]["id"] for e in bundle["entry"]] == [pid]
    assert bundle["entry"][0]["fullUrl"] == f"{base}/Patient/{pid}"
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert links["self"] == f"{base}/Patient?family={family}"
    assert "next" not in links


def test_paging_walks_next_links(fhir: httpx.Client) -> None:
    base = _base(fhir)
    family = _family()
    ids = {_create(fhir, _patient(family)).json()["id"] for _ in range(5)}

    seen: list[str] = []
    page_sizes: list[int] = []
    url: str | None = f"{base}/Patient?family={family}&_count=2"
    for _ in range(10):  # bounded: 3 pages expected
        if url is None:
            break
        bundle = fhir.get(url).json()
        assert bundle["total"] == 5
        page_sizes.append(len(bundle.get("entry", [])))
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        url = links.get("next")
        if url is not None:
            assert url.startswith(f"{base}/Patient?")
    assert url is None
    assert page_sizes == [2, 2, 1]
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == ids


def test_post_search_pages_with_get_links(fhir: httpx.Client) -> None:
    base = _base(fhir)
    family = _family()
    ids = {_create(fhir, _patient(family)).json()["id"] for _ in range(3)}

    first = fhir.post("Patient/_search", content=f"family={family}&_count=2",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert first.status_code == 200, first.text
    links = {link["relation"]: link["url"] for link in first.json()["link"]}
    # The next page is a plain GET that keeps every parameter the client sent.
    assert links["next"] == f"{base}/Patient?family={family}&_count=2&_offset=2"
    second = fhir.get(links["next"]).json()
    assert "next" not in {link["relation"] for link in second["link"]}
    got = [e["resource"]["id"] for e in first.json()["entry"] + second["entry"]]
    assert sorted(got) == sorted(ids)


def test_unknown_id_is_404_operation_outcome(fhir: httpx.Client) -> None:
    resp = fhir.get(f"Patient/{uuid.uuid4()}")
    assert resp.status_code == 404
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-found"


def test_conditional_create_with_if_none_exist(fhir: httpx.Client) -> None:
    system, value = "urn:example:mrn", uuid.uuid4().hex
    patient = _patient(_family(), identifier=[{"system": system, "value": value}])
    condition = {"If-None-Exist": f"identifier={system}|{value}"}

    first = _create(fhir, patient, headers=condition)
    assert first.status_code == 201, first.text
    second = _create(fhir, patient, headers=condition)
    # Supported: the second answers 200 with the existing resource and creates nothing.
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"]
    found = fhir.get("Patient", params={"identifier": f"{system}|{value}"}).json()
    assert found["total"] == 1

    # Two matches: 412, as the spec asks.
    _create(fhir, patient)
    ambiguous = _create(fhir, patient, headers=condition)
    assert ambiguous.status_code == 412


def test_transaction_of_two_creates(fhir: httpx.Client) -> None:
    family = _family()
    patient_ref = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": patient_ref, "resource": _patient(family),
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final",
                          "code": {"text": "weight"}, "subject": {"reference": patient_ref}},
             "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    resp = fhir.post("", json=bundle)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["201", "201"]
    pid = answer["entry"][0]["resource"]["id"]
    oid = answer["entry"][1]["resource"]["id"]
    assert answer["entry"][0]["response"]["location"] == f"Patient/{pid}"

    obs = fhir.get(f"Observation/{oid}").json()
    assert obs["subject"]["reference"] == f"Patient/{pid}"  # urn:uuid resolved
    assert fhir.get("Patient", params={"family": family}).json()["total"] == 1


def test_known_gaps_of_the_memory_router(fhir: httpx.Client) -> None:
    """What Medplum's router + MemoryRepository (4.5.2) do NOT do, so no suite relies on it."""
    # /metadata: no CapabilityStatement; it is routed as a search on a type named "metadata".
    meta = fhir.get("metadata")
    assert meta.status_code == 200
    assert meta.json()["resourceType"] == "Bundle" and meta.json()["total"] == 0

    # _include is ignored by the in-memory search.
    org = _create(fhir, {"resourceType": "Organization", "name": "Gap Org"}).json()
    family = _family()
    _create(fhir, _patient(family, managingOrganization={"reference": f"Organization/{org['id']}"}))
    included = fhir.get("Patient", params={"family": family,
                                            "_include": "Patient:organization"}).json()
    assert [e["resource"]["resourceType"] for e in included["entry"]] == ["Patient"]

    # Update-as-create (PUT to a new id) works but answers 200, not 201.
    new_id = uuid.uuid4().hex
    put = fhir.put(f"Patient/{new_id}", json={"resourceType": "Patient", "id": new_id})
    assert put.status_code == 200
    assert fhir.get(f"Patient/{new_id}").status_code == 200

    # No validation: an invalid code is stored as sent.
    bad = _create(fhir, {"resourceType": "Patient", "gender": "xyz"})
    assert bad.status_code == 201
