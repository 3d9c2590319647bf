"""Turn a search's parameters into a checked `SearchQuery` for the adapter.

Unknown parameters are dropped with a warning (FHIR's lenient default) unless the client sent
`Prefer: handling=strict`, which makes them a 400. Values are checked for their parameter type
here, before any adapter runs, so a bad date or reference is always a clear 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.base import Capabilities, TypeCapability
from adapters.errors import Invalid
from adapters.search import (
    MODIFIERS,
    IncludeSpec,
    ParamClause,
    SearchQuery,
    has_control_chars,
    is_number,
    parse_date_param,
    parse_reference,
    valid_type_name,
)
from fhir_gateway.config import LimitsConfig

# Parameters that shape the result rather than select resources.
RESULT_PARAMS = frozenset({
    "_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total",
    "_format", "_pretty", "_cursor",
})
SUMMARY_VALUES = ("true", "false", "text", "data", "count")
MAX_VALUE_LEN = 1024


@dataclass
class ParsedSearch:
    query: SearchQuery
    warnings: list[str] = field(default_factory=list)
    used: list[tuple[str, str]] = field(default_factory=list)  # params kept, for self links


def parse_count(value: str | None, limits: LimitsConfig) -> int:
    if value is None:
        return limits.default_count
    if not is_number(value):
        raise Invalid(f"_count must be a whole number from 0 to {limits.max_count}, "
                      f"not {value!r}", expression="_count")
    count = int(value)
    if count > limits.max_count:
        raise Invalid(f"_count {count} is more than this server's limit of {limits.max_count}",
                      expression="_count")
    return count


def _include(value: str, name: str, caps: Capabilities) -> IncludeSpec:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not valid_type_name(parts[0]):
        raise Invalid(f"{name} must look like Type:parameter[:TargetType], not {value!r}",
                      expression=name)
    source = caps.for_type(parts[0])
    param = source.search_params.get(parts[1]) if source else None
    if param is None or param.type != "reference":
        raise Invalid(f"{name}={value}: {parts[0]} has no reference parameter {parts[1]!r}",
                      expression=name)
    target = parts[2] if len(parts) == 3 else None
    if target is not None and not valid_type_name(target):
        raise Invalid(f"{name}={value}: {target!r} is not a resource type", expression=name)
    return IncludeSpec(parts[0], parts[1], target)


def parse_search(rtype: str, params: list[tuple[str, str]], caps: Capabilities,
                 limits: LimitsConfig, strict: bool) -> ParsedSearch:
    """Check every parameter of a search on `rtype`; raise Invalid on the first bad one."""
    type_cap: TypeCapability | None = caps.for_type(rtype)
    assert type_cap is not None
    out = ParsedSearch(SearchQuery(count=limits.default_count))
    q = out.query
    for raw_name, value in params:
        if len(value) > MAX_VALUE_LEN:
            raise Invalid(f"The value of {raw_name!r} is longer than {MAX_VALUE_LEN} characters",
                          expression=raw_name)
        if has_control_chars(value) or has_control_chars(raw_name):
            raise Invalid(f"The parameter {raw_name!r} contains control characters",
                          expression=raw_name)
        name, _, modifier = raw_name.partition(":")
        if name in RESULT_PARAMS:
            _result_param(name, value, q, caps, limits)
            if name not in ("_cursor", "_format"):
                out.used.append((raw_name, value))
            continue
        definition = type_cap.search_params.get(name)
        if definition is None:
            msg = f"Unknown search parameter {name!r} for {rtype}; it was ignored"
            if strict:
                raise Invalid(msg.replace("; it was ignored", ""), expression=name,
                              code="not-supported")
            out.warnings.append(msg)
            continue
        if modifier and modifier not in MODIFIERS.get(definition.type, ()):
            raise Invalid(f"Modifier :{modifier} is not supported on {name} "
                          f"({definition.type})", expression=raw_name)
        values = value.split(",") if modifier != "missing" else [value]
        for item in values:
            if modifier == "missing":
                if item not in ("true", "false"):
                    raise Invalid(f"{raw_name} takes true or false", expression=raw_name)
            elif item == "":
                raise Invalid(f"Parameter {name!r} has an empty value", expression=name)
            elif definition.type == "date":
                parse_date_param(name, item)
            elif definition.type == "reference":
                parse_reference(name, item, definition.targets)
        q.clauses.append(ParamClause(name, definition.type, values, modifier or None))
        out.used.append((raw_name, value))
    return out


def _result_param(name: str, value: str, q: SearchQuery, caps: Capabilities,
                  limits: LimitsConfig) -> None:
    if name == "_count":
        q.count = parse_count(value, limits)
        if q.count == 0:
            q.summary_count = True
    elif name == "_sort":
        for key in value.split(","):
            desc = key.startswith("-")
            key = key.lstrip("-")
            if not key:
                raise Invalid("_sort has an empty key", expression="_sort")
            q.sort.append((key, desc))
        if len(q.sort) > 1:
            raise Invalid("Only one _sort key is supported", expression="_sort")
    elif name == "_include":
        q.include.append(_include(value, name, caps))
    elif name == "_revinclude":
        q.revinclude.append(_include(value, name, caps))
    elif name == "_summary":
        if value not in SUMMARY_VALUES:
            raise Invalid(f"_summary must be one of {', '.join(SUMMARY_VALUES)}",
                          expression="_summary")
        q.summary_count = value == "count"
    elif name == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise Invalid("_total must be none, estimate or accurate", expression="_total")
        q.with_total = value != "none"
    elif name == "_pretty" and value not in ("true", "false"):
        raise Invalid("_pretty must be true or false", expression="_pretty")
