"""Inbound resources checked as FHIR R4 before anything is stored.

JSON is parsed with orjson and its nesting depth bounded; the structure is checked with the
`fhir.resources` R4B models (the nearest to R4 it ships; the few R4 types R4B dropped are checked
with `fhirclient.models`, generated from FHIR 4.0.1); the coded values that drive behaviour are
checked against their required R4 value sets (`mappings.valuesets`), which neither library does.
Each problem becomes one OperationOutcome issue whose `expression` names the element.
"""

from __future__ import annotations

import functools

import orjson

from adapters.errors import Invalid
from adapters.search import has_control_chars, valid_id
from fhir_gateway.errors import issue
from mappings.r4 import RESOURCE_TYPES
from mappings.valuesets import binding_errors

MAX_ISSUES = 20


def parse_json(body: bytes, max_depth: int) -> object:
    """Parse a request body; Invalid for malformed JSON or nesting deeper than `max_depth`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"The body is not valid JSON: {exc}") from None
    depth = _depth(data)
    if depth > max_depth:
        raise Invalid(f"The JSON nests {depth} levels deep; the limit is {max_depth}",
                      code="too-costly")
    return data


def _depth(data: object) -> int:
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, level = stack.pop()
        if level > deepest:
            deepest = level
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node if isinstance(v, dict | list))
    return deepest


@functools.cache
def _r4b_model(resource_type: str):
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (ValueError, KeyError, ImportError):
        return None


def _expression(rtype: str, loc: tuple) -> str:
    out = rtype
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("resource_type",):
            out += f".{part}"
    return out


def _structure_issues(resource: dict) -> list[dict]:
    rtype = resource["resourceType"]
    model = _r4b_model(rtype)
    if model is not None:
        from pydantic import ValidationError

        try:
            model.model_validate(resource)
        except ValidationError as exc:
            return [issue("error", "structure" if e["type"] != "missing" else "required",
                          e["msg"].replace("\n", " "), [_expression(rtype, e["loc"])])
                    for e in exc.errors()[:MAX_ISSUES]]
        return []
    import fhirclient.models.fhirelementfactory as factory
    from fhirclient.models.fhirabstractbase import FHIRValidationError

    try:
        factory.FHIRElementFactory.instantiate(rtype, resource)
    except FHIRValidationError as exc:
        return [issue("error", "structure", str(exc).replace("\n", " ")[:500], [rtype])]
    return []


def _control_char_issues(node: object, path: str) -> list[dict]:
    """FHIR strings may not contain control characters (below U+0020 but tab, CR, LF)."""
    found: list[dict] = []
    stack = [(node, path)]
    while stack and len(found) < MAX_ISSUES:
        item, where = stack.pop()
        if isinstance(item, str):
            if has_control_chars(item):
                found.append(issue("error", "invalid",
                                   "Strings may not contain control characters", [where]))
        elif isinstance(item, dict):
            stack.extend((v, f"{where}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return found


def validate_resource(resource: object, expected_type: str | None = None,
                      where: str = "") -> dict:
    """Check one resource; return it, or raise Invalid listing every problem found."""
    prefix = f"{where}: " if where else ""
    if not isinstance(resource, dict):
        raise Invalid(f"{prefix}A resource must be a JSON object")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise Invalid(f"{prefix}The resource has no resourceType", expression="resourceType")
    if rtype not in RESOURCE_TYPES:
        raise Invalid(f"{prefix}{rtype!r} is not a FHIR R4 resource type",
                      expression="resourceType")
    if expected_type and rtype != expected_type:
        raise Invalid(f"{prefix}The body is a {rtype} but the URL is for {expected_type}",
                      expression="resourceType")
    if "id" in resource and not (isinstance(resource["id"], str) and valid_id(resource["id"])):
        raise Invalid(f"{prefix}{resource['id']!r} is not a valid resource id",
                      expression=f"{rtype}.id")
    issues = _control_char_issues(resource, rtype)
    issues += _structure_issues(resource)
    issues += [issue("error", "code-invalid", msg, [expr])
               for expr, msg in binding_errors(resource)]
    if issues and where:  # name the element inside the Bundle entry
        for item in issues:
            item["expression"] = [where + e[len(rtype):] if e.startswith(rtype) else e
                                  for e in item.get("expression", [])]
    if issues:
        first = issues[0]
        raise Invalid(prefix + first["diagnostics"], expression=first.get("expression"),
                      code=first["code"], issues=issues[1:MAX_ISSUES])
    return resource
