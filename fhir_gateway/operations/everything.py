"""`Patient/{id}/$everything`: the patient's record, confined to their compartment, paged.

Walks every resource type of the R4 Patient compartment (or `_type`), each with the store's
`_compartment` narrowing, so the pages hold exactly the resources that belong to the patient
and name no other patient. A caller sees only the types its token may search. The `next` link
carries a signed cursor: (type position, that type's own cursor).
"""

from __future__ import annotations

import orjson

from adapters.base import SearchPage
from adapters.errors import Forbidden, Invalid
from fhir_gateway import bundles
from fhir_gateway.operations.registry import OperationContext, OperationSpec, ParamSpec
from fhir_gateway.paging import search_digest
from fhir_gateway.request import FhirRequest, FhirResponse
from fhir_gateway.search_request import parse_count
from mappings.compartment import requires_membership
from mappings.r4 import PATIENT_COMPARTMENT


def _types(ctx: OperationContext) -> list[str]:
    service = ctx.service
    wanted = ctx.one("_type")
    # Types whose resources always belong to a patient (not Schedule: that is clinic data)
    names = sorted(t for t in PATIENT_COMPARTMENT - {"Patient"} if requires_membership(t))
    if wanted:
        names = [t.strip() for t in str(wanted).split(",") if t.strip()]
        unknown = [t for t in names if not requires_membership(t)]
        if unknown:
            raise Invalid(f"_type {', '.join(unknown)} is not in the Patient compartment",
                          expression="_type")
    names = ["Patient", *[t for t in names if t != "Patient"]]
    return [t for t in names if _selector(service, t, "x") is not None]


def _selector(service, rtype: str, pid: str) -> list[tuple[str, str]] | None:
    """How to find the patient's resources of a type: `_compartment` where the EHR has it
    (exact), else `patient` (or `_id` for the Patient), with the access post-check making it
    exact; None when the type cannot be searched by patient at all."""
    tc = service.caps.for_type(rtype)
    params = tc.search_params if tc is not None and tc.allows("search-type") else {}
    if "_compartment" in params:
        return [("_compartment", pid)]
    if rtype == "Patient" and "_id" in params:
        return [("_id", pid)]
    if "patient" in params:
        return [("patient", f"Patient/{pid}")]
    return None


def everything(ctx: OperationContext) -> FhirResponse:
    service = ctx.service
    req = ctx.request
    pid = service.check_id(req.id)
    read = FhirRequest("read", "Patient", pid, principal=req.principal)
    service._visible(service.decide(read), "Patient", pid)  # 404 unless the caller may see it
    count = max(parse_count(_str(ctx.one("_count")), service.limits), 1)
    types = _types(ctx)
    kept = [(k, _str(v[0])) for k, v in sorted(ctx.params.items())
            if k in ("_count", "_type") and v]
    path = f"Patient/{pid}/$everything"
    digest = search_digest(path, kept)
    start, inner = 0, None
    token = _str(ctx.one("_cursor"))
    if token:
        position = orjson.loads(service.signer.verify(token, digest))
        start, inner = int(position["t"]), position.get("c")
    found: list[dict] = []
    next_position = None
    for index in range(start, len(types)):
        rtype = types[index]
        search = FhirRequest("search-type", rtype, principal=req.principal)
        try:
            decision = service.decide(search)
        except Forbidden:
            continue  # the token may not see this type at all
        query = service.search_query(rtype, _selector(service, rtype, pid) or [],
                                     strict=True).query
        query.count = count - len(found)
        query.cursor = inner if index == start else None
        query.with_total = False
        page: SearchPage = service.adapter.search(rtype, query)
        found += [r for r in page.resources if decision is None or decision.permits(r)]
        if page.next_cursor:
            next_position = {"t": index, "c": page.next_cursor}
            break
        if len(found) >= count:
            if index + 1 < len(types):
                next_position = {"t": index + 1, "c": None}
            break
    nxt = None
    if next_position is not None:
        signed = service.signer.sign(orjson.dumps(next_position).decode(), digest)
        nxt = bundles.page_url(ctx.base, path, kept, signed)
    bundle = bundles.searchset(ctx.base, SearchPage(resources=found),
                               bundles.page_url(ctx.base, path, kept), nxt, None, [])
    return FhirResponse(200, bundle)


def _str(value: object) -> str | None:
    return None if value is None else str(value)


SPEC = OperationSpec(
    name="everything", resource_type="Patient", handler=everything, instance=True,
    title="Fetch the patient's whole record",
    description="All resources in the patient's compartment that the token may see, paged "
                "(the R4 Patient $everything, without referenced non-compartment resources).",
    needs=(("Patient", "r"),),
    parameters=(
        ParamSpec("_count", "integer", documentation="Resources per page"),
        ParamSpec("_type", "string", documentation="Comma-separated types to include"),
        ParamSpec("return", "Bundle", min=1, use="out"),
    ),
)
SPECS = [SPEC]
