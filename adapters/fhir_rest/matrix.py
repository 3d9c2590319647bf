"""The capability matrix: what the gateway may do at one EHR, and why.

Four sources, merged in this order: (a) the EHR's CapabilityStatement, (b) the vendor profile
shipped with the project (known gaps), (c) the scopes the clinic's registration was granted,
(d) the clinic's own overrides (`allow`, `deny`). Every cell remembers which source decided it,
so `fhir-gateway capabilities --ehr NAME` can explain itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.base import TYPE_INTERACTIONS, Capabilities, TypeCapability
from adapters.embedded.params import params_for
from adapters.fhir_rest.vendors import VendorProfile
from adapters.search import PARAM_TYPES, SearchParamDef
from mappings.r4 import RESOURCE_TYPES

STANDARD = frozenset({"read", "vread", "update", "delete", "history-instance", "create",
                      "search-type"})
NOT_SERVED = frozenset({"Bundle", "OperationOutcome", "Parameters", "CapabilityStatement"})
COMMON = {
    "_id": SearchParamDef("_id", "token", "Logical id of the resource"),
    "_lastUpdated": SearchParamDef("_lastUpdated", "date", "When the resource last changed"),
}
# SMART scope permissions -> interactions (v2 letters; v1 read/write map onto them).
PERMISSIONS = {
    "c": {"create"}, "r": {"read", "vread", "history-instance"}, "u": {"update", "patch"},
    "d": {"delete"}, "s": {"search-type"},
}
V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass
class Cell:
    allowed: bool
    source: str  # statement, assumed, profile, scope, override


@dataclass
class Matrix:
    """Per type and interaction, allowed or not and by which source; plus search params."""

    ehr: str
    vendor: VendorProfile
    statement_found: bool
    software: str
    cells: dict[str, dict[str, Cell]] = field(default_factory=dict)
    params: dict[str, dict[str, SearchParamDef]] = field(default_factory=dict)
    conditional: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    system: frozenset[str] = frozenset()
    _caps: Capabilities | None = None  # built once, on first use

    def capabilities(self) -> Capabilities:
        if self._caps is None:
            self._caps = self._build()
        return self._caps

    def _build(self) -> Capabilities:
        types = {}
        for rtype, row in self.cells.items():
            allowed = frozenset(i for i, c in row.items() if c.allowed)
            if not allowed:
                continue
            cc, cu = self.conditional.get(rtype, (False, False))
            types[rtype] = TypeCapability(interactions=allowed,
                                          search_params=self.params.get(rtype, {}),
                                          conditional_create=cc, conditional_update=cu)
        return Capabilities(types=types, system_interactions=self.system,
                            software=f"{self.software} at {self.ehr} (via FHIR REST)")

    def rows(self) -> list[tuple[str, dict[str, str]]]:
        """For the table: per type, interaction -> 'yes', 'no', with the deciding source when
        it is not the EHR's statement."""
        out = []
        for rtype in sorted(self.cells):
            row = {}
            for interaction in TYPE_INTERACTIONS:
                cell = self.cells[rtype].get(interaction)
                if cell is None:
                    row[interaction] = "-"
                    continue
                word = "yes" if cell.allowed else "no"
                row[interaction] = word if cell.source in ("statement", "assumed") else \
                    f"{word} ({cell.source})"
            out.append((rtype, row))
        return out


def _param_defs(rtype: str, declared: list[dict] | None) -> dict[str, SearchParamDef]:
    known = {name: p.definition() for name, p in params_for(rtype).items()}
    if declared is None:  # assumed: what R4 defines and the gateway understands
        return {**COMMON, **known}
    out: dict[str, SearchParamDef] = {}
    for item in declared:
        name, ptype = item.get("name"), item.get("type")
        if not isinstance(name, str) or ptype not in PARAM_TYPES or ptype == "special":
            continue
        if name in known and known[name].type == ptype:
            out[name] = known[name]
        elif name in COMMON:
            out[name] = COMMON[name]
        else:
            out[name] = SearchParamDef(name, ptype, str(item.get("documentation") or "")[:200])
    return out


def _granted(scopes: str) -> dict[str, set[str]] | None:
    """Scope string -> type (or '*') -> interactions; None when no limit is configured."""
    if not scopes.strip():
        return None
    out: dict[str, set[str]] = {}
    for scope in scopes.split():
        context, _, rest = scope.partition("/")
        if context not in ("system", "user", "patient") or "." not in rest:
            continue
        rtype, _, perms = rest.partition(".")
        perms = perms.split("?", 1)[0]
        letters = V1.get(perms, perms)
        out.setdefault(rtype, set()).update(
            i for letter in letters for i in PERMISSIONS.get(letter, ()))
    return out


def override_target(entry: str) -> tuple[str, str]:
    """`Type.interaction` (or `Type.*`) -> (type, interaction); ValueError saying what is wrong."""
    rtype, _, interaction = entry.partition(".")
    if not rtype or not interaction:
        raise ValueError(f"{entry!r} must look like Type.interaction (or Type.*)")
    if interaction != "*" and interaction not in TYPE_INTERACTIONS:
        raise ValueError(f"{entry!r}: unknown interaction {interaction!r}")
    if rtype not in RESOURCE_TYPES:
        raise ValueError(f"{entry!r}: {rtype!r} is not an R4 resource type")
    return rtype, interaction


def build_matrix(ehr: str, vendor: VendorProfile, statement: dict | None,
                 granted_scopes: str = "", allow: tuple[str, ...] = (),
                 deny: tuple[str, ...] = ()) -> Matrix:
    """Merge the four sources into one matrix (see the module docstring)."""
    rest = None
    if statement is not None:
        rest = next((r for r in statement.get("rest") or [] if r.get("mode") == "server"), None)
    software = ((statement or {}).get("software") or {}).get("name") or vendor.title
    m = Matrix(ehr, vendor, rest is not None, str(software))
    if rest is not None:
        for entry in rest.get("resource") or []:
            rtype = entry.get("type")
            if rtype not in RESOURCE_TYPES or rtype in NOT_SERVED:
                continue
            codes = {i.get("code") for i in entry.get("interaction") or []}
            m.cells[rtype] = {i: Cell(True, "statement") for i in codes & set(TYPE_INTERACTIONS)}
            m.params[rtype] = _param_defs(rtype, entry.get("searchParam") or [])
            m.conditional[rtype] = (bool(entry.get("conditionalCreate")),
                                    bool(entry.get("conditionalUpdate")))
        m.system = frozenset(i.get("code") for i in rest.get("interaction") or []
                             if i.get("code") in ("transaction", "batch"))
    elif vendor.assume_standard:
        for rtype in sorted(RESOURCE_TYPES - NOT_SERVED):
            m.cells[rtype] = {i: Cell(True, "assumed") for i in STANDARD}
            m.params[rtype] = _param_defs(rtype, None)
            m.conditional[rtype] = (True, False)
        m.system = frozenset({"transaction", "batch"})

    def set_cell(rtype: str, interaction: str, allowed: bool, source: str) -> None:
        interactions = TYPE_INTERACTIONS if interaction == "*" else (interaction,)
        row = m.cells.setdefault(rtype, {})
        for i in interactions:
            if allowed or i in row:
                row[i] = Cell(allowed, source)
        if allowed:
            m.params.setdefault(rtype, _param_defs(rtype, None))

    for entry in vendor.deny:
        set_cell(*override_target(entry), False, f"profile {vendor.name}")
    granted = _granted(granted_scopes)
    if granted is not None:
        for rtype, row in m.cells.items():
            may = granted.get(rtype, set()) | granted.get("*", set())
            for interaction, cell in row.items():
                if cell.allowed and interaction not in may:
                    row[interaction] = Cell(False, "scope")
    for entry in allow:
        set_cell(*override_target(entry), True, "override")
    for entry in deny:
        set_cell(*override_target(entry), False, "override")
    return m
