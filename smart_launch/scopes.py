"""SMART App Launch 2.2 scope grammar, parsed once into grants.

Implements "App Launch: Scopes and Launch Context" of SMART App Launch STU 2.2
(https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html):

- resource scopes ``<patient|user|system>/<Type|*>.<permissions>`` ("Scopes for requesting FHIR
  Resources"), with v2 permissions (a non-empty subset of ``cruds`` in that order) and the v1
  spellings ``read`` (= ``rs``), ``write`` (= ``cud``) and ``*`` (= ``cruds``);
- query-constrained scopes ``patient/Observation.rs?category=...|vital-signs`` ("Finer-grained
  resource constraints using search parameters"): URL-decoded ``name=value`` pairs joined by
  ``&``, all of which must hold; a value is a token (``code``, ``system|code``, ``|code``,
  ``system|``), or several separated by commas, any of which may match;
- launch context (``launch``, ``launch/patient``, ``launch/encounter``), identity (``openid``,
  ``fhirUser``, ``profile``) and refresh (``offline_access``, ``online_access``) scopes.

The rest of the gateway asks a :class:`ScopeSet` questions (``grants_for``, ``subset_of``,
``narrowed_to``) instead of matching scope strings, so the grammar lives in this one place.
``Grant.allows`` ignores query constraints: callers must apply ``Grant.query`` themselves.
Standard library only, no I/O.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

__all__ = ["CONTEXTS", "PERMISSIONS", "Grant", "ScopeError", "ScopeSet", "describe",
           "parse_scopes"]

CONTEXTS = ("patient", "user", "system")
PERMISSIONS = "cruds"  # the v2 letters, in the order a scope must list them
_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}

_TYPE_RE = re.compile(r"\*|[A-Z][A-Za-z]+")
_V2_RE = re.compile(r"c?r?u?d?s?")
_PARAM_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
# Looks like a resource scope with a context SMART does not define ("Patient/Observation.read").
_RESOURCE_LIKE_RE = re.compile(r"[A-Za-z]+/(?:\*|[A-Za-z]+)\.(?:\*|[A-Za-z]+)(?:\?.*)?")
_ALTERNATIVE_SPLIT_RE = re.compile(r"(?<!\\),")  # a "\," inside a token is not a separator
_QUOTE_SAFE = "|:/,\\@+$!*'();"  # what stays literal when a query value is written back

# Non-resource scopes and the ScopeSet flag each sets, in the order text() writes them.
_FLAGS = (
    ("openid", "openid"),
    ("fhirUser", "fhir_user"),
    ("profile", "profile"),
    ("launch", "launch"),
    ("launch/patient", "launch_patient"),
    ("launch/encounter", "launch_encounter"),
    ("offline_access", "offline_access"),
    ("online_access", "online_access"),
)
_FLAG_BY_SCOPE = dict(_FLAGS)


class ScopeError(ValueError):
    """A malformed resource scope (the message names it and says what is wrong)."""


Query = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Grant:
    """One resource scope: what may be done (``permissions``) to which type, in which context."""

    context: str  # "patient" | "user" | "system"
    resource_type: str  # a FHIR type or "*"
    permissions: frozenset[str]  # subset of {"c", "r", "u", "d", "s"}
    query: Query = ()  # v2 constraint, all pairs must hold: (("category", "vital-signs"),)
    scope: str = ""  # the original scope text ("" when built in code)

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ScopeError(f"unknown scope context {self.context!r}")
        if not _TYPE_RE.fullmatch(self.resource_type):
            raise ScopeError(f"invalid resource type {self.resource_type!r}")
        permissions = frozenset(self.permissions)
        if not permissions or not permissions <= frozenset(PERMISSIONS):
            raise ScopeError(f"permissions must be a non-empty subset of 'cruds', "
                             f"not {sorted(permissions)!r}")
        object.__setattr__(self, "permissions", permissions)
        object.__setattr__(self, "query", tuple((str(n), str(v)) for n, v in self.query))

    @property
    def permission_letters(self) -> str:
        """The permissions in v2 spelling, e.g. ``"rs"``."""
        return "".join(p for p in PERMISSIONS if p in self.permissions)

    def text(self) -> str:
        """The scope as given, or its v2 spelling when the grant was built in code."""
        return self.scope or _render(self.context, self.resource_type, self.permissions,
                                     self.query)

    def allows(self, resource_type: str, permission: str) -> bool:
        """Does this grant give ``permission`` (one of c r u d s) on ``resource_type``?

        The query constraint is not considered here; the caller applies ``query``.
        """
        _check_permission(permission)
        return permission in self.permissions and self.resource_type in ("*", resource_type)

    def covers(self, other: Grant) -> bool:
        """Does this grant alone allow everything ``other`` allows?"""
        return all(self._covers(other.context, other.resource_type, p, other.query)
                   for p in other.permissions)

    def _covers(self, context: str, resource_type: str, permission: str, query: Query) -> bool:
        return (self.context == context
                and permission in self.permissions
                and self.resource_type in ("*", resource_type)
                and _query_implies(query, self.query))


@dataclass(frozen=True)
class ScopeSet:
    """A parsed scope string: resource grants, the SMART non-resource scopes, and the rest."""

    grants: tuple[Grant, ...] = ()
    openid: bool = False
    fhir_user: bool = False
    profile: bool = False
    launch: bool = False
    launch_patient: bool = False
    launch_encounter: bool = False
    offline_access: bool = False
    online_access: bool = False
    other: tuple[str, ...] = ()  # unrecognised scopes, kept as given

    def __post_init__(self) -> None:
        object.__setattr__(self, "grants", tuple(self.grants))
        object.__setattr__(self, "other", tuple(self.other))

    def text(self) -> str:
        """The normalized scope string: flags, then grants and other scopes in given order."""
        parts = [scope for scope, flag in _FLAGS if getattr(self, flag)]
        parts += [g.text() for g in self.grants]
        parts += self.other
        return " ".join(dict.fromkeys(parts))

    def grants_for(self, context: str, resource_type: str, permission: str) -> list[Grant]:
        """The grants in ``context`` that allow ``permission`` on ``resource_type``."""
        return [g for g in self.grants
                if g.context == context and g.allows(resource_type, permission)]

    def subset_of(self, other: ScopeSet) -> bool:
        """Is everything this set allows also allowed by ``other``? (A refresh may only narrow.)

        Each permission of each grant must be covered by some grant of ``other`` in the same
        context, on the same type or ``*``, whose query constraint is no narrower; every flag set
        here must be set there, and every unrecognised scope must appear there too.
        """
        for grant in self.grants:
            for permission in grant.permissions:
                if not _covered(other.grants, grant.context, grant.resource_type, permission,
                                grant.query):
                    return False
        if any(getattr(self, flag) and not getattr(other, flag) for _, flag in _FLAGS):
            return False
        return set(self.other) <= set(other.other)

    def narrowed_to(self, allowed: ScopeSet) -> ScopeSet:
        """What this set asks for that ``allowed`` permits (the intersection of the two).

        A grant that ``allowed`` covers is kept as written; otherwise it is replaced by its
        overlap with each grant of ``allowed`` (narrower type, common permissions, both query
        constraints), written in v2 spelling. The result is a subset of both sets.
        """
        pieces: list[tuple[Grant, bool]] = []  # (grant, made here)
        for grant in self.grants:
            if all(_covered(allowed.grants, grant.context, grant.resource_type, p, grant.query)
                   for p in grant.permissions):
                pieces.append((grant, False))
                continue
            for limit in allowed.grants:
                overlap = _intersect(grant, limit)
                if overlap is not None:
                    pieces.append((overlap, True))
        grants = _drop_redundant(_merge_made(pieces))
        flags = {flag: getattr(self, flag) and getattr(allowed, flag) for _, flag in _FLAGS}
        kept_other = tuple(s for s in self.other if s in set(allowed.other))
        return ScopeSet(grants=grants, other=kept_other, **flags)


@functools.lru_cache(maxsize=4096)
def parse_scopes(text: str) -> ScopeSet:
    """Parse a space-separated scope string; raises ScopeError for a malformed resource scope.
    Cached: every request parses its token's scopes, and a ScopeSet is immutable."""
    grants: list[Grant] = []
    other: list[str] = []
    flags: dict[str, bool] = {}
    for scope in dict.fromkeys(text.split()):
        flag = _FLAG_BY_SCOPE.get(scope)
        if flag is not None:
            flags[flag] = True
        elif "/" in scope and scope.split("/", 1)[0] in CONTEXTS:
            grants.append(_parse_resource_scope(scope))
        elif _RESOURCE_LIKE_RE.fullmatch(scope):
            context = scope.split("/", 1)[0]
            raise ScopeError(f"unknown context {context!r} in scope {scope!r}: "
                             f"expected one of {', '.join(CONTEXTS)}")
        else:
            other.append(scope)
    return ScopeSet(grants=tuple(grants), other=tuple(other), **flags)


def _parse_resource_scope(scope: str) -> Grant:
    context, _, rest = scope.partition("/")
    body, has_query, query_text = rest.partition("?")
    resource_type, has_dot, permission_text = body.partition(".")
    if not has_dot:
        raise ScopeError(f"scope {scope!r} has no '.permissions' after the resource type")
    if not _TYPE_RE.fullmatch(resource_type):
        raise ScopeError(f"invalid resource type {resource_type!r} in scope {scope!r}: "
                         "expected a FHIR type name or '*'")
    if permission_text in _V1_PERMISSIONS:
        letters = _V1_PERMISSIONS[permission_text]
    elif permission_text and _V2_RE.fullmatch(permission_text):
        letters = permission_text
    else:
        raise ScopeError(f"invalid permissions {permission_text!r} in scope {scope!r}: expected "
                         "read, write, * or letters of 'cruds' in that order, each at most once")
    query = _parse_query(query_text, scope) if has_query else ()
    return Grant(context, resource_type, frozenset(letters), query, scope)


def _parse_query(text: str, scope: str) -> Query:
    if not text:
        raise ScopeError(f"scope {scope!r} has an empty query after '?'")
    pairs: list[tuple[str, str]] = []
    for part in text.split("&"):
        raw_name, has_equals, raw_value = part.partition("=")
        name, value = unquote(raw_name), unquote(raw_value)
        if not has_equals or not _PARAM_NAME_RE.fullmatch(name):
            raise ScopeError(f"invalid query parameter {part!r} in scope {scope!r}: "
                             "expected name=value")
        if not value or "" in _alternatives(value):
            raise ScopeError(f"empty value for {name!r} in scope {scope!r}")
        pairs.append((name, value))
    return tuple(pairs)


def _check_permission(permission: str) -> None:
    if len(permission) != 1 or permission not in PERMISSIONS:
        raise ValueError(f"permission must be one of c, r, u, d, s, not {permission!r}")


def _render(context: str, resource_type: str, permissions: frozenset[str], query: Query) -> str:
    letters = "".join(p for p in PERMISSIONS if p in permissions)
    text = f"{context}/{resource_type}.{letters}"
    if query:
        text += "?" + "&".join(f"{quote(n, safe=_QUOTE_SAFE)}={quote(v, safe=_QUOTE_SAFE)}"
                               for n, v in query)
    return text


# -- coverage: what a grant allows, and when one query constraint implies another -------------

def _alternatives(value: str) -> list[str]:
    return _ALTERNATIVE_SPLIT_RE.split(value)


def _token_covers(broad: str, narrow: str) -> bool:
    """Does search token ``broad`` match everything ``narrow`` matches?"""
    if broad == narrow:
        return True
    if not broad:
        return False
    if "|" not in broad:  # a bare code matches it in any system (or none)
        return narrow.endswith("|" + broad)
    if broad.endswith("|") and broad.count("|") == 1:  # "system|" matches any code in it
        return narrow.startswith(broad)
    return False


def _value_covers(broad: str, narrow: str) -> bool:
    wide = _alternatives(broad)
    return all(any(_token_covers(b, n) for b in wide) for n in _alternatives(narrow))


def _query_implies(narrow: Query, broad: Query) -> bool:
    """Does every resource matching ``narrow`` also match ``broad``?"""
    return all(any(name == b_name and _value_covers(b_value, value) for name, value in narrow)
               for b_name, b_value in broad)


def _covered(grants: tuple[Grant, ...] | list[Grant], context: str, resource_type: str,
             permission: str, query: Query) -> bool:
    return any(g._covers(context, resource_type, permission, query) for g in grants)


def _intersect(grant: Grant, limit: Grant) -> Grant | None:
    """What ``grant`` and ``limit`` both allow, or None."""
    if grant.context != limit.context:
        return None
    if grant.resource_type == "*":
        resource_type = limit.resource_type
    elif limit.resource_type in ("*", grant.resource_type):
        resource_type = grant.resource_type
    else:
        return None
    permissions = grant.permissions & limit.permissions
    if not permissions:
        return None
    if _query_implies(grant.query, limit.query):
        query = grant.query
    elif _query_implies(limit.query, grant.query):
        query = limit.query
    else:
        query = grant.query + tuple(p for p in limit.query if p not in grant.query)
    return _made(grant.context, resource_type, permissions, query)


def _made(context: str, resource_type: str, permissions: frozenset[str], query: Query) -> Grant:
    return Grant(context, resource_type, permissions, query,
                 _render(context, resource_type, permissions, query))


def _merge_made(pieces: list[tuple[Grant, bool]]) -> list[tuple[Grant, bool]]:
    """Join grants made by narrowing that differ only in permissions (r + s -> rs)."""
    out: list[tuple[Grant, bool]] = []
    where: dict[tuple, int] = {}
    for grant, made in pieces:
        if not made:
            out.append((grant, made))
            continue
        key = (grant.context, grant.resource_type, frozenset(grant.query))
        if key in where:
            first = out[where[key]][0]
            out[where[key]] = (_made(first.context, first.resource_type,
                                     first.permissions | grant.permissions, first.query), True)
        else:
            where[key] = len(out)
            out.append((grant, made))
    return out


def _drop_redundant(pieces: list[tuple[Grant, bool]]) -> tuple[Grant, ...]:
    """Drop made grants that the others already cover; grants as written always stay."""
    kept = list(pieces)
    i = 0
    while i < len(kept):
        grant, made = kept[i]
        rest = [g for j, (g, _) in enumerate(kept) if j != i]
        if made and all(_covered(rest, grant.context, grant.resource_type, p, grant.query)
                        for p in grant.permissions):
            del kept[i]
        else:
            i += 1
    seen: dict[str, Grant] = {}
    for grant, _ in kept:
        seen.setdefault(grant.text(), grant)
    return tuple(seen.values())


# -- plain words for the consent page ----------------------------------------------------------

_CATEGORY_SYSTEMS = {
    "",
    "http://terminology.hl7.org/CodeSystem/observation-category",
    "http://terminology.hl7.org/CodeSystem/condition-category",
    "http://hl7.org/fhir/us/core/CodeSystem/condition-category",
}
_CATEGORY_WORDS = {
    "vital-signs": "vital signs",
    "laboratory": "lab results",
    "social-history": "social history",
    "survey": "survey answers",
    "exam": "exam findings",
    "imaging": "imaging results",
    "procedure": "procedure results",
    "therapy": "therapy results",
    "activity": "activity data",
    "problem-list-item": "problem list",
    "encounter-diagnosis": "visit diagnoses",
    "health-concern": "health concerns",
}
_VERBS = {"r": "read", "s": "search", "u": "update", "d": "delete"}

_IDENTITY_LINE = "Know who you are (your name and identity)"
_FLAG_LINES = (
    ("launch", "Learn which record is open when the app is started from your health portal "
               "(launch context)"),
    ("launch_patient", "Ask which patient's record to use when the app starts "
                       "(patient selection)"),
    ("launch_encounter", "Know which visit the app is started for (encounter)"),
    ("offline_access", "Stay connected when you are not using the app (offline access)"),
    ("online_access", "Stay connected while you are using the app (online access)"),
)


def describe(scopes: ScopeSet) -> list[str]:
    """Plain-words lines, one per distinct permission, for a patient consent page."""
    lines = [_describe_grant(g) for g in scopes.grants]
    if scopes.openid or scopes.fhir_user or scopes.profile:
        lines.append(_IDENTITY_LINE)
    lines += [line for flag, line in _FLAG_LINES if getattr(scopes, flag)]
    lines += [f"Other access requested by the app: {s}" for s in scopes.other]
    return list(dict.fromkeys(lines))


def _describe_grant(grant: Grant) -> str:
    subject, details = _subject(grant)
    if details:
        subject += f" ({details})"
    verbs = [word for letter, word in _VERBS.items() if letter in grant.permissions]
    everything = grant.resource_type == "*" and not grant.query
    if grant.context == "patient":
        owned, created = ("all your " if everything else "your ") + subject, f"{subject} for you"
    elif grant.context == "user":
        owned = ("all " if everything else "") + f"{subject} you have access to"
        created = subject
    else:
        owned = ("all " if everything else "") + f"{subject} on the server (system access)"
        created = f"{subject} on the server (system access)"
    if not verbs:
        return f"Create new {created}"
    line = f"{_join(verbs).capitalize()} {owned}"
    return line + ", and create new ones" if "c" in grant.permissions else line


def _subject(grant: Grant) -> tuple[str, str]:
    """What the grant is about in words, and the exact filter in brackets (or "")."""
    base = "health records" if grant.resource_type == "*" else _plural(grant.resource_type)
    rest = list(grant.query)
    details: list[str] = []
    subject = base
    categories = [value for name, value in grant.query if name == "category"]
    if len(categories) == 1:
        codes = _known_categories(categories[0])
        if codes:
            subject = _join(list(dict.fromkeys(_CATEGORY_WORDS[c] for c in codes)))
            details.append(f"{base} in category {', '.join(dict.fromkeys(codes))}")
            rest = [(n, v) for n, v in rest if n != "category"]
    if rest:
        details.append("only those with " + " and ".join(f"{n}={v}" for n, v in rest))
    return subject, ", ".join(details)


def _known_categories(value: str) -> list[str] | None:
    codes = []
    for token in _alternatives(value):
        system, _, code = token.rpartition("|")
        if system not in _CATEGORY_SYSTEMS or code not in _CATEGORY_WORDS:
            return None
        codes.append(code)
    return codes


def _plural(type_name: str) -> str:
    if type_name.endswith("y") and type_name[-2] not in "aeiou":
        return type_name[:-1] + "ies"
    if type_name.endswith(("s", "x", "ch", "sh")):
        return type_name + "es"
    return type_name + "s"


def _join(words: list[str]) -> str:
    if len(words) <= 2:
        return " and ".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]
