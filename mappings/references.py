"""Walk and rewrite the references inside FHIR JSON (pure functions)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

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


# A `reference` member in compact JSON (orjson's output, or json.dumps with these separators):
# a key's opening quote follows `{` or `,`, and inside a string every `"` is escaped, so this
# preceded by one of those can only be a real key.
_REFERENCE_KEY = b'"reference":"'


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
    found: set[str] = set()
    find, key, size = data.find, _REFERENCE_KEY, len(_REFERENCE_KEY)
    at = find(key)
    while at != -1:
        start = at + size
        end = find(b'"', start)
        while end != -1 and _escaped(data, end):
            end = find(b'"', end + 1)
        if end == -1:
            break  # not JSON: nothing more to read
        if at == 0 or data[at - 1] not in b"{,":
            at = find(key, at + 1)  # inside a key's text: look again just after it
            continue
        raw = data[start:end]
        if b"Patient/" in raw:  # JSON escapes only quotes, backslashes and control chars
            value = orjson.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
            target = reference_target(value)
            if target is not None and target[0] == "Patient":
                found.add(target[1])
        at = find(key, end + 1)
    return frozenset(found)


def _escaped(data: bytes, quote: int) -> bool:
    """Is the `"` at `quote` escaped (an odd run of backslashes before it)?"""
    run = 0
    while data[quote - 1 - run] == 0x5C:  # backslash
        run += 1
    return run % 2 == 1


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
