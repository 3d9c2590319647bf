"""Walk and rewrite the references inside FHIR JSON (pure functions)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from functools import lru_cache

import orjson

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


def reference_target(ref: str) -> tuple[str, str] | None:
    """(type, id) a literal reference points at, however it is spelled: `Type/id`,
    `Type/id/_history/v`, an absolute URL ending in either, a trailing slash. None for
    contained (`#x`), `urn:` and other references that name no `Type/id`.

    The store's index and the access checks both read references through this one function,
    so a spelling one of them understands can never slip past the other.
    """
    if not isinstance(ref, str) or ref.startswith(("#", "urn:")):
        return None
    path = ref.split("?", 1)[0].rstrip("/")
    if "/_history/" in path:
        path = path.split("/_history/", 1)[0]
    parts = path.split("/")
    if len(parts) < 2:
        return None
    rtype, rid = parts[-2], parts[-1]
    if not _TYPE.match(rtype) or not _ID.match(rid):
        return None
    return rtype, rid


def iter_references(node: object, path: str = "") -> Iterator[tuple[str, str]]:
    """Yield (element path, reference string) for every `reference` in a resource."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield path, ref
        for key, value in node.items():
            if key != "reference":
                yield from iter_references(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from iter_references(item, f"{path}[{i}]")


# A `reference` member in compact JSON (orjson's output, or json.dumps with these separators),
# with its string value (escapes included). Inside a string every `"` is escaped, so a match
# right after `{` or `,` is a real key; others are text inside some other key or value. (The
# pattern starts with a literal, which `re` looks for as fast as `bytes.find`.)
_REFERENCE = re.compile(rb'"reference":"([^"\\]*(?:\\.[^"\\]*)*)"')


def _compact_json(node: object) -> bytes:
    try:
        return orjson.dumps(node)
    except TypeError:  # beyond orjson (an int over 64 bits, built in Python): the same bytes
        return json.dumps(node, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def patient_targets(node: object) -> frozenset[str]:
    """Ids of every Patient that a `reference` anywhere in `node` points at, in any spelling.

    The access checks and the store's compartment index both read a resource's patients here.
    It runs on every resource a patient's app is shown, so instead of walking the dicts in
    Python it scans the resource's compact JSON (orjson, in C) for `reference` members and
    parses only values that can name a Patient. A `reference` that is not a string is looked
    into too (its nested members match): stricter than skipping it, it can only add patients.
    """
    return patient_targets_in_json(_compact_json(node))


def patient_targets_in_json(data: bytes) -> frozenset[str]:
    """`patient_targets` of a value given as its compact JSON (see `_compact_json`)."""
    found = set()
    for match in _REFERENCE.finditer(data):
        at = match.start()
        raw = match.group(1)
        if at and data[at - 1] in b"{," and b"Patient/" in raw:
            found.add((_known_patient_in if len(raw) <= _REMEMBERED else _patient_in)(raw))
    found.discard(None)
    return frozenset(found)


_REMEMBERED = 200  # bytes: longer reference values are parsed each time, never kept


def _patient_in(raw: bytes) -> str | None:
    """The Patient id a reference's JSON string body names, or None."""
    # JSON (as written by orjson or json.dumps here) escapes only quotes, backslashes and
    # control characters, so `Patient/` in a value is never spelled another way.
    value = orjson.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
    target = reference_target(value)
    return target[1] if target is not None and target[0] == "Patient" else None


# The same few values (a patient's own reference) come back on every resource: remembered.
_known_patient_in = lru_cache(maxsize=4096)(_patient_in)


def rewrite_references(node: object, change: Callable[[str], str | None]) -> object:
    """A copy of `node` where each `reference` for which `change` returns a string is replaced."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                new = change(value)
                out[key] = value if new is None else new
            else:
                out[key] = rewrite_references(value, change)
        return out
    if isinstance(node, list):
        return [rewrite_references(item, change) for item in node]
    return node
