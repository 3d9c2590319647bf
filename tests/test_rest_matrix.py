"""The capability matrix of the REST adapter: the EHR's CapabilityStatement, the vendor profile,
the registration's granted scopes and the clinic's overrides, merged (adapters.fhir_rest.matrix);
and an EHR that declares another FHIR version is refused."""

from __future__ import annotations

import httpx
import orjson
import pytest
import respx

from adapters.errors import UpstreamError
from adapters.fhir_rest import FhirRestAdapter, RestSettings
from adapters.fhir_rest.matrix import STANDARD, build_matrix
from adapters.fhir_rest.vendors import PROFILES, profile

BASE = "http://ehr.test/fhir"
FJ = "application/fhir+json"


def interactions(*codes: str) -> list[dict]:
    return [{"code": c} for c in codes]


def statement(*resources: dict, system: tuple[str, ...] = (), version: str = "4.0.1",
              software: str = "Test EHR") -> dict:
    return {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
            "fhirVersion": version, "format": ["json"], "software": {"name": software},
            "rest": [{"mode": "server", "interaction": interactions(*system),
                      "resource": list(resources)}]}


def resource(rtype: str, *codes: str, params: list[dict] | None = None, **extra) -> dict:
    return {"type": rtype, "interaction": interactions(*codes), "searchParam": params or [],
            **extra}


SMALL = statement(
    resource("Patient", "read", "search-type", "create",
             params=[{"name": "family", "type": "string"},
                     {"name": "x-clinic-mrn", "type": "token", "documentation": "Clinic MRN"},
                     {"name": "_id", "type": "token"},
                     {"name": "weird", "type": "special"},
                     {"name": "bogus", "type": "nonsense"}],
             conditionalCreate=True),
    resource("Observation", "read", "search-type", "create", "update", "delete"),
    resource("ActorDefinition", "read"),  # R5 only: ignored
    resource("Bundle", "read", "create"),  # never served as a type
    system=("transaction", "history-system"),
)


def allowed(matrix, rtype: str) -> set[str]:
    tc = matrix.capabilities().for_type(rtype)
    return set(tc.interactions) if tc else set()


def row(matrix, rtype: str) -> dict[str, str]:
    return dict(matrix.rows())[rtype]


# -- the statement alone ----------------------------------------------------------------------

def test_statement_only():
    m = build_matrix("clinic", profile("generic"), SMALL)
    assert m.statement_found
    caps = m.capabilities()
    assert set(caps.types) == {"Patient", "Observation"}
    assert allowed(m, "Patient") == {"read", "search-type", "create"}
    assert allowed(m, "Observation") == {"read", "search-type", "create", "update", "delete"}
    params = caps.for_type("Patient").search_params
    assert set(params) == {"family", "x-clinic-mrn", "_id"}
    assert params["family"].type == "string"
    assert params["x-clinic-mrn"].type == "token"
    assert params["x-clinic-mrn"].documentation == "Clinic MRN"
    assert caps.for_type("Patient").conditional_create is True
    assert caps.for_type("Observation").conditional_create is False
    assert caps.system_interactions == frozenset({"transaction"})
    assert caps.software == "Test EHR at clinic (via FHIR REST)"
    assert row(m, "Patient") == {
        "read": "yes", "vread": "-", "update": "-", "patch": "-", "delete": "-",
        "history-instance": "-", "history-type": "-", "create": "yes", "search-type": "yes"}


def test_statement_without_a_server_rest_falls_back_to_the_profile():
    client_only = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1",
                   "rest": [{"mode": "client", "resource": [resource("Patient", "read")]}]}
    assert build_matrix("x", profile("epic"), client_only).capabilities().types == {}
    m = build_matrix("x", profile("hapi"), client_only)
    assert not m.statement_found
    assert allowed(m, "Patient") == set(STANDARD)


# -- vendor profiles ---------------------------------------------------------------------------

EPICISH = statement(
    resource("Appointment", "read", "search-type", "create", "update"),
    resource("Invoice", "read", "search-type"),
    resource("Task", "read", "search-type", "create", "update", "delete"),
    resource("MedicationRequest", "read", "search-type", "create"),
    resource("Patient", "read", "search-type"),
    software="Epic")


def test_epic_denies_appointment_writes_and_invoice_even_if_the_statement_lists_them():
    m = build_matrix("epic-prod", profile("epic"), EPICISH)
    assert allowed(m, "Appointment") == {"read", "search-type"}
    assert m.capabilities().for_type("Invoice") is None
    assert allowed(m, "Task") == {"read", "search-type", "update"}  # Task update stays
    assert allowed(m, "MedicationRequest") == {"read", "search-type"}
    assert allowed(m, "Patient") == {"read", "search-type"}
    assert row(m, "Appointment")["create"] == "no (profile epic)"
    assert row(m, "Appointment")["update"] == "no (profile epic)"
    assert row(m, "Appointment")["read"] == "yes"
    assert row(m, "Invoice")["read"] == "no (profile epic)"
    assert row(m, "Invoice")["search-type"] == "no (profile epic)"
    assert row(m, "Task")["update"] == "yes"
    assert row(m, "Task")["create"] == "no (profile epic)"
    assert row(m, "Task")["delete"] == "no (profile epic)"


def test_oracle_allows_appointment_create_and_denies_task():
    m = build_matrix("cerner", profile("oracle"), EPICISH)
    assert allowed(m, "Appointment") == {"read", "search-type", "create", "update"}
    assert allowed(m, "MedicationRequest") == {"read", "search-type", "create"}
    assert m.capabilities().for_type("Task") is None
    assert m.capabilities().for_type("Invoice") is None
    assert {v for v in row(m, "Task").values() if v != "-"} == {"no (profile oracle)"}


def test_every_vendor_profile_names_real_types_and_interactions():
    for vendor in PROFILES.values():
        build_matrix("x", vendor, SMALL)  # _target raises ValueError on a bad entry
    with pytest.raises(ValueError, match="unknown vendor profile"):
        profile("allscripts")


def test_no_statement_with_medplum_assumes_standard_r4():
    m = build_matrix("medplum", profile("medplum"), None)
    assert not m.statement_found
    caps = m.capabilities()
    assert allowed(m, "Patient") == set(STANDARD)
    assert allowed(m, "Observation") == set(STANDARD)
    assert "ActorDefinition" not in caps.types and "Bundle" not in caps.types
    assert caps.system_interactions == frozenset({"transaction", "batch"})
    assert "identifier" in caps.for_type("Observation").search_params
    assert "_lastUpdated" in caps.for_type("Observation").search_params
    assert caps.for_type("Patient").conditional_create is True
    assert caps.software == "Medplum at medplum (via FHIR REST)"
    assert row(m, "Patient")["read"] == "yes"  # assumed is shown plainly, like the statement
    assert row(m, "Patient")["patch"] == "-"


def test_no_statement_with_epic_assumes_nothing():
    m = build_matrix("epic", profile("epic"), None)
    assert m.capabilities().types == {}
    assert m.capabilities().system_interactions == frozenset()


# -- granted scopes ----------------------------------------------------------------------------

def test_granted_scopes_remove_what_the_registration_may_not_do():
    m = build_matrix("clinic", profile("generic"), SMALL,
                     granted_scopes="system/Patient.rs system/Observation.cruds")
    assert allowed(m, "Patient") == {"read", "search-type"}
    assert row(m, "Patient")["create"] == "no (scope)"
    assert allowed(m, "Observation") == {"read", "search-type", "create", "update", "delete"}


def test_granted_scopes_v1_wildcards_and_unlisted_types():
    m = build_matrix("clinic", profile("generic"), SMALL,
                     granted_scopes="system/*.read patient/Observation.write launch openid")
    assert allowed(m, "Patient") == {"read", "search-type"}
    assert allowed(m, "Observation") == {"read", "search-type", "create", "update", "delete"}
    m = build_matrix("clinic", profile("generic"), SMALL,
                     granted_scopes="system/Observation.rs?category=vital-signs")
    assert m.capabilities().for_type("Patient") is None  # no scope for it at all
    assert {v for v in row(m, "Patient").values() if v != "-"} == {"no (scope)"}
    assert allowed(m, "Observation") == {"read", "search-type"}


def test_empty_granted_scopes_means_no_limit():
    m = build_matrix("clinic", profile("generic"), SMALL, granted_scopes="  ")
    assert allowed(m, "Patient") == {"read", "search-type", "create"}


# -- overrides -------------------------------------------------------------------------------

def test_overrides_decide_last_and_say_so():
    m = build_matrix("epic-prod", profile("epic"), EPICISH,
                     granted_scopes="system/*.cruds",
                     allow=("Appointment.create", "Patient.update", "Encounter.read"),
                     deny=("Task.update", "Patient.search-type"))
    assert "create" in allowed(m, "Appointment")
    assert row(m, "Appointment")["create"] == "yes (override)"
    assert row(m, "Appointment")["update"] == "no (profile epic)"
    assert allowed(m, "Patient") == {"read", "update"}
    assert row(m, "Patient")["update"] == "yes (override)"
    assert row(m, "Patient")["search-type"] == "no (override)"
    assert "update" not in allowed(m, "Task")
    assert row(m, "Task")["update"] == "no (override)"
    assert allowed(m, "Encounter") == {"read"}  # not in the statement: the override adds it
    assert "identifier" in m.capabilities().for_type("Encounter").search_params


def test_override_allow_beats_a_scope_and_deny_beats_allow():
    m = build_matrix("clinic", profile("generic"), SMALL, granted_scopes="system/Patient.rs",
                     allow=("Patient.create", "Observation.*"), deny=("Observation.delete",))
    assert row(m, "Patient")["create"] == "yes (override)"
    assert row(m, "Observation")["read"] == "yes (override)"
    assert row(m, "Observation")["delete"] == "no (override)"
    assert "delete" not in allowed(m, "Observation")


def test_override_deny_of_a_whole_type():
    m = build_matrix("clinic", profile("generic"), SMALL, deny=("Observation.*",))
    assert m.capabilities().for_type("Observation") is None


@pytest.mark.parametrize("bad", ["Patient", "Patient.", ".read", "Patient.fly",
                                 "Patient.transaction", "Foo.read", "ActorDefinition.read",
                                 "patient.read"])
def test_bad_override_strings_raise(bad):
    with pytest.raises(ValueError):
        build_matrix("clinic", profile("generic"), SMALL, allow=(bad,))
    with pytest.raises(ValueError):
        build_matrix("clinic", profile("generic"), SMALL, deny=(bad,))


# -- the adapter asks the EHR -------------------------------------------------------------------

@pytest.fixture
def ehr():
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def _adapter(**kw) -> FhirRestAdapter:
    # respx patches httpcore: the adapter uses httpx's transport here.
    return FhirRestAdapter(RestSettings(base_url=BASE, vendor=kw.pop("vendor", "hapi"),
                                        transport="httpx",
                                        retries=0, backoff=0.0, **kw), sleep=lambda s: None)


def test_statement_is_read_from_metadata_and_builds_the_matrix(ehr):
    route = ehr.get("/metadata").respond(200, content=orjson.dumps(EPICISH),
                                         headers={"Content-Type": FJ})
    a = _adapter(vendor="epic", deny=("Patient.search-type",))
    caps = a.capabilities()
    assert set(caps.for_type("Appointment").interactions) == {"read", "search-type"}
    assert set(caps.for_type("Patient").interactions) == {"read"}
    a.capabilities()
    assert route.call_count == 1  # cached for capability_ttl
    a.close()


@pytest.mark.parametrize("version", ["5.0.0", "4.3.0", "3.0.2"])
def test_statement_of_another_fhir_version_is_an_upstream_error(ehr, version):
    ehr.get("/metadata").respond(200, content=orjson.dumps(statement(
        resource("Patient", "read"), version=version)), headers={"Content-Type": FJ})
    a = _adapter()
    with pytest.raises(UpstreamError) as info:
        a.statement()
    assert version in info.value.diagnostics and "R4" in info.value.diagnostics
    assert "ehr.test" not in info.value.diagnostics
    a.close()


def test_statement_served_as_r5_mime_type_is_an_upstream_error(ehr):
    ehr.get("/metadata").respond(200, content=orjson.dumps(SMALL),
                                 headers={"Content-Type": f"{FJ}; fhirVersion=5.0"})
    a = _adapter()
    with pytest.raises(UpstreamError, match="R4"):
        a.statement()
    a.close()


def test_no_statement_is_none(ehr):
    ehr.get("/metadata").respond(404, json={"resourceType": "OperationOutcome", "issue": []})
    a = _adapter(vendor="medplum")
    assert a.statement() is None
    assert set(a.capabilities().for_type("Patient").interactions) == set(STANDARD)
    a.close()


def test_an_ehr_of_another_version_is_offered_nothing(ehr):
    """An R5 server is not guessed at: no type is served, so no request reaches it."""
    ehr.get("/metadata").respond(200, content=orjson.dumps(statement(
        resource("Patient", "read"), version="5.0.0")), headers={"Content-Type": FJ})
    a = _adapter(vendor="hapi")
    assert a.capabilities().types == {}
    a.close()


def test_an_unreachable_ehr_is_not_asked_on_every_call(ehr):
    """While the EHR cannot be asked, the assumed matrix stands for a few seconds instead of
    a new attempt at every capabilities() call (several per request)."""
    route = ehr.get("/metadata").mock(side_effect=httpx.ConnectError("down"))
    a = _adapter(vendor="hapi")
    for _ in range(5):
        assert a.capabilities().for_type("Patient") is not None  # hapi: standard assumed
    assert route.call_count == 1
    a.close()
