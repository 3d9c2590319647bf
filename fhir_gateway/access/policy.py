"""What a SMART token may do, decided per request, narrowed before and checked after.

- The scope must cover the interaction (`c r u d s` on the type, v1 or v2 spelling), else 403.
- A patient-context token is confined to its patient's compartment: searches get
  `patient=<its patient>` (or `_id` for Patient) added, and every resource that comes back or goes
  in is checked: it must belong to that patient, and it must not name any other patient. A
  resource that fails is treated as absent (404), so nothing reveals that it exists.
- v2 query-constrained scopes (`patient/Observation.rs?category=vital-signs`) narrow searches
  the same way and are checked on every resource.
- `user/` scopes of a Patient user behave like patient scopes for that patient; of a
  practitioner, they cover the clinic's data; `system/` scopes cover everything.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field

from adapters.embedded.indexer import index as index_resource
from adapters.errors import Forbidden
from adapters.search import parse_token
from mappings.compartment import in_compartment as compartment_rule
from mappings.compartment import requires_membership
from mappings.references import patient_targets
from smart_launch.scopes import Grant, ScopeSet

CLINICIANS = ("Practitioner", "PractitionerRole")
# Outside the patient compartment and naming no Patient, yet holding anyone's record: a Binary
# (a document's bytes, tied to its DocumentReference only by `securityContext`) and a stored
# Bundle (a document or message). The compartment rule would let them through: patient-context
# tokens may not use them, except to read a Binary by id, judged by its securityContext (R4:
# "the referenced resource stands in as a proxy" for its access control).
UNCONFINABLE = frozenset({"Binary", "Bundle"})
BY_CONTEXT = frozenset({"Binary"})
CONTEXT_READS = frozenset({"read", "vread"})
PERMISSION = {
    "read": "r", "vread": "r", "history-instance": "r", "search-type": "s",
    "create": "c", "update": "u", "delete": "d",
}


@dataclass(frozen=True)
class Principal:
    """A verified token's caller: client, user, patient context and granted scopes."""

    client_id: str
    scopes: ScopeSet
    subject: str | None = None
    fhir_user: str | None = None  # "Patient/pat-0001", "Practitioner/prac-01"
    patient: str | None = None
    encounter: str | None = None
    jti: str | None = None

    @property
    def user(self) -> str | None:
        """Who the caller is, as the audit log and the outbox name them: the token's
        fhirUser (a reference), else its subject."""
        return self.fhir_user or self.subject

    @classmethod
    def from_claims(cls, claims: dict, scopes: ScopeSet) -> Principal:
        return cls(client_id=claims.get("client_id", ""), scopes=scopes,
                   subject=claims.get("sub"), fhir_user=claims.get("fhirUser"),
                   patient=claims.get("patient"), encounter=claims.get("encounter"),
                   jti=claims.get("jti"))


@dataclass
class AccessDecision:
    """Allowed (else Forbidden was raised): extra search clauses and the post-check to run."""

    patient: str | None = None  # confine to this patient's compartment
    queries: list[tuple[tuple[str, str], ...]] = field(default_factory=list)  # OR of ANDs
    narrowing: list[tuple[str, str]] = field(default_factory=list)
    # True when the narrowing selects exactly what `permits` allows, so an EHR's count of
    # matches is the caller's count; False when the post-check may drop some (then a total
    # from the EHR would reveal that hidden resources exist).
    exact: bool = True
    # A patient's read of a Binary: judged by the resource its securityContext names, which
    # the service reads for `caller` (`FhirService.context_permits`); `permits` alone lets
    # nothing through.
    by_context: bool = False
    caller: Principal | None = field(default=None, compare=False, repr=False)

    def identity(self) -> tuple:
        """What the decision confines and adds: callers with equal identities see the same
        answers (kept answers and paging cursors are bound to it)."""
        return (self.patient, tuple(self.queries), tuple(self.narrowing), self.exact,
                self.by_context)

    def permits(self, resource: dict, refs: frozenset[str] | None = None) -> bool:
        """True when the resource may be shown to (or written by) the caller; `refs`, the
        Patients it references when already known (else they are looked up)."""
        if self.by_context:
            return False  # fail closed: only the securityContext check may let it through
        if self.patient is not None and not in_compartment(resource, self.patient, refs):
            return False
        if self.queries and not any(matches(resource, q) for q in self.queries):
            return False
        return True


# Within one read-only request the same resource is checked by the access post-check and
# looked at again for the access log; `remember_patient_refs()` lets the second look reuse the
# first walk. Entries pin their resource, so an id is never confused with another object's.
_REFS_MEMO: ContextVar[dict[int, tuple[dict, frozenset[str]]] | None] = ContextVar(
    "patient_refs_memo", default=None)


def remember_patient_refs(on: bool) -> None:
    """Memoise `patient_refs` for the rest of this (read-only) request, or stop doing so."""
    _REFS_MEMO.set({} if on else None)


def patient_refs(resource: dict) -> frozenset[str]:
    """Ids of every Patient the resource references, in any spelling of the reference."""
    memo = _REFS_MEMO.get()
    if memo is not None:
        hit = memo.get(id(resource))
        if hit is not None and hit[0] is resource:
            return hit[1]
    refs = patient_targets(resource)
    if memo is not None:
        memo[id(resource)] = (resource, refs)
    return refs


def in_compartment(resource: dict, patient: str, refs: frozenset[str] | None = None) -> bool:
    """The resource is this patient's (or belongs to no patient), and names no other patient;
    `refs`, the Patients it references when already known."""
    rtype = resource.get("resourceType", "")
    if rtype == "Patient":  # the rule needs only its id: no need to walk its references
        return compartment_rule(rtype, resource.get("id"), frozenset(), patient)
    return compartment_rule(rtype, resource.get("id"),
                            patient_refs(resource) if refs is None else refs, patient)


def owner(resource: dict, refs: frozenset[str] | None = None) -> str | None:
    """The one patient whose data the resource is (for the access log): a Patient's own id,
    else the only Patient it references, else None. `refs` as for `in_compartment`."""
    if resource.get("resourceType") == "Patient":
        return resource.get("id")
    refs = patient_refs(resource) if refs is None else refs
    return next(iter(refs)) if len(refs) == 1 else None


def sole_owner(owners: Iterable[str | None]) -> str | None:
    """The patient when all the resources that have an `owner` have the same one."""
    found = set(owners)
    found.discard(None)
    return found.pop() if len(found) == 1 else None


def matches(resource: dict, query: tuple[tuple[str, str], ...]) -> bool:
    """Does the resource satisfy a scope's query constraint (token parameters)?"""
    rows = index_resource(resource).tokens
    for name, value in query:
        wanted = [parse_token(v) for v in value.split(",")]
        found = [(system, code) for param, system, code in rows if param == name]
        if not any((s is None or s == system or (s == "" and system is None))
                   and (c is None or c == code)
                   for s, c in wanted for system, code in found):
            return False
    return True


class AccessPolicy:
    """The one extension point for access: `decide` before, `AccessDecision.permits` after."""

    def __init__(self, search_params) -> None:
        # search_params(rtype) -> dict of the type's search parameters (from the adapter)
        self._params = search_params

    def decide(self, principal: Principal, interaction: str, rtype: str) -> AccessDecision:
        permission = PERMISSION.get(interaction)
        if permission is None:
            raise Forbidden(f"{interaction} is not available to apps", expression=rtype)
        grants = [g for g in principal.scopes.grants if g.allows(rtype, permission)]
        # system/ grants are for backend services: a token with a user or a patient (one
        # refreshed from before authorize refused them) never uses them.
        person = principal.patient or principal.fhir_user
        usable = [g for g in grants if (g.context != "patient" or principal.patient)
                  and (g.context != "system" or not person)]
        if not usable:
            verb = {"r": "read", "s": "search", "c": "create", "u": "update",
                    "d": "delete"}[permission]
            raise Forbidden(f"The token's scopes do not allow {verb} on {rtype}",
                            expression=rtype)
        decision = AccessDecision(patient=self._confinement(principal, usable, rtype))
        if decision.patient is not None and rtype in BY_CONTEXT and interaction in CONTEXT_READS:
            decision.by_context, decision.caller = True, principal
            if all(g.query for g in usable):
                decision.queries = [g.query for g in usable]
            return decision
        params = self._params(rtype)
        if decision.patient is not None and (rtype in UNCONFINABLE or (
                requires_membership(rtype) and rtype != "Patient"
                and not ({"patient", "_compartment"} & set(params)))):
            also = " except to read one by id" if rtype in BY_CONTEXT else ""
            raise Forbidden(f"{rtype} cannot be confined to one patient, so patient-context "
                            f"tokens may not use it{also}", expression=rtype)
        if all(g.query for g in usable):
            decision.queries = [g.query for g in usable]
        decision.narrowing = self._narrowing(rtype, decision)
        return decision

    @staticmethod
    def _confinement(principal: Principal, grants: list[Grant], rtype: str) -> str | None:
        """The patient the request is confined to, or None for clinic-wide access (system
        scopes, or user scopes of a practitioner). Anyone else needs a patient."""
        if any(g.context == "system" for g in grants):
            return None
        kind, _, user_id = (principal.fhir_user or "").partition("/")
        if any(g.context == "user" for g in grants) and kind in CLINICIANS:
            return None
        patient = principal.patient or (user_id if kind == "Patient" else None)
        if patient is None:
            raise Forbidden("The token has no patient context to confine it to",
                            expression=rtype)
        return patient

    def _narrowing(self, rtype: str, decision: AccessDecision) -> list[tuple[str, str]]:
        clauses: list[tuple[str, str]] = []
        if decision.patient is not None:
            params = self._params(rtype)
            if "_compartment" in params:  # exact: totals and pages hold only what it may see
                clauses.append(("_compartment", decision.patient))
            elif rtype == "Patient":
                clauses.append(("_id", decision.patient))
            else:  # may also match resources that name another patient too
                decision.exact = False
                if "patient" in params:
                    clauses.append(("patient", f"Patient/{decision.patient}"))
        if decision.queries:
            names = {name for q in decision.queries for name, _ in q}
            if len(decision.queries) == 1:
                clauses.extend(decision.queries[0])
            elif len(names) == 1 and all(len(q) == 1 for q in decision.queries):
                name = names.pop()
                clauses.append((name, ",".join(q[0][1] for q in decision.queries)))
            else:  # the post-check alone filters (an OR of ANDs has no search syntax)
                decision.exact = False
        return clauses
