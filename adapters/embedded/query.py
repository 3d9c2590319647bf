"""Build SQL for a FHIR search over the embedded store's index tables.

Each clause becomes `rid IN (subquery)` on one index table, values of a clause ORed, clauses
ANDed. Every value is a bound parameter; LIKE patterns escape their wildcards, so no search value
can change the shape of the query.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, false, not_, or_, select, true

from adapters.embedded.indexer import PATIENT_REF
from adapters.embedded.params import SORT_DATE
from adapters.embedded.schema import idx_date, idx_ref, idx_string, idx_token, resource
from adapters.errors import Invalid
from adapters.search import (
    ParamClause,
    normalize_string,
    parse_date_param,
    parse_reference,
    parse_token,
)
from mappings.compartment import requires_membership

_TABLE = {"token": idx_token, "string": idx_string, "date": idx_date, "reference": idx_ref}


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _date_condition(low_col, high_col, name: str, value: str) -> ColumnElement[bool]:
    prefix, slo, shi = parse_date_param(name, value)
    within = and_(low_col >= slo, high_col <= shi)
    if prefix == "eq":
        return within
    if prefix == "ne":
        return or_(low_col < slo, high_col > shi)
    if prefix == "gt":
        return high_col > shi
    if prefix == "lt":
        return low_col < slo
    if prefix == "ge":
        return or_(high_col > shi, within)
    if prefix == "le":
        return or_(low_col < slo, within)
    if prefix == "sa":
        return low_col > shi
    if prefix == "eb":
        return high_col < slo
    # ap: the intervals overlap (documented approximation of "approximately")
    return and_(low_col <= shi, high_col >= slo)


def _token_condition(value: str) -> ColumnElement[bool]:
    system, code = parse_token(value)
    parts = []
    if system == "":
        parts.append(idx_token.c.system.is_(None))
    elif system is not None:
        parts.append(idx_token.c.system == system)
    if code is not None:
        parts.append(idx_token.c.code == code)
    return and_(*parts) if parts else true()


def _value_condition(clause: ParamClause, targets: tuple[str, ...], value: str):
    if clause.type == "token":
        return _token_condition(value)
    if clause.type == "string":
        if clause.modifier == "exact":  # whole value, case and accents as written
            return idx_string.c.raw == value
        norm = normalize_string(value)
        pattern = ("%" if clause.modifier == "contains" else "") + _escape_like(norm) + "%"
        return idx_string.c.value.like(pattern, escape="\\")
    if clause.type == "date":
        return _date_condition(idx_date.c.low, idx_date.c.high, clause.name, value)
    if clause.type == "reference":
        rtype, rid = parse_reference(clause.name, value, targets)
        cond = idx_ref.c.target_id == rid
        return and_(cond, idx_ref.c.target_type == rtype) if rtype else cond
    raise Invalid(f"Search parameter type {clause.type!r} is not supported",
                  expression=clause.name)


def clause_condition(rtype: str, clause: ParamClause,
                     targets: tuple[str, ...] = ()) -> ColumnElement[bool]:
    """The WHERE condition on `resource` for one clause."""
    if clause.name == "_id":
        ids = [v for v in clause.values if v]
        cond = resource.c.id.in_(ids)
        return not_(cond) if clause.modifier == "not" else cond
    if clause.name == "_compartment":
        return _compartment_condition(rtype, clause)
    if clause.name == "_lastUpdated":
        col = resource.c.last_updated
        return or_(*[_date_condition(col, col, clause.name, v) for v in clause.values])
    table = _TABLE.get(clause.type)
    if table is None:
        raise Invalid(f"Search parameter type {clause.type!r} is not supported",
                      expression=clause.name)
    base = select(table.c.rid).where(table.c.rtype == rtype, table.c.param == clause.name)
    if clause.modifier == "missing":
        flag = clause.values[-1].lower()
        if flag not in ("true", "false"):
            raise Invalid(f"{clause.name}:missing takes true or false", expression=clause.name)
        present = resource.c.rid.in_(base)
        return not_(present) if flag == "true" else present
    matches = or_(*[_value_condition(clause, targets, v) for v in clause.values]) \
        if clause.values else false()
    subquery = base.where(matches)
    if clause.modifier == "not":
        return not_(resource.c.rid.in_(subquery))
    return resource.c.rid.in_(subquery)


def _compartment_condition(rtype: str, clause: ParamClause) -> ColumnElement[bool]:
    """Exactly the resources `mappings.compartment.in_compartment` lets the patient see."""
    patient = clause.values[0].rsplit("/", 1)[-1] if clause.values else ""
    if rtype == "Patient":
        return resource.c.id == patient
    refs = select(idx_ref.c.rid).where(idx_ref.c.rtype == rtype,
                                       idx_ref.c.param == PATIENT_REF)
    other = resource.c.rid.in_(refs.where(idx_ref.c.target_id != patient))
    if requires_membership(rtype):
        return and_(resource.c.rid.in_(refs.where(idx_ref.c.target_id == patient)), not_(other))
    return not_(other)


def sort_column(rtype: str, key: str):
    """The resource column that orders by `key`, or Invalid when the type cannot sort by it."""
    if key == "_lastUpdated":
        return resource.c.last_updated
    if key == "_id":
        return resource.c.id
    primary = SORT_DATE.get(rtype)
    if primary and key in (primary, "date"):
        return resource.c.sort_date
    options = ", ".join(filter(None, ["_lastUpdated", "_id", primary]))
    raise Invalid(f"{rtype} cannot be sorted by {key!r}; it sorts by {options}",
                  expression="_sort")
