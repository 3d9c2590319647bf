"""Read-only JSON values shared between requests: read like plain ones, refuse any change."""

from __future__ import annotations

import copy

import orjson
import pytest

from mappings.frozen import FrozenDict, FrozenList, freeze

VALUE = {"resourceType": "Observation", "code": {"coding": [{"code": "8867-4"}]},
         "component": [{"valueQuantity": {"value": 1.5}}, None, True, "x"]}


def test_a_frozen_value_reads_as_the_original():
    frozen = freeze(VALUE)
    assert frozen == VALUE and orjson.dumps(frozen) == orjson.dumps(VALUE)
    assert isinstance(frozen, dict) and isinstance(frozen["component"], list)
    assert type(dict(frozen)) is dict and dict(frozen) == VALUE  # a copy is a plain dict
    assert copy.deepcopy(VALUE) == frozen


@pytest.mark.parametrize("change", [
    lambda v: v.__setitem__("x", 1), lambda v: v.__delitem__("code"), lambda v: v.clear(),
    lambda v: v.pop("code"), lambda v: v.popitem(), lambda v: v.setdefault("x", 1),
    lambda v: v.update(x=1), lambda v: v.__ior__({"x": 1}),
    lambda v: v["code"]["coding"].append({}), lambda v: v["component"].extend([1]),
    lambda v: v["component"].insert(0, 1), lambda v: v["component"].remove(None),
    lambda v: v["component"].pop(), lambda v: v["component"].clear(),
    lambda v: v["component"].sort(key=str), lambda v: v["component"].reverse(),
    lambda v: v["component"].__setitem__(0, 1), lambda v: v["component"].__delitem__(0),
    lambda v: v["component"].__iadd__([1]), lambda v: v["component"].__imul__(2),
    lambda v: v["code"]["coding"][0].__setitem__("code", "x"),
])
def test_every_change_is_refused(change):
    frozen = freeze(VALUE)
    with pytest.raises(TypeError):
        change(frozen)
    assert frozen == VALUE
    assert isinstance(frozen["component"], FrozenList) and isinstance(frozen, FrozenDict)


def test_a_bundle_of_shared_resources_is_written_as_orjson_writes_it():
    """`dumps` puts each shared resource's kept JSON into the entries: the very bytes of
    `orjson.dumps`, compact or indented, with plain entries and non-entry members as they are."""
    from mappings.frozen import dumps

    other = {"resourceType": "Patient", "id": "p1", "name": [{"text": "Zoë \"Q\" \\ ü"}]}
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": 3,
              "link": [{"relation": "self", "url": "http://x/fhir/Observation?a=b"}],
              "entry": [{"fullUrl": "http://x/fhir/Observation/1", "resource": freeze(VALUE),
                         "search": {"mode": "match"}},
                        {"fullUrl": "http://x/fhir/Patient/p1", "resource": other,
                         "search": {"mode": "include"}},
                        {"fullUrl": "http://x/fhir/Patient/p1", "resource": freeze(other)}]}
    plain = orjson.loads(orjson.dumps(bundle))
    assert dumps(bundle) == orjson.dumps(plain)
    assert dumps(bundle, pretty=True) == orjson.dumps(plain, option=orjson.OPT_INDENT_2)
    assert dumps(bundle) == dumps(bundle)  # the kept JSON, again
    assert bundle["entry"][0]["resource"].compact() == orjson.dumps(VALUE)
    for value in (VALUE, freeze(VALUE), {"entry": "not a list"}, {"entry": [1, None]}, [1]):
        assert dumps(value) == orjson.dumps(value)
