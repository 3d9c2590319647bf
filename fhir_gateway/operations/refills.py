"""Prescription refills: `MedicationRequest/{id}/$refill-request` and `$medication-history`.

A refill request is the core R4 "Refill Request" Task (code `fulfill`, focus the
MedicationRequest), built and checked by `mappings.portal.refills`. The create is conditional
on no open refill Task for the order, so a repeated (or concurrent) request returns the open
Task (200) instead of making a second one. A request the EHR cannot take now is kept in the
gateway's outbox (202 and its status URL; its replay is the same conditional create), unless a
change to the order, its medicine or its refill Tasks still waits there (503). Access follows
the patient compartment: another patient's order looks missing (404).
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from adapters.base import SearchPage
from adapters.errors import Gone, Invalid, NotFound, PreconditionFailed, Unprocessable
from fhir_gateway import bundles
from fhir_gateway.operations.common import patient_and_decision, search_all
from fhir_gateway.operations.registry import (
    Fallback,
    OperationContext,
    OperationSpec,
    ParamSpec,
)
from fhir_gateway.request import FhirRequest, FhirResponse
from fhir_gateway.service import version_headers
from fhir_gateway.validation import validate_resource
from mappings.portal import refills as rules
from mappings.references import reference_target
from mappings.terminology import TASK_FULFILL

_FULFILL = f"{TASK_FULFILL.system}|{TASK_FULFILL.code}"


def _refill_tasks(ctx: OperationContext, request_ids: list[str], decision=None) -> list[dict]:
    if not request_ids:
        return []
    focus = ",".join(f"MedicationRequest/{i}" for i in request_ids)
    return search_all(ctx, "Task", [("focus", focus), ("code", _FULFILL)], decision)


def _medication(ctx: OperationContext, request: dict) -> dict | None:
    target = reference_target((request.get("medicationReference") or {}).get("reference", ""))
    if not target or target[0] != "Medication":
        return None
    try:
        return ctx.service.adapter.read("Medication", target[1])
    except (NotFound, Gone):
        return None


def _relied_on(request: dict, medication: dict | None, tasks: list[dict]) -> set:
    """What a refill's checks read (the order, its medicine, its refill Tasks): a change to
    one of them still waiting in the outbox holds the request back instead of queueing it."""
    return {(r["resourceType"], r["id"]) for r in (request, medication, *tasks) if r}


def _refill_message(ctx: OperationContext, request: dict, medication: dict | None,
                    note: str | None) -> FhirResponse:
    """The fallback where the EHR takes no Tasks from apps: a message to the prescriber."""
    service, req = ctx.service, ctx.request
    message = validate_resource(rules.build_refill_message(
        request, datetime.now(UTC), note, medication), "Communication")
    creating = FhirRequest("create", "Communication", principal=req.principal)
    create = service.decide(creating)
    service.check_write(create, message)
    result = service.create_checked(creating, ctx.base, create, message,
                                    relied_on=_relied_on(request, medication, []))
    if isinstance(result, FhirResponse):
        return result  # kept in the outbox (202)
    return service.write_response(result, req, ctx.base, 201)


def refill_request(ctx: OperationContext) -> FhirResponse:
    service, req = ctx.service, ctx.request
    rid = service.check_id(req.id)
    try:
        note = rules.clean_note(ctx.one("note"))
    except rules.RefillInputError as exc:
        raise Invalid(exc.message, expression=exc.expression) from None
    read = FhirRequest("read", "MedicationRequest", rid, principal=req.principal)
    request = service._visible(service.decide(read), "MedicationRequest", rid)
    medication = _medication(ctx, request)
    direct = REFILL.path(service.caps)[0] == "direct"
    tasks = _refill_tasks(ctx, [rid]) if direct else []
    try:
        rules.check_refillable(request, medication, tasks,
                               rules.code_list(service.config.portal.no_online_refill))
    except rules.RefillRefused as exc:
        raise Unprocessable(exc.message, expression=exc.expression) from None
    if not direct:
        return _refill_message(ctx, request, medication, note)
    open_ones = urlencode([("focus", f"MedicationRequest/{rid}"), ("code", _FULFILL),
                           ("status", ",".join(sorted(rules.OPEN_STATUSES)))])
    creating = FhirRequest("create", "Task", principal=req.principal, if_none_exist=open_ones)
    create = service.decide(creating)
    waiting = rules.open_refill(rid, tasks)
    if waiting is not None:
        return _existing(service, create, waiting)
    task = validate_resource(rules.build_refill_task(request, datetime.now(UTC), note,
                                                     medication), "Task")
    service.check_write(create, task)
    try:  # conditional on no open refill Task; kept in the outbox (202) when the EHR cannot
        result = service.create_checked(creating, ctx.base, create, task,
                                        relied_on=_relied_on(request, medication, tasks))
    except PreconditionFailed:  # several open already (made elsewhere): show the newest
        waiting = rules.open_refill(rid, _refill_tasks(ctx, [rid]))
        if waiting is None:
            raise
        return _existing(service, create, waiting)
    if isinstance(result, FhirResponse):
        return result
    if not result.created:
        return _existing(service, create, result.resource)
    return service.write_response(result, req, ctx.base, 201)


def _existing(service, decision, task: dict) -> FhirResponse:
    if decision is not None and not decision.permits(task):
        raise Unprocessable("A refill request for this prescription is already being handled",
                            expression="MedicationRequest")
    return FhirResponse(200, task, version_headers(task))


def medication_history(ctx: OperationContext) -> FhirResponse:
    service, req = ctx.service, ctx.request
    pid, decision = patient_and_decision(ctx, "MedicationRequest")
    requests = search_all(ctx, "MedicationRequest", [("patient", f"Patient/{pid}")], decision)
    task_decision = service.decide(FhirRequest("search-type", "Task", principal=req.principal))
    tasks = _refill_tasks(ctx, [r["id"] for r in requests], task_decision)
    grouped = rules.group_by_request(requests, tasks)
    page = SearchPage(resources=[r for r, _ in grouped],
                      included=[t for _, ts in grouped for t in ts], total=len(grouped))
    path = "MedicationRequest/$medication-history"
    bundle = bundles.searchset(ctx.base, page,
                               bundles.page_url(ctx.base, path, [("patient", pid)]), None, None,
                               [])
    return FhirResponse(200, bundle)


REFILL = OperationSpec(
    name="refill-request", resource_type="MedicationRequest", handler=refill_request,
    instance=True, type_level=False, affects_state=True,
    title="Ask for a prescription refill",
    description="Creates a refill request Task (code fulfill, focus the MedicationRequest, "
                "owner the prescriber) for an active order with refills left; controlled "
                "substances cannot be refilled online. While a request is open, asking again "
                "returns it (200) instead of creating another. When the EHR cannot take it "
                "now, the gateway keeps it: 202 with an OperationOutcome, and the status URL "
                "in Content-Location.",
    needs=(("MedicationRequest", "r"), ("Task", "c")),
    fallback=Fallback(
        needs=(("MedicationRequest", "r"), ("Communication", "c")),
        description="a Communication to the prescriber (about the MedicationRequest) instead "
                    "of a Task, where the EHR takes no Tasks from apps; no open-request check"),
    parameters=(
        ParamSpec("note", "string", documentation="A note for the prescriber"),
        ParamSpec("return", "Task", min=1, use="out",
                  documentation="Or a Communication where the EHR takes no Tasks"),
    ),
)
HISTORY = OperationSpec(
    name="medication-history", resource_type="MedicationRequest", handler=medication_history,
    instance=False, type_level=True,
    title="The patient's prescriptions with their refill requests",
    description="A searchset Bundle of the patient's MedicationRequests (match), each followed "
                "by its refill Tasks (include), so an app can show each request's status.",
    needs=(("MedicationRequest", "s"), ("Task", "s")),
    parameters=(
        ParamSpec("patient", "string", documentation="The patient (implied by a patient token)"),
        ParamSpec("return", "Bundle", min=1, use="out"),
    ),
)
SPECS = [REFILL, HISTORY]
