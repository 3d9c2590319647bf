"""FHIR search as data: parameter definitions, a parsed query, and the value grammars.

The gateway turns a query string into a `SearchQuery` once; adapters receive it already checked
(types known, prefixes valid, `_count` bounded). Value parsers raise `Invalid` naming the
parameter, so a bad value is a 400 before any adapter runs.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone

from adapters.errors import Invalid

PARAM_TYPES = ("token", "string", "date", "reference", "number", "quantity", "uri", "special")
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"missing", "not", "text"},
    "reference": {"missing"},
    "date": {"missing"},
    "uri": {"missing", "below", "above"},
    "number": {"missing"},
    "quantity": {"missing"},
}


@dataclass(frozen=True)
class SearchParamDef:
    """A search parameter an adapter supports for one type."""

    name: str
    type: str
    documentation: str = ""
    targets: tuple[str, ...] = ()  # for references: allowed target types


@dataclass
class ParamClause:
    """`name[:modifier]=v1,v2` : values are ORed; several clauses are ANDed."""

    name: str
    type: str
    values: list[str]
    modifier: str | None = None


@dataclass(frozen=True)
class IncludeSpec:
    """`_include=Source:param[:Target]` (or `_revinclude`)."""

    source_type: str
    param: str
    target_type: str | None = None

    def __str__(self) -> str:
        tail = f":{self.target_type}" if self.target_type else ""
        return f"{self.source_type}:{self.param}{tail}"


@dataclass
class SearchQuery:
    """A checked search: what to match, how to order, how much, and where to resume."""

    clauses: list[ParamClause] = field(default_factory=list)
    count: int = 50
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param, descending)
    include: list[IncludeSpec] = field(default_factory=list)
    revinclude: list[IncludeSpec] = field(default_factory=list)
    cursor: str | None = None
    summary_count: bool = False
    with_total: bool = True

    def add(self, name: str, type_: str, value: str, modifier: str | None = None) -> None:
        self.clauses.append(ParamClause(name, type_, [value], modifier))


# ---------------------------------------------------------------------------------------------
# Dates: every FHIR date/dateTime/instant is an interval [low, high] at its precision, in UTC,
# written as a fixed-width string so that string order is time order in any database.

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})"
    r"(T(?P<H>\d{2})(:(?P<M>\d{2})(:(?P<S>\d{2})(?P<f>\.\d+)?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
STAMP = "%Y-%m-%dT%H:%M:%S.%f"
LOWEST = "0001-01-01T00:00:00.000000"
HIGHEST = "9999-12-31T23:59:59.999999"


def _stamp(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime(STAMP) if dt.tzinfo else dt.strftime(STAMP)


def date_range(value: str) -> tuple[str, str]:
    """The [low, high] interval of a FHIR date, dateTime or instant, as UTC stamps.

    A value without a time zone is taken as UTC. Raises ValueError on an impossible date.
    """
    m = _DATE_RE.match(value.strip())
    if not m:
        raise ValueError(f"not a FHIR date/dateTime: {value!r}")
    g = m.groupdict()
    tz = UTC
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hh, mm = int(g["tz"][1:3]), int(g["tz"][4:6])
        tz = timezone(sign * timedelta(hours=hh, minutes=mm))
    year = int(g["y"])
    if g["m"] is None:
        lo = datetime(year, 1, 1, tzinfo=tz)
        hi = datetime(year + 1, 1, 1, tzinfo=tz) if year < 9999 else None
    elif g["d"] is None:
        month = int(g["m"])
        lo = datetime(year, month, 1, tzinfo=tz)
        hi = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=tz)
    elif g["H"] is None:
        lo = datetime(year, int(g["m"]), int(g["d"]), tzinfo=tz)
        hi = lo + timedelta(days=1)
    else:
        if g["M"] is None:
            raise ValueError(f"a time needs at least hours and minutes: {value!r}")
        second = int(g["S"] or 0)
        frac = g["f"]
        micro = int((frac[1:] + "000000")[:6]) if frac else 0
        lo = datetime(year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), second, micro,
                      tzinfo=tz)
        if frac:  # the interval is as wide as the precision written (.4 is a tenth)
            hi = lo + timedelta(microseconds=10 ** max(0, 6 - (len(frac) - 1)))
        elif g["S"] is not None:
            hi = lo + timedelta(seconds=1)
        else:
            hi = lo + timedelta(minutes=1)
    high = _stamp(hi - timedelta(microseconds=1)) if hi else HIGHEST
    return _stamp(lo), high


def parse_date_param(name: str, value: str) -> tuple[str, str, str]:
    """`[prefix]date` -> (prefix, low, high); Invalid names the parameter on a bad value."""
    prefix = "eq"
    if len(value) >= 2 and value[:2] in DATE_PREFIXES:
        prefix, value = value[:2], value[2:]
    elif value[:2].isalpha():
        raise Invalid(f"Unknown date prefix {value[:2]!r} in parameter {name!r}",
                      expression=name)
    try:
        low, high = date_range(value)
    except (ValueError, OverflowError) as exc:
        raise Invalid(f"Parameter {name!r}: {value!r} is not a valid FHIR date ({exc})",
                      expression=name) from None
    return prefix, low, high


def now_stamp() -> str:
    return datetime.now(UTC).strftime(STAMP)


def stamp_to_instant(stamp: str) -> str:
    """A stored stamp as a FHIR instant (millisecond precision, Z)."""
    return stamp[:23] + "Z"


def today() -> date:
    return datetime.now(UTC).date()


# ---------------------------------------------------------------------------------------------
# Tokens, strings, references

_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE_RE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


def parse_token(value: str) -> tuple[str | None, str | None]:
    """`[system]|[code]` or `code` -> (system, code); system '' means 'no system'.

    `code` alone -> (None, code); `system|` -> (system, None); `|code` -> ('', code).
    """
    if "|" not in value:
        return None, value
    system, _, code = value.partition("|")
    return system, (code or None)


def normalize_string(value: str) -> str:
    """Case- and accent-insensitive form used for string search (FHIR: 'starts with')."""
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def is_number(value: str) -> bool:
    """ASCII digits only (`str.isdigit` also accepts '²', which `int` refuses)."""
    return value.isascii() and value.isdigit()


def has_control_chars(value: str) -> bool:
    """FHIR strings may not hold characters below U+0020 other than tab, CR and LF."""
    return any(ord(c) < 32 and c not in "\t\r\n" for c in value)


def valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


def valid_type_name(value: str) -> bool:
    return bool(_TYPE_RE.match(value))


def parse_reference(name: str, value: str, targets: tuple[str, ...]) -> tuple[str | None, str]:
    """`id`, `Type/id` or an absolute URL ending in `Type/id` -> (type or None, id)."""
    ref = value.rstrip("/")
    if "/_history/" in ref:
        ref = ref.split("/_history/")[0]
    parts = ref.split("/")
    if len(parts) == 1:
        rtype, rid = None, parts[0]
    else:
        rtype, rid = parts[-2], parts[-1]
        if not valid_type_name(rtype):
            raise Invalid(f"Parameter {name!r}: {value!r} is not a reference", expression=name)
        if targets and rtype not in targets:
            raise Invalid(
                f"Parameter {name!r} refers to {', '.join(targets)}, not {rtype}",
                expression=name,
            )
    if not valid_id(rid):
        raise Invalid(f"Parameter {name!r}: {rid!r} is not a valid resource id",
                      expression=name)
    return rtype, rid
