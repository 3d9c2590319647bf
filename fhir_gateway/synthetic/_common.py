"""Small builders of FHIR datatypes (references, codings, quantities, times) for the generator.

All times are in the clinic's fixed UTC offset (-05:00), so output does not depend on the
machine's time zone.
"""

from __future__ import annotations

import datetime as dt

from mappings import terminology as term

TZ = dt.timezone(dt.timedelta(hours=-5))
CURRENCY = "USD"


def ref(resource_type: str, rid: str, display: str | None = None) -> dict:
    out = {"reference": f"{resource_type}/{rid}"}
    if display:
        out["display"] = display
    return out


def coding(code: term.Code) -> dict:
    return {"system": code.system, "code": code.code, "display": code.display}


def concept(*codes: term.Code, text: str | None = None) -> dict:
    out: dict = {"coding": [coding(c) for c in codes]}
    if text:
        out["text"] = text
    return out


def ucum(value: float | int, unit: str, display: str | None = None) -> dict:
    return {"value": value, "unit": display or unit, "system": term.UCUM, "code": unit}


def money(amount: float) -> dict:
    return {"value": round(float(amount), 2), "currency": CURRENCY}


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


def iso(moment: dt.datetime) -> str:
    """A FHIR dateTime/instant with seconds and the clinic's offset."""
    return moment.isoformat(timespec="seconds")


def num(value: float, decimals: int) -> int | float:
    """A measured value rounded for display: an int when it has no decimals."""
    return int(round(value)) if decimals == 0 else round(value, decimals)


def weekday_on_or_before(day: dt.date) -> dt.date:
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return day


def npi(nine_digits: str) -> str:
    """A 10-digit NPI with its Luhn check digit (computed over the prefix 80840)."""
    total = 0
    for i, ch in enumerate(reversed("80840" + nine_digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return nine_digits + str((10 - total % 10) % 10)
