"""SMART App Launch 2.2 scope grammar (smart_launch.scopes): parsing, coverage, narrowing, words."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from smart_launch.scopes import Grant, ScopeError, ScopeSet, describe, parse_scopes

VITALS_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
VITALS_FULL = f"patient/Observation.rs?category={VITALS_SYSTEM}|vital-signs"


def only(text: str) -> Grant:
    scopes = parse_scopes(text)
    assert len(scopes.grants) == 1
    return scopes.grants[0]


def sub(a: str, b: str) -> bool:
    return parse_scopes(a).subset_of(parse_scopes(b))


# -- parsing resource scopes --------------------------------------------------------------------

@pytest.mark.parametrize(("scope", "letters"), [
    ("patient/Observation.read", "rs"),
    ("patient/Observation.write", "cud"),
    ("patient/Observation.*", "cruds"),
    ("patient/Observation.rs", "rs"),
    ("patient/Observation.cud", "cud"),
    ("patient/Observation.s", "s"),
    ("patient/Observation.c", "c"),
    ("patient/Observation.cruds", "cruds"),
    ("patient/Observation.crs", "crs"),
    ("patient/Observation.ud", "ud"),
])
def test_permissions_v1_and_v2(scope: str, letters: str) -> None:
    grant = only(scope)
    assert grant.permissions == frozenset(letters)
    assert grant.permission_letters == letters
    assert grant.context == "patient"
    assert grant.resource_type == "Observation"
    assert grant.query == ()
    assert grant.scope == scope


@pytest.mark.parametrize("context", ["patient", "user", "system"])
def test_contexts(context: str) -> None:
    grant = only(f"{context}/Condition.rs")
    assert grant.context == context
    assert grant.resource_type == "Condition"


def test_wildcard_type() -> None:
    grant = only("patient/*.rs")
    assert grant.resource_type == "*"
    assert grant.permissions == {"r", "s"}
    assert grant.allows("Observation", "r")
    assert grant.allows("Patient", "s")
    assert not grant.allows("Observation", "c")


def test_v1_wildcard_everything() -> None:
    grant = only("user/*.*")
    assert grant.resource_type == "*"
    assert grant.permissions == set("cruds")


def test_query_constrained_code_only() -> None:
    grant = only("patient/Observation.rs?category=vital-signs")
    assert grant.query == (("category", "vital-signs"),)
    assert grant.permissions == {"r", "s"}


def test_query_constrained_system_and_code() -> None:
    grant = only(VITALS_FULL)
    assert grant.query == (("category", f"{VITALS_SYSTEM}|vital-signs"),)
    assert grant.scope == VITALS_FULL


def test_query_several_params_and_url_decoding() -> None:
    grant = only("patient/Observation.rs?category=laboratory&code=http%3A%2F%2Floinc.org%7C2345-7"
                 "&note=a%26b%3Dc%20d")
    assert grant.query == (("category", "laboratory"), ("code", "http://loinc.org|2345-7"),
                           ("note", "a&b=c d"))


def test_query_keeps_plus_literal() -> None:
    assert only("patient/Observation.rs?code=a+b").query == (("code", "a+b"),)


def test_v1_spelling_with_query_is_accepted() -> None:
    # The consent page appends ?category= to whatever the app asked for, v1 spellings included.
    grant = only("patient/Observation.read?category=laboratory")
    assert grant.permissions == {"r", "s"}
    assert grant.query == (("category", "laboratory"),)


@pytest.mark.parametrize("scope", [
    "patient/Observation.sr",  # out of order
    "patient/Observation.rr",  # repeated
    "patient/Observation.dc",
    "patient/Observation.crudss",
    "patient/Observation.",  # empty permissions
    "patient/Observation",  # no permissions at all
    "patient/Observation.rw",
    "patient/Observation.Read",
    "patient/Observation.READ",
    "patient/Observation.x",
    "patient/Observation.rs.x",
    "patient/observation.rs",  # type must start upper-case
    "patient/O.rs",  # at least two letters
    "patient/Observation2.rs",
    "patient/Obs-ervation.rs",
    "patient/.rs",
    "patient/**.rs",
    "patient/",
    "user/Observation.rs?",  # empty query
    "user/Observation.rs?category",  # no '='
    "user/Observation.rs?=vital-signs",  # no name
    "user/Observation.rs?category=",  # no value
    "user/Observation.rs?category=a,,b",  # empty alternative
    "user/Observation.rs?category=a&",  # trailing '&'
    "user/Observation.rs?1abc=x",  # bad parameter name
    "Patient/Observation.read",  # unknown context
    "practitioner/Observation.rs",
    "PATIENT/*.rs",
    "clinic/*.*",
])
def test_malformed_resource_scopes(scope: str) -> None:
    with pytest.raises(ScopeError):
        parse_scopes(f"openid {scope} launch")


def test_scope_error_is_value_error_and_names_the_scope() -> None:
    with pytest.raises(ValueError, match=r"patient/Observation\.sr"):
        parse_scopes("patient/Observation.sr")
    with pytest.raises(ScopeError, match="unknown context 'practitioner'"):
        parse_scopes("practitioner/Observation.rs")
    with pytest.raises(ScopeError, match="invalid resource type 'observation'"):
        parse_scopes("patient/observation.rs")


# -- parsing non-resource scopes ----------------------------------------------------------------

def test_flags() -> None:
    s = parse_scopes("openid fhirUser profile launch launch/patient launch/encounter "
                     "offline_access online_access")
    assert (s.openid, s.fhir_user, s.profile, s.launch, s.launch_patient, s.launch_encounter,
            s.offline_access, s.online_access) == (True,) * 8
    assert s.grants == ()
    assert s.other == ()


def test_flags_default_false() -> None:
    s = parse_scopes("patient/*.rs")
    assert not any((s.openid, s.fhir_user, s.profile, s.launch, s.launch_patient,
                    s.launch_encounter, s.offline_access, s.online_access))


def test_other_scopes_are_kept() -> None:
    s = parse_scopes("openid launch/location https://example.org/scope.read api/v1.0 patient "
                     "smart/orchestrate_launch FhirUser")
    assert s.other == ("launch/location", "https://example.org/scope.read", "api/v1.0",
                       "patient", "smart/orchestrate_launch", "FhirUser")
    assert s.openid and not s.fhir_user


def test_empty_and_whitespace() -> None:
    assert parse_scopes("") == ScopeSet()
    assert parse_scopes("   \t\n ") == ScopeSet()
    assert parse_scopes("").text() == ""


# -- text() -------------------------------------------------------------------------------------

def test_text_normalizes_whitespace_and_duplicates_only() -> None:
    s = parse_scopes("  patient/Observation.read\tpatient/Observation.rs  openid\n"
                     "patient/Observation.read   foo foo ")
    assert s.text() == "openid patient/Observation.read patient/Observation.rs foo"
    assert len(s.grants) == 2  # both spellings kept


def test_text_keeps_spelling_and_encoding() -> None:
    raw = "patient/Observation.rs?code=http%3A%2F%2Floinc.org%7C2345-7"
    assert parse_scopes(raw).text() == raw
    assert parse_scopes("user/*.*").text() == "user/*.*"
    assert parse_scopes("patient/Observation.write").text() == "patient/Observation.write"


def test_text_of_grant_built_in_code() -> None:
    g = Grant("patient", "Observation", frozenset("sr"), (("code", "a&b"),))
    assert g.text() == "patient/Observation.rs?code=a%26b"
    s = ScopeSet(grants=(g,), openid=True)
    assert s.text() == "openid patient/Observation.rs?code=a%26b"
    assert parse_scopes(s.text()).grants[0].query == g.query


def test_grant_validation() -> None:
    with pytest.raises(ScopeError):
        Grant("practitioner", "Observation", frozenset("r"))
    with pytest.raises(ScopeError):
        Grant("patient", "observation", frozenset("r"))
    with pytest.raises(ScopeError):
        Grant("patient", "Observation", frozenset())
    with pytest.raises(ScopeError):
        Grant("patient", "Observation", frozenset("rx"))
    assert Grant("patient", "Observation", "rs").permissions == frozenset("rs")  # type: ignore


# -- allows / grants_for ------------------------------------------------------------------------

def test_allows() -> None:
    g = only("patient/Observation.rs?category=vital-signs")
    assert g.allows("Observation", "r")
    assert g.allows("Observation", "s")
    assert not g.allows("Observation", "c")
    assert not g.allows("Condition", "r")
    assert not only("patient/Observation.rs").allows("*", "r")
    assert only("patient/*.rs").allows("*", "r")


@pytest.mark.parametrize("bad", ["", "rs", "read", "x", "R"])
def test_allows_rejects_unknown_permission(bad: str) -> None:
    with pytest.raises(ValueError):
        only("patient/*.cruds").allows("Observation", bad)


def test_grants_for() -> None:
    s = parse_scopes("patient/Observation.rs?category=vital-signs patient/*.read "
                     "user/Observation.cruds patient/Condition.c")
    by_scope = [g.scope for g in s.grants_for("patient", "Observation", "r")]
    assert by_scope == ["patient/Observation.rs?category=vital-signs", "patient/*.read"]
    assert [g.scope for g in s.grants_for("user", "Observation", "d")] == [
        "user/Observation.cruds"]
    assert [g.scope for g in s.grants_for("patient", "Condition", "c")] == [
        "patient/Condition.c"]
    assert s.grants_for("patient", "Observation", "c") == []
    assert s.grants_for("system", "Observation", "r") == []


# -- subset_of ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("a", "b"), [
    ("patient/Observation.rs?category=vital-signs", "patient/Observation.rs"),
    ("patient/Observation.r", "patient/*.read"),
    ("patient/Observation.read", "patient/Observation.rs"),
    ("patient/Observation.rs", "patient/Observation.read"),
    ("patient/Observation.cud", "patient/Observation.write"),
    ("patient/*.cruds", "patient/*.*"),
    ("patient/Observation.rs", "patient/Observation.r patient/Observation.s"),
    ("patient/Observation.cruds", "patient/*.c patient/Observation.rs patient/*.ud"),
    (VITALS_FULL, "patient/Observation.rs?category=vital-signs"),
    ("patient/Observation.rs?category=|vital-signs", "patient/Observation.rs?category=vital-signs"),
    (VITALS_FULL, f"patient/Observation.rs?category={VITALS_SYSTEM}|"),
    ("patient/Observation.rs?category=vital-signs",
     "patient/Observation.rs?category=vital-signs,laboratory"),
    ("patient/Observation.rs?category=vital-signs&code=1234-5",
     "patient/Observation.rs?category=vital-signs"),
    ("patient/Observation.rs?category=vital-signs&code=1234-5",
     "patient/Observation.rs?code=1234-5&category=vital-signs,laboratory"),
    ("patient/Observation.rs?category=vital-signs", "patient/*.rs"),
    ("", "patient/*.rs"),
    ("", ""),
    ("openid fhirUser", "openid fhirUser profile"),
    ("launch/patient offline_access", "launch/patient offline_access patient/*.rs"),
    ("custom", "custom other"),
    ("openid patient/Observation.rs launch", "launch patient/*.read openid fhirUser"),
])
def test_subset(a: str, b: str) -> None:
    assert sub(a, b)


@pytest.mark.parametrize(("a", "b"), [
    ("patient/Observation.rs", "patient/Observation.rs?category=vital-signs"),
    ("patient/*.read", "patient/Observation.r"),
    ("user/Observation.rs", "patient/Observation.rs"),
    ("patient/Observation.rs", "user/Observation.rs"),
    ("system/Observation.rs", "user/*.cruds"),
    ("patient/Observation.rs", "patient/Observation.r"),
    ("patient/Observation.write", "patient/Observation.read"),
    ("patient/Condition.r", "patient/Observation.rs"),
    ("patient/*.r", "patient/Observation.r patient/Condition.r"),
    ("patient/Observation.rs?category=vital-signs", "patient/Observation.rs?category=laboratory"),
    ("patient/Observation.rs?category=vital-signs", VITALS_FULL),
    ("patient/Observation.rs?category=vital-signs,laboratory",
     "patient/Observation.rs?category=vital-signs"),
    ("patient/Observation.rs?category=vital-signs",
     "patient/Observation.rs?category=vital-signs&code=1234-5"),
    (f"patient/Observation.rs?category={VITALS_SYSTEM}|",
     VITALS_FULL),
    ("patient/Observation.rs?code=1234-5", "patient/Observation.rs?category=vital-signs"),
    ("openid", "patient/*.rs"),
    ("fhirUser", "openid"),
    ("offline_access", "online_access"),
    ("launch", "launch/patient"),
    ("launch/encounter", "launch/patient"),
    ("custom", "patient/*.*"),
])
def test_not_subset(a: str, b: str) -> None:
    assert not sub(a, b)


def test_grant_covers() -> None:
    assert only("patient/*.read").covers(only("patient/Observation.r"))
    assert not only("patient/Observation.r").covers(only("patient/*.read"))
    assert only("patient/Observation.rs").covers(only(VITALS_FULL))
    assert not only("user/*.cruds").covers(only("patient/Observation.r"))


# -- narrowed_to --------------------------------------------------------------------------------

def test_narrowing_keeps_covered_grants_as_written() -> None:
    asked = parse_scopes("openid fhirUser launch patient/Observation.read patient/Condition.rs "
                         "offline_access")
    allowed = parse_scopes("openid launch patient/*.rs online_access")
    got = asked.narrowed_to(allowed)
    assert got.text() == "openid launch patient/Observation.read patient/Condition.rs"
    assert not got.fhir_user and not got.offline_access and not got.online_access


def test_narrowing_drops_uncovered() -> None:
    got = parse_scopes("patient/Observation.rs user/Patient.r system/*.rs custom").narrowed_to(
        parse_scopes("patient/*.rs"))
    assert got.text() == "patient/Observation.rs"


def test_narrowing_cuts_permissions() -> None:
    got = parse_scopes("patient/Observation.cruds").narrowed_to(parse_scopes("patient/*.read"))
    assert got.text() == "patient/Observation.rs"
    got = parse_scopes("patient/Observation.*").narrowed_to(
        parse_scopes("patient/Observation.r patient/Observation.s"))
    assert got.text() == "patient/Observation.rs"


def test_narrowing_wildcard_to_registered_types() -> None:
    got = parse_scopes("patient/*.read").narrowed_to(
        parse_scopes("patient/Observation.rs patient/Condition.r user/*.cruds"))
    assert got.text() == "patient/Observation.rs patient/Condition.r"


def test_narrowing_adds_query_constraint() -> None:
    got = parse_scopes("patient/Observation.rs").narrowed_to(
        parse_scopes("patient/Observation.rs?category=vital-signs"))
    assert got.text() == "patient/Observation.rs?category=vital-signs"
    assert got.grants[0].query == (("category", "vital-signs"),)
    both = parse_scopes("patient/Observation.rs?code=1234-5").narrowed_to(
        parse_scopes("patient/*.read?category=vital-signs"))
    assert both.grants[0].query == (("code", "1234-5"), ("category", "vital-signs"))
    assert both.text() == "patient/Observation.rs?code=1234-5&category=vital-signs"


def test_narrowing_keeps_narrower_query_of_request() -> None:
    got = parse_scopes(VITALS_FULL + " patient/Condition.cruds").narrowed_to(
        parse_scopes("patient/Observation.r?category=vital-signs patient/Condition.rs"))
    assert got.text() == (f"patient/Observation.r?category={VITALS_SYSTEM}|vital-signs "
                          "patient/Condition.rs")


def test_narrowing_nothing_allowed() -> None:
    got = parse_scopes("openid patient/*.rs launch/patient").narrowed_to(parse_scopes(""))
    assert got == ScopeSet()
    assert got.text() == ""


def test_narrowing_no_duplicate_made_grants() -> None:
    got = parse_scopes("patient/*.rs patient/*.read").narrowed_to(
        parse_scopes("patient/Observation.rs"))
    assert got.text() == "patient/Observation.rs"


def test_narrowed_result_reencodes_values() -> None:
    got = parse_scopes("patient/Observation.rs").narrowed_to(
        parse_scopes("patient/Observation.r?note=a%26b%3Dc"))
    assert got.text() == "patient/Observation.r?note=a%26b%3Dc"
    assert parse_scopes(got.text()) == got


# -- describe -----------------------------------------------------------------------------------

def test_describe_examples() -> None:
    s = parse_scopes(f"openid fhirUser offline_access patient/Observation.r?category=vital-signs "
                     f"patient/Observation.rs?category={VITALS_SYSTEM}|laboratory "
                     f"patient/Observation.c")
    assert describe(s) == [
        "Read your vital signs (Observations in category vital-signs)",
        "Read and search your lab results (Observations in category laboratory)",
        "Create new Observations for you",
        "Know who you are (your name and identity)",
        "Stay connected when you are not using the app (offline access)",
    ]


@pytest.mark.parametrize(("code", "words"), [
    ("vital-signs", "vital signs"), ("laboratory", "lab results"),
    ("social-history", "social history"), ("survey", "survey answers"),
    ("exam", "exam findings"), ("imaging", "imaging results"),
    ("procedure", "procedure results"), ("therapy", "therapy results"),
    ("activity", "activity data"),
])
def test_describe_known_categories(code: str, words: str) -> None:
    line, = describe(parse_scopes(f"patient/Observation.rs?category={code}"))
    assert line == f"Read and search your {words} (Observations in category {code})"


def test_describe_unknown_category_and_other_params() -> None:
    assert describe(parse_scopes("patient/Observation.rs?category=weird")) == [
        "Read and search your Observations (only those with category=weird)"]
    assert describe(parse_scopes("patient/Observation.rs?category=http://example.org|laboratory"
                                 )) == ["Read and search your Observations (only those with "
                                        "category=http://example.org|laboratory)"]
    assert describe(parse_scopes("patient/Observation.r?category=laboratory&code=http://loinc.org"
                                 "|2345-7")) == [
        "Read your lab results (Observations in category laboratory, only those with "
        "code=http://loinc.org|2345-7)"]
    assert describe(parse_scopes("patient/Observation.s?category=vital-signs,laboratory")) == [
        "Search your vital signs and lab results (Observations in category vital-signs, "
        "laboratory)"]


def test_describe_permissions_and_contexts() -> None:
    lines = describe(parse_scopes("patient/*.rs patient/Condition.cruds user/Observation.rs "
                                  "user/Observation.c system/Patient.read patient/Encounter.ud "
                                  "patient/AllergyIntolerance.read patient/ImagingStudy.r"))
    assert lines == [
        "Read and search all your health records",
        "Read, search, update and delete your Conditions, and create new ones",
        "Read and search Observations you have access to",
        "Create new Observations",
        "Read and search Patients on the server (system access)",
        "Update and delete your Encounters",
        "Read and search your AllergyIntolerances",
        "Read your ImagingStudies",
    ]


def test_describe_flags_and_other() -> None:
    lines = describe(parse_scopes("profile launch launch/patient launch/encounter online_access "
                                  "something-else"))
    assert lines[0] == "Know who you are (your name and identity)"
    assert "Stay connected while you are using the app (online access)" in lines
    assert any("patient" in line for line in lines)
    assert any("visit" in line for line in lines)
    assert lines[-1] == "Other access requested by the app: something-else"
    assert len(lines) == 6


def test_describe_merges_equal_lines() -> None:
    assert describe(parse_scopes("patient/*.read patient/*.rs openid fhirUser")) == [
        "Read and search all your health records", "Know who you are (your name and identity)"]
    assert describe(ScopeSet()) == []


# -- properties ---------------------------------------------------------------------------------

_V2 = st.sets(st.sampled_from("cruds"), min_size=1).map(
    lambda s: "".join(c for c in "cruds" if c in s))
_TOKENS = st.sampled_from([
    "vital-signs", "laboratory", f"{VITALS_SYSTEM}|vital-signs", f"{VITALS_SYSTEM}|",
    "|laboratory", "vital-signs,laboratory", "a&b=c d", "100%", "x+y",
])
_QUERY = st.lists(st.tuples(st.sampled_from(["category", "code"]), _TOKENS), max_size=2).map(
    lambda pairs: "&".join(f"{n}={quote(v, safe='|:/,')}" for n, v in pairs))


@st.composite
def resource_scopes(draw: st.DrawFn) -> str:
    context = draw(st.sampled_from(["patient", "user", "system"]))
    rtype = draw(st.sampled_from(["*", "Observation", "Condition"]))
    permissions = draw(st.one_of(_V2, st.sampled_from(["read", "write", "*"])))
    query = draw(_QUERY)
    return f"{context}/{rtype}.{permissions}" + (f"?{query}" if query else "")


_SCOPE = st.one_of(
    resource_scopes(), resource_scopes(),
    st.sampled_from(["openid", "fhirUser", "profile", "launch", "launch/patient",
                     "launch/encounter", "offline_access", "online_access", "custom",
                     "launch/location"]))
_SCOPE_TEXT = st.lists(_SCOPE, max_size=6).flatmap(
    lambda items: st.lists(st.sampled_from([" ", "  ", "\t", "\n"]), min_size=len(items),
                           max_size=len(items)).map(
        lambda gaps: "".join(g + s for g, s in zip(gaps, items, strict=True))))
SCOPE_SETS = _SCOPE_TEXT.map(parse_scopes)


@settings(max_examples=300, deadline=None)
@given(SCOPE_SETS)
def test_text_round_trips(s: ScopeSet) -> None:
    assert parse_scopes(s.text()) == s
    assert parse_scopes(s.text()).text() == s.text()


@settings(max_examples=300, deadline=None)
@given(SCOPE_SETS)
def test_subset_reflexive(s: ScopeSet) -> None:
    assert s.subset_of(s)
    assert ScopeSet().subset_of(s)


@settings(max_examples=500, deadline=None)
@given(SCOPE_SETS, SCOPE_SETS, SCOPE_SETS)
def test_subset_transitive(a: ScopeSet, b: ScopeSet, c: ScopeSet) -> None:
    if a.subset_of(b) and b.subset_of(c):
        assert a.subset_of(c)


# A small universe, so that random triples are often nested and transitivity is really tested.
_SMALL_SCOPE = st.tuples(
    st.sampled_from(["*", "Observation"]), st.sampled_from(["r", "rs", "read", "s", "cruds"]),
    st.sampled_from(["", "?category=vital-signs", f"?category={VITALS_SYSTEM}|vital-signs",
                     "?category=vital-signs,laboratory", "?category=vital-signs&code=x"]),
).map(lambda t: f"patient/{t[0]}.{t[1]}{t[2]}")
SMALL_SETS = st.lists(st.one_of(_SMALL_SCOPE, st.just("openid")), min_size=1, max_size=3).map(
    lambda items: parse_scopes(" ".join(items)))


@settings(max_examples=200, deadline=None)
@given(st.lists(SMALL_SETS, min_size=3, max_size=10))
def test_subset_transitive_small_universe(pool: list[ScopeSet]) -> None:
    within = {(i, j) for i, a in enumerate(pool) for j, b in enumerate(pool) if a.subset_of(b)}
    for i, j in within:
        for k in range(len(pool)):
            if (j, k) in within:
                assert (i, k) in within, (pool[i].text(), pool[j].text(), pool[k].text())


@settings(max_examples=300, deadline=None)
@given(SCOPE_SETS, SCOPE_SETS, SCOPE_SETS)
def test_subset_transitive_along_narrowing_chain(c: ScopeSet, x: ScopeSet, y: ScopeSet) -> None:
    b = c.narrowed_to(x)
    a = b.narrowed_to(y)
    assert a.subset_of(b) and b.subset_of(c)
    assert a.subset_of(c)


@settings(max_examples=300, deadline=None)
@given(SCOPE_SETS, SCOPE_SETS)
def test_narrowing_is_within_both(asked: ScopeSet, allowed: ScopeSet) -> None:
    got = asked.narrowed_to(allowed)
    assert got.subset_of(asked)
    assert got.subset_of(allowed)
    assert parse_scopes(got.text()) == got
    assert got.narrowed_to(allowed) == got


@settings(max_examples=300, deadline=None)
@given(SCOPE_SETS, SCOPE_SETS)
def test_narrowing_to_a_superset_changes_nothing(asked: ScopeSet, extra: ScopeSet) -> None:
    allowed = parse_scopes(asked.text() + " " + extra.text())
    assert asked.subset_of(allowed)
    assert asked.narrowed_to(allowed) == asked


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(SCOPE_SETS, SCOPE_SETS)
def test_subset_means_every_check_passes(a: ScopeSet, b: ScopeSet) -> None:
    assume(a.subset_of(b))
    for grant in a.grants:
        for p in grant.permissions:
            for rtype in ("Observation", "Condition", "Patient"):
                if grant.allows(rtype, p):
                    assert b.grants_for(grant.context, rtype, p)


@settings(max_examples=200, deadline=None)
@given(SCOPE_SETS)
def test_describe_never_fails(s: ScopeSet) -> None:
    lines = describe(s)
    assert len(lines) == len(set(lines))
    assert all(line and line[0].isupper() for line in lines)
