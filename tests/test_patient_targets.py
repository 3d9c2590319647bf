"""`patient_targets` scans compact JSON for `reference` members; it must find exactly what a
plain walk over the dicts finds, for any tree, any spelling and any escaping."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mappings.references import patient_targets, reference_target


def walked(node: object) -> frozenset[str]:
    """The oracle: every string `reference` anywhere (also inside a non-string one)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                target = reference_target(value)
                if target is not None and target[0] == "Patient":
                    found.add(target[1])
            else:
                found |= walked(value)
    elif isinstance(node, list):
        for item in node:
            found |= walked(item)
    return frozenset(found)


REFERENCES = st.one_of(
    st.builds(lambda p, i: f"{p}Patient/{i}", st.sampled_from(
        ["", "http://ehr.test/fhir/", "https://x/fhir/Patient/1/../", "#", "urn:uuid:"]),
        st.from_regex(r"[A-Za-z0-9.\-]{1,6}", fullmatch=True)),
    st.builds(lambda i, v: f"Patient/{i}/_history/{v}", st.integers(1, 99), st.integers(1, 9)),
    st.sampled_from(["Patient/1", "Patient/1/", "Patient/1?x=2", 'Patient/"1', "Patient/1\\",
                     "Patient/\u00e91", "Patient/1\n", 'x","reference":"Patient/7',
                     "Practitioner/1", "Patient", "Patient/", "Group/1"]),
    st.text(max_size=12),
)
KEYS = st.sampled_from(["reference", "subject", "patient", "entry", "resource", "text",
                        "Reference", 'reference"', '"reference', 'x\\"reference',
                        "ref\\erence", "display"])
LEAVES = st.one_of(REFERENCES, st.integers(-2**70, 2**70), st.booleans(), st.none(),
                   st.floats(allow_nan=False))
TREES = st.recursive(LEAVES, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(KEYS, kids, max_size=4)), max_leaves=25)


@settings(max_examples=600, deadline=None)
@given(TREES)
def test_scan_finds_what_a_walk_finds(tree):
    assert patient_targets(tree) == walked(tree)


def test_spellings_and_decoys():
    resource = {
        "resourceType": "Observation",
        "subject": {"reference": "Patient/a"},
        "performer": [{"reference": "http://ehr.test/fhir/Patient/b/_history/2"}],
        "note": [{"text": '"reference":"Patient/decoy-in-text"'}],
        "focus": [{"reference": {"reference": "Patient/c"}}],  # not a string: looked into
        "basedOn": [{"reference": "#contained"}, {"reference": "urn:uuid:Patient/d"}],
        "valueInteger": 10**30,  # beyond orjson: the json fallback writes the same shape
    }
    assert patient_targets(resource) == {"a", "b", "c"}
    assert patient_targets([resource, {"reference": "Patient/e"}]) == {"a", "b", "c", "e"}
    assert patient_targets({"reference": 'Patient/\\"x'}) == frozenset()  # not a valid id
    assert patient_targets({}) == frozenset()
