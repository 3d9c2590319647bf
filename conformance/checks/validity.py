"""validity: every resource the server returned during the run validates as R4."""

from __future__ import annotations

import hashlib
import json

from conformance.context import RunContext
from conformance.model import SPEC, Fail, Skip, check
from conformance.validation import validate


@check("validity.r4", "validity", f"{SPEC}/validation.html")
def resources_valid(ctx: RunContext) -> str | None:
    """Every resource returned during the run is valid R4 (fhir.resources R4B models)"""
    done: set[bytes] = set()
    bad = []
    for res, ex in ctx.seen:
        key = hashlib.sha256(json.dumps(res, sort_keys=True).encode()).digest()
        if key in done:
            continue
        done.add(key)
        problem = validate(res)
        if problem:
            bad.append((res, ex, problem))
    if not done:
        raise Skip("the run saw no resources")
    if bad:
        ctx.http.sink.extend(ex for _, ex, _ in bad[:5])
        first = bad[0]
        raise Fail(f"{len(bad)} of {len(done)} resources are not valid R4; first: "
                   f"{first[0].get('resourceType')}/{first[0].get('id')}: {first[2]}")
    return f"{len(done)} resources valid"


@check("validity.errors-have-outcome", "validity", f"{SPEC}/http.html#Status-Codes")
def errors_have_outcome(ctx: RunContext) -> str | None:
    """Every error the FHIR API answered during the run carried an OperationOutcome"""
    if not ctx.errors:
        raise Skip("the run met no error answers from the FHIR API")
    bare = [(status, ex) for status, ok, ex in ctx.errors if not ok]
    if bare:
        ctx.http.sink.extend(ex for _, ex in bare[:5])
        statuses = sorted({status for status, _ in bare})
        raise Fail(f"{len(bare)} of {len(ctx.errors)} error answers ({statuses}) had no "
                   f"OperationOutcome; first: {bare[0][1].method} {bare[0][1].url}")
    return f"{len(ctx.errors)} error answers, each with an OperationOutcome"
