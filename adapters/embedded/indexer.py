"""Turn a resource into index rows for its search parameters (no I/O).

Rows: token (system, code), string (normalized value), date (low, high stamps) and reference
(target type, target id). Values that cannot be indexed (a contained `#ref`, a malformed date
that validation let through) are skipped rather than failing a write.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from adapters.embedded.params import SORT_DATE, IndexedParam, params_for
from adapters.search import HIGHEST, LOWEST, date_range, normalize_string
from mappings.references import patient_targets, reference_target

MAX_LEN = 250
PATIENT_REF = "_patient-ref"  # internal index key: every reference to a Patient


@dataclass
class IndexRows:
    tokens: list[tuple[str, str | None, str]] = field(default_factory=list)
    strings: list[tuple[str, str, str]] = field(default_factory=list)  # param, norm, raw
    dates: list[tuple[str, str, str]] = field(default_factory=list)
    refs: list[tuple[str, str, str]] = field(default_factory=list)
    sort_date: str = ""


def values_at(node: object, path: str) -> Iterator[object]:
    """Every value at a dotted path, walking lists and `[x]` choice elements."""
    parts = path.split(".")
    yield from _walk(node, parts)


def _walk(node: object, parts: list[str]) -> Iterator[object]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, parts)
        return
    if not parts:
        if node is not None:
            yield node
        return
    if not isinstance(node, dict):
        return
    head, rest = parts[0], parts[1:]
    if head.endswith("[x]"):
        prefix = head[:-3]
        for key, value in node.items():
            if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)].isupper():
                yield from _walk(value, rest)
    elif head in node:
        yield from _walk(node[head], rest)


def _tokens(value: object) -> Iterator[tuple[str | None, str]]:
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, str):
        yield None, value
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value.get("coding") or []:
                if isinstance(coding, dict) and coding.get("code"):
                    yield coding.get("system"), str(coding["code"])
        elif "code" in value:  # Coding
            yield value.get("system"), str(value["code"])
        elif "value" in value:  # Identifier, ContactPoint
            yield value.get("system"), str(value["value"])


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):  # HumanName, Address
        for key in ("text", "family", "given", "prefix", "suffix", "line", "city",
                    "district", "state", "postalCode", "country"):
            item = value.get(key)
            if isinstance(item, str):
                yield item
            elif isinstance(item, list):
                yield from (v for v in item if isinstance(v, str))


def _dates(value: object) -> Iterator[tuple[str, str]]:
    try:
        if isinstance(value, str):
            yield date_range(value)
        elif isinstance(value, dict):  # Period
            start, end = value.get("start"), value.get("end")
            if start or end:
                low = date_range(start)[0] if start else LOWEST
                high = date_range(end)[1] if end else HIGHEST
                yield low, high
    except (ValueError, OverflowError):
        return


def _refs(value: object, param: IndexedParam) -> Iterator[tuple[str, str]]:
    if not isinstance(value, dict):
        return
    target = reference_target(value.get("reference"))
    if target is None or (param.targets and target[0] not in param.targets):
        return
    yield target


def index(resource: dict) -> IndexRows:
    """The index rows of one resource."""
    rtype = resource["resourceType"]
    rows = IndexRows()
    sort_param = SORT_DATE.get(rtype)
    for param in params_for(rtype).values():
        for path in param.paths:
            for value in values_at(resource, path):
                if param.type == "token":
                    for system, code in _tokens(value):
                        rows.tokens.append((param.name, (system or None) and system[:MAX_LEN],
                                            code[:MAX_LEN]))
                elif param.type == "string":
                    for text in _strings(value):
                        rows.strings.append((param.name, normalize_string(text)[:MAX_LEN],
                                             text[:MAX_LEN]))
                elif param.type == "date":
                    for low, high in _dates(value):
                        rows.dates.append((param.name, low, high))
                        if param.name == sort_param and (not rows.sort_date
                                                         or low < rows.sort_date):
                            rows.sort_date = low
                elif param.type == "reference":
                    for target_type, target_id in _refs(value, param):
                        rows.refs.append((param.name, target_type, target_id))
    # Every Patient the resource names, at any path: the compartment narrowing reads these.
    for patient in patient_targets(resource):
        rows.refs.append((PATIENT_REF, "Patient", patient))
    # The same value reached twice (e.g. name and name.family) is one row.
    rows.tokens = sorted(set(rows.tokens), key=str)
    rows.strings = sorted(set(rows.strings))
    rows.dates = sorted(set(rows.dates))
    rows.refs = sorted(set(rows.refs))
    return rows
