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
