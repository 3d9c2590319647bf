"""Read-only FHIR JSON: dicts and lists that refuse changes, for values shared between requests.

They are `dict` and `list` subclasses, so everything that reads JSON (orjson included) reads
them as it reads the plain ones; any attempt to change one raises TypeError instead of changing
what other requests see. A shared dict is also written as JSON only once: `dumps` puts the
compact JSON it keeps into a Bundle's entries as it is (`orjson.Fragment`), so serving a cached
page copies 20 buffers instead of walking thousands of objects again.
"""

from __future__ import annotations

import orjson


def _refuse(self, *args, **kwargs):
    raise TypeError(f"{type(self).__name__} is shared between requests: copy it to change it")


class FrozenDict(dict):
    __slots__ = ("_compact",)
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def compact(self) -> bytes:
        """Its compact JSON, written on first use and kept (it cannot change)."""
        try:
            return self._compact
        except AttributeError:
            self._compact = orjson.dumps(self)
            return self._compact


class FrozenList(list):
    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = remove = pop = clear = sort = reverse = _refuse


def freeze(value: object) -> object:
    """A read-only deep copy of a JSON value (dicts and lists frozen; strings, numbers, booleans
    and None are immutable already). Frozen values are kept as they are: only `freeze` makes
    them, so they are read-only all the way down."""
    if type(value) is FrozenDict or type(value) is FrozenList:
        return value
    if isinstance(value, dict):
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return FrozenList([freeze(item) for item in value])
    return value


def _shared(entry: object) -> bool:
    return type(entry) is dict and type(entry.get("resource")) is FrozenDict


def dumps(value: object, pretty: bool = False) -> bytes:
    """`orjson.dumps`, with a shared (frozen) resource, and those of a Bundle's entries,
    written from the JSON they keep instead of again. Indented output writes everything."""
    if pretty:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2)
    if type(value) is FrozenDict:  # a shared resource: its JSON as it keeps it
        return value.compact()
    entries = value.get("entry") if type(value) is dict else None
    if type(entries) is list and any(_shared(e) for e in entries):
        value = dict(value, entry=[
            dict(e, resource=orjson.Fragment(e["resource"].compact())) if _shared(e) else e
            for e in entries])
    return orjson.dumps(value)
