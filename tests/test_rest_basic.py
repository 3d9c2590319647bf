"""Every FHIR interaction over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

PATIENT = {"resourceType": "Patient", "name": [{"family": "Rivera", "given": ["Ana"]}],
           "gender": "female", "birthDate": "1961-04-02"}


def test_create_read_roundtrip(gateway):
    created = gateway.post("Patient", PATIENT)
    assert created.status_code == 201
    body = created.json()
    assert body["meta"]["versionId"] == "1"
    assert created.headers["ETag"] == 'W/"1"'
    assert created.headers["Location"] == f"{gateway.base}/Patient/{body['id']}/_history/1"
    read = gateway.get(f"Patient/{body['id']}")
    assert read.status_code == 200
    assert read.headers["Content-Type"].startswith("application/fhir+json")
    assert read.json()["name"] == PATIENT["name"]
    assert read.headers["Last-Modified"].endswith("GMT")
