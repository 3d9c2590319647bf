"""Helpers every portal operation uses: whose record, confined searches, integer parameters."""

from __future__ import annotations

from adapters.base import SearchPage
from adapters.errors import Gone, Invalid, NotFound
from adapters.search import valid_id
from fhir_gateway.operations.registry import OperationContext
from fhir_gateway.request import FhirRequest
from mappings.references import reference_target

MAX_SCAN = 1000
MAX_PAGES = 50


def patient_for(ctx: OperationContext, name: str = "patient") -> str:
    """The patient the operation is for: the token's own, or the one named (and visible)."""
    req = ctx.request
    given = ctx.one(name)
    pid = None
    if given is not None:
        target = reference_target(str(given)) if "/" in str(given) else ("Patient", str(given))
        if target is None or target[0] != "Patient":
            raise Invalid(f"{name} must be a Patient id or reference", expression=name)
        pid = target[1]
    principal = req.principal
    pid = pid or (principal.patient if principal is not None else None)
    if pid is None:
        raise Invalid(f"Parameter {name!r} is required", expression=name)
    service = ctx.service
    read = FhirRequest("read", "Patient", pid, principal=principal)
    service._visible(service.decide(read), "Patient", service.check_id(pid))
    return pid


def confined_search(ctx: OperationContext, rtype: str, params: list[tuple[str, str]]) -> list[dict]:
    """A confined search (the caller's narrowing applied), up to MAX_SCAN resources."""
    service = ctx.service
    req = FhirRequest("search-type", rtype, principal=ctx.request.principal)
    decision = service.decide(req)
    query = service.search_query(rtype, params + (decision.narrowing if decision else []),
                                 strict=True).query
    query.count, query.with_total = MAX_SCAN, False
    page: SearchPage = service.adapter.search(rtype, query)
    return [r for r in page.resources if decision is None or decision.permits(r)]


def int_param(ctx: OperationContext, name: str, default: int, low: int, high: int) -> int:
    raw = ctx.one(name)
    if raw is None:
        return default
    text = str(raw)
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise Invalid(f"{name} must be a whole number from {low} to {high}", expression=name)
    return int(text)


def search_all(ctx: OperationContext, rtype: str, params: list[tuple[str, str]],
         decision=None) -> list[dict]:
    """Every match of a search the gateway runs on the caller's behalf (all pages)."""
    service = ctx.service
    query = service.search_query(rtype, params, strict=True).query
    query.count, query.with_total = service.limits.max_count, False
    found: list[dict] = []
    for _ in range(MAX_PAGES):
        page = service.adapter.search(rtype, query)
        found += [r for r in page.resources if decision is None or decision.permits(r)]
        if not page.next_cursor:
            break
        query.cursor = page.next_cursor
    return found


def _patient_id(given: object) -> str | None:
    if given is None:
        return None
    text = given.get("reference") if isinstance(given, dict) else given
    if isinstance(text, str) and "/" in text:
        target = reference_target(text)
        text = target[1] if target and target[0] == "Patient" else None
    if not isinstance(text, str) or not valid_id(text):
        raise Invalid("patient must be a Patient id or a Patient reference",
                      expression="patient")
    return text


def patient_and_decision(ctx: OperationContext, rtype: str) -> tuple[str, object]:
    """The patient a type-level read is about, and the search decision: a patient token's own
    patient (another one looks missing), else the required `patient` parameter."""
    service, req = ctx.service, ctx.request
    decision = service.decide(FhirRequest("search-type", rtype, principal=req.principal))
    pid = _patient_id(ctx.one("patient"))
    own = decision.patient if decision is not None else None
    if own is not None:
        if pid is not None and pid != own:
            raise NotFound(f"Patient/{pid} is not known", expression="patient")
        pid = own
    if pid is None:
        raise Invalid("Parameter 'patient' is required", expression="patient")
    try:
        service.adapter.read("Patient", pid)
    except (NotFound, Gone):
        raise NotFound(f"Patient/{pid} is not known", expression="patient") from None
    return pid, decision
