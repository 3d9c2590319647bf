"""`system/` grants are for backend services: a token that carries a patient or a user (one
refreshed from a grant made before authorize refused `system/` scopes) never uses them."""

from __future__ import annotations

import pytest

from adapters.errors import Forbidden
from fhir_gateway.access import AccessPolicy, Principal
from smart_launch.scopes import parse_scopes


def _policy() -> AccessPolicy:
    return AccessPolicy(lambda rtype: {"patient": "reference", "_id": "token"})


@pytest.mark.parametrize("who", [{"patient": "pat-0001"}, {"fhir_user": "Patient/pat-0001"},
                                 {"fhir_user": "Practitioner/prac-01"}],
                         ids=["patient-context", "patient-user", "practitioner-user"])
def test_a_persons_token_never_uses_system_grants(who):
    principal = Principal(client_id="app", scopes=parse_scopes("system/*.rs"), **who)
    with pytest.raises(Forbidden):
        _policy().decide(principal, "search-type", "Patient")


def test_a_backend_services_token_uses_them():
    principal = Principal(client_id="backend", scopes=parse_scopes("system/*.rs"))
    decision = _policy().decide(principal, "search-type", "Patient")
    assert decision.patient is None and decision.narrowing == []


def test_a_patient_token_with_system_and_patient_grants_stays_confined():
    principal = Principal(client_id="app", scopes=parse_scopes("system/*.rs patient/*.rs"),
                          patient="pat-0001")
    decision = _policy().decide(principal, "search-type", "Patient")
    assert decision.patient == "pat-0001"
