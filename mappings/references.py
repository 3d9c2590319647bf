"""Walk and rewrite the references inside FHIR JSON (pure functions)."""

from __future__ import annotations

from collections.abc import Callable, Iterator


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
