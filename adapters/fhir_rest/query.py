"""A checked `SearchQuery` back into FHIR search parameters for the EHR."""

from __future__ import annotations

from urllib.parse import urlencode

from adapters.embedded.params import SORT_DATE
from adapters.search import SearchQuery


def query_params(rtype: str, query: SearchQuery, type_params: dict) -> list[tuple[str, str]]:
    """The EHR-side parameters, in a stable order (they are part of cache keys)."""
    out: list[tuple[str, str]] = []
    for clause in query.clauses:
        name = f"{clause.name}:{clause.modifier}" if clause.modifier else clause.name
        values = clause.values
        definition = type_params.get(clause.name)
        if clause.type == "reference" and clause.modifier is None and definition is not None \
                and len(definition.targets) == 1:
            # `patient=123` and `patient=Patient/123` mean the same in FHIR; some servers
            # (Medplum) only match the typed form, so send that.
            values = [v if "/" in v else f"{definition.targets[0]}/{v}" for v in values]
        out.append((name, ",".join(values)))
    if query.summary_count:
        out.append(("_summary", "count"))
    else:
        out.append(("_count", str(query.count)))
    if query.sort:
        key, desc = query.sort[0]
        if key == "date" and "date" not in type_params:
            key = SORT_DATE.get(rtype, key)
        out.append(("_sort", ("-" if desc else "") + key))
    out.extend(("_include", str(spec)) for spec in query.include)
    out.extend(("_revinclude", str(spec)) for spec in query.revinclude)
    return out


def query_string(rtype: str, query: SearchQuery, type_params: dict) -> str:
    """For `If-None-Exist`: the selecting parameters only."""
    return urlencode([(k, v) for k, v in query_params(rtype, query, type_params)
                      if not k.startswith("_") or k == "_id"])
