"""Read-only FHIR JSON: dicts and lists that refuse changes, for values shared between requests.

They are `dict` and `list` subclasses, so everything that reads JSON (orjson included) reads
them as it reads the plain ones; any attempt to change one raises TypeError instead of changing
what other requests see.
"""

from __future__ import annotations


def _refuse(self, *args, **kwargs):
    raise TypeError(f"{type(self).__name__} is shared between requests: copy it to change it")


class FrozenDict(dict):
    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse


class FrozenList(list):
    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = remove = pop = clear = sort = reverse = _refuse


def freeze(value: object) -> object:
    """A read-only deep copy of a JSON value (dicts and lists frozen; strings, numbers, booleans
    and None are immutable already)."""
    if isinstance(value, dict):
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return FrozenList([freeze(item) for item in value])
    return value
