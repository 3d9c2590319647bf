"""A patient's health-tracker reading (portal form, app or home device) as FHIR R4 vital signs.

Patients enter readings in whatever unit their scale or meter shows (lb, degF, mmol/L, ...).
The gateway stores vital-signs Observations in one UCUM canonical unit per measurement, so that
charts, alerts and duplicate checks compare like with like. This module parses and checks a
reading (refusing implausible or malformed values with a message a patient can act on),
converts it, builds the Observation JSON, and offers a duplicate key and a small documented
alert rule set. Pure: standard library plus `mappings.terminology`, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from mappings.terminology import (
    CATEGORY_VITAL_SIGNS,
    LAB_TESTS,
    LOINC,
    UCUM,
    VITAL_SIGNS,
)

__all__ = [
    "ALERT_RULES",
    "KINDS",
    "AlertRule",
    "Conversion",
    "KindSpec",
    "Reading",
    "ReadingError",
    "alerts",
    "build_observations",
    "duplicate_key",
    "from_canonical",
    "parse_reading",
    "to_canonical",
]

#: How far in the future an effective time may lie (clock skew of phones and devices).
FUTURE_TOLERANCE = timedelta(minutes=5)


class ReadingError(ValueError):
    """A reading the gateway refuses; `field` names the input parameter at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Conversion:
    """Affine conversion of an input unit to the canonical one: (x + offset) * factor."""

    factor: float
    offset: float = 0.0

    def to_canonical(self, value: float) -> float:
        return (value + self.offset) * self.factor

    def from_canonical(self, value: float) -> float:
        return value / self.factor - self.offset


_SAME = Conversion(1.0)


@dataclass(frozen=True)
class KindSpec:
    """One kind of reading: its LOINC code, canonical UCUM unit, accepted units, plausible range.

    `low`/`high` are the inclusive plausible range in the canonical unit (None for the blood
    pressure panel, whose `components` carry the ranges). `decimals` is the rounding of the
    stored value; `integer` kinds (steps) refuse fractional input.
    """

    key: str
    label: str  # plain words, for messages
    loinc: str
    display: str
    ucum: str  # canonical UCUM code
    unit: str  # human-readable unit of the canonical one
    units: Mapping[str, Conversion]  # accepted input units (as entered) -> canonical
    low: float | None
    high: float | None
    decimals: int
    integer: bool = False
    extra_codings: tuple[tuple[str, str], ...] = ()  # further LOINC (code, display)
    components: tuple[KindSpec, ...] = ()

    @property
    def unit_required(self) -> bool:
        """Whether the unit must be given (it may be left out when every unit means the same)."""
        return any(c != _SAME for c in self.units.values())


def _vital(key: str, kind: str, label: str, units: dict[str, Conversion], low: float | None,
           high: float | None, decimals: int, **kw: Any) -> KindSpec:
    v = VITAL_SIGNS[key]
    return KindSpec(kind, label, v.loinc, v.display, v.unit, v.unit_display,
                    MappingProxyType(units), low, high, decimals, extra_codings=v.extra_loinc,
                    **kw)


_LB = 0.45359237  # kg per avoirdupois pound (exact)
_IN = 2.54  # cm per international inch (exact)
GLUCOSE_MG_DL_PER_MMOL_L = 18.016  # molar mass of glucose 180.16 g/mol
_MM_HG = {"mm[Hg]": _SAME, "mmHg": _SAME}

_SYSTOLIC = _vital("systolic", "systolic", "systolic pressure", _MM_HG, 50, 300, 0)
_DIASTOLIC = _vital("diastolic", "diastolic", "diastolic pressure", _MM_HG, 20, 200, 0)
_BLOOD_GLUCOSE = LAB_TESTS["blood-glucose"]

KINDS: dict[str, KindSpec] = {k.key: k for k in (
    _vital("bp", "blood-pressure", "blood pressure", _MM_HG, None, None, 0,
           components=(_SYSTOLIC, _DIASTOLIC)),
    _vital("weight", "weight", "weight",
           {"kg": _SAME, "g": Conversion(0.001), "lb": Conversion(_LB),
            "[lb_av]": Conversion(_LB)}, 0.5, 500, 2),
    _vital("height", "height", "height",
           {"cm": _SAME, "m": Conversion(100.0), "in": Conversion(_IN),
            "[in_i]": Conversion(_IN), "ft": Conversion(12 * _IN),
            "[ft_i]": Conversion(12 * _IN)}, 30, 272, 1),
    _vital("bmi", "bmi", "BMI", {"kg/m2": _SAME}, 8, 100, 1),
    _vital("heart-rate", "heart-rate", "heart rate", {"/min": _SAME, "bpm": _SAME}, 20, 300, 0),
    _vital("spo2", "spo2", "oxygen saturation", {"%": _SAME}, 50, 100, 0),
    _vital("temperature", "temperature", "temperature",
           {"Cel": _SAME, "degF": Conversion(5 / 9, -32.0),
            "[degF]": Conversion(5 / 9, -32.0)}, 30, 45, 1),
    KindSpec("glucose", "blood glucose", _BLOOD_GLUCOSE.loinc, _BLOOD_GLUCOSE.display,
             _BLOOD_GLUCOSE.unit, "mg/dL",
             MappingProxyType({"mg/dL": _SAME,
                               "mmol/L": Conversion(GLUCOSE_MG_DL_PER_MMOL_L)}),
             10, 1500, 0),
    KindSpec("steps", "steps", "55423-8", "Number of steps in unspecified time Pedometer",
             "{steps}", "steps", MappingProxyType({"steps": _SAME, "{steps}": _SAME}),
             0, 100000, 0, integer=True),
)}

_BMI = KINDS["bmi"]
_BY_CODE: dict[str, KindSpec] = {
    s.loinc: s for k in KINDS.values() for s in (k, *k.components)}

_FIELDS = ("kind", "effective", "value", "unit", "systolic", "diastolic", "device", "note")


@dataclass(frozen=True)
class Reading:
    """One reading as entered; checked by `build_observations` (and by `parse_reading`)."""

    kind: str
    effective: str  # FHIR dateTime with seconds and a zone
    value: float | None = None
    unit: str | None = None  # as entered; may be left out only where all units mean the same
    systolic: float | None = None  # blood pressure only, mm[Hg]
    diastolic: float | None = None
    device: str | None = None  # "Device/<id>"
    note: str | None = None


# --- Checks ----------------------------------------------------------------------------------

_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_FHIR_ID = r"[A-Za-z0-9\-.]{1,64}"
_DEVICE_REF = re.compile(rf"Device/{_FHIR_ID}")
_PATIENT_ID = re.compile(_FHIR_ID)
# A dateTime down to the second with a zone (FHIR allows partial dates; those have no zone).
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-](?:0\d|1[0-3]):[0-5]\d|[+-]14:00)")


def _fmt(x: float) -> str:
    return f"{round(x, 2):g}"


def _number(field: str, raw: object) -> float:
    """A finite, non-negative number from a number (int, float, Decimal) or a decimal string."""
    if isinstance(raw, bool):
        raise ReadingError(field, f"{field} must be a number, not true/false")
    if isinstance(raw, str):
        text = raw.strip()
        if not _DECIMAL.fullmatch(text):
            raise ReadingError(field, f"{field} must be a number, got {raw!r}")
        raw = text
    elif not isinstance(raw, int | float | Decimal):
        raise ReadingError(field, f"{field} must be a number, got {type(raw).__name__}")
    try:
        value = float(raw)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise ReadingError(field, f"{field} must be a finite number")
    if value < 0:
        raise ReadingError(field, f"{field} may not be negative (got {_fmt(value)})")
    return value + 0.0  # -0.0 -> 0.0


def _spec(kind: object) -> KindSpec:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ReadingError("kind", f"unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return KINDS[kind]


def _conversion(spec: KindSpec, unit: object, field: str = "unit") -> Conversion:
    if not isinstance(unit, str) or unit not in spec.units:
        raise ReadingError(field, f"unit {unit!r} is not accepted for {spec.label}; use one of "
                                  f"{', '.join(spec.units)}")
    return spec.units[unit]


def _unit(spec: KindSpec, unit: str | None) -> str:
    """The entered unit, or the canonical one where the unit may be left out."""
    if unit is None:
        if spec.unit_required:
            raise ReadingError("unit", f"the unit of the {spec.label} is missing; use one of "
                                       f"{', '.join(spec.units)}")
        return spec.ucum
    _conversion(spec, unit)
    return unit


def _plausible(spec: KindSpec, field: str, value: float, unit: str) -> float:
    """The canonical value rounded for storage, refused when outside the plausible range."""
    assert spec.low is not None and spec.high is not None
    if spec.integer and value != int(value):
        raise ReadingError(field, f"{spec.label} must be a whole number (got {_fmt(value)})")
    canonical = round(spec.units[unit].to_canonical(value), spec.decimals)
    if not spec.low <= canonical <= spec.high:
        message = (f"{spec.label} of {_fmt(value)} {unit} is not plausible; the accepted range "
                   f"is {_fmt(spec.low)} to {_fmt(spec.high)} {spec.unit}")
        if spec.units[unit] != _SAME:
            lo, hi = (spec.units[unit].from_canonical(x) for x in (spec.low, spec.high))
            message += f" ({_fmt(lo)} to {_fmt(hi)} {unit})"
        raise ReadingError(field, message)
    return canonical


def _effective(effective: object, now: datetime | None) -> datetime:
    if not isinstance(effective, str) or not effective.strip():
        raise ReadingError("effective", "the time of the reading is missing")
    text = effective.strip()
    if not _DATETIME.fullmatch(text):
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?", text):
            raise ReadingError("effective", f"time {effective!r} has no time zone; give it as "
                                            "e.g. 2024-05-01T08:30:00+02:00 or ...Z")
        raise ReadingError("effective", f"time {effective!r} is not a date and time with seconds "
                                        "and a zone, e.g. 2024-05-01T08:30:00Z")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ReadingError("effective",
                           f"time {effective!r} is not a valid date and time") from None
    if now is not None and when > now + FUTURE_TOLERANCE:
        raise ReadingError("effective", f"time {effective!r} is in the future (more than "
                                        f"{FUTURE_TOLERANCE.seconds // 60} minutes after now)")
    return when


def _device(device: object) -> str | None:
    if device is None:
        return None
    if not isinstance(device, str) or not _DEVICE_REF.fullmatch(device.strip()):
        raise ReadingError("device", f"device must be a reference Device/<id>, got {device!r}")
    return device.strip()


def _note(note: object) -> str | None:
    if note is None:
        return None
    if not isinstance(note, str):
        raise ReadingError("note", "note must be text")
    return note.strip() or None


def _check_shape(spec: KindSpec, value: object, systolic: object, diastolic: object) -> None:
    """Blood pressure has systolic and diastolic but no value; every other kind the reverse."""
    if spec.components:
        if value is not None:
            raise ReadingError("value", "blood pressure takes systolic and diastolic, not value")
        for name, given in (("systolic", systolic), ("diastolic", diastolic)):
            if given is None:
                raise ReadingError(name, f"the {name} pressure is missing")
    else:
        if value is None:
            raise ReadingError("value", f"the {spec.label} value is missing")
        for name, given in (("systolic", systolic), ("diastolic", diastolic)):
            if given is not None:
                raise ReadingError(name, f"{name} is for blood pressure only, not {spec.label}")


# --- Public API ------------------------------------------------------------------------------

def parse_reading(data: Mapping[str, Any]) -> Reading:
    """A `Reading` from a JSON body or form fields (numbers may be strings).

    Refuses (ReadingError) unknown fields, an unknown kind, missing required fields, numbers
    that are not finite non-negative numbers, unknown units and malformed device references.
    Empty strings count as absent. Plausibility and the time against the clock are checked by
    `build_observations`, which needs `now`.
    """
    if not isinstance(data, Mapping):
        raise ReadingError("reading", "a reading must be an object of fields")
    for key in data:
        if key not in _FIELDS:
            raise ReadingError(str(key), f"unknown field {key!r}; fields: {', '.join(_FIELDS)}")
    fields = {k: (None if isinstance(v, str) and not v.strip() else v) for k, v in data.items()}
    if fields.get("kind") is None:
        raise ReadingError("kind", "the kind of reading is missing")
    spec = _spec(fields["kind"])
    _check_shape(spec, fields.get("value"), fields.get("systolic"), fields.get("diastolic"))
    numbers = {name: _number(name, fields[name]) for name in ("value", "systolic", "diastolic")
               if fields.get(name) is not None}
    unit = fields.get("unit")
    if unit is not None:
        unit = unit.strip() if isinstance(unit, str) else unit
        _conversion(spec, unit)
    _unit(spec, unit)
    _effective(fields.get("effective"), None)
    return Reading(kind=spec.key, effective=fields["effective"].strip(), unit=unit,
                   device=_device(fields.get("device")), note=_note(fields.get("note")),
                   **numbers)


def to_canonical(kind: str, value: float, unit: str) -> float:
    """`value` in `unit` converted to the kind's canonical UCUM unit (not rounded)."""
    return _conversion(_spec(kind), unit).to_canonical(value)


def from_canonical(kind: str, value: float, unit: str) -> float:
    """The inverse of `to_canonical`: a canonical value in `unit` (for display)."""
    return _conversion(_spec(kind), unit).from_canonical(value)


def _coding(code: str, display: str) -> dict[str, str]:
    return {"system": LOINC, "code": code, "display": display}


def _code(spec: KindSpec) -> dict[str, Any]:
    codings = [_coding(spec.loinc, spec.display)]
    codings += [_coding(code, display) for code, display in spec.extra_codings]
    return {"coding": codings, "text": spec.display}


def _quantity(spec: KindSpec, value: float) -> dict[str, Any]:
    number: float | int = int(value) if spec.decimals == 0 else value
    return {"value": number, "unit": spec.unit, "system": UCUM, "code": spec.ucum}


def _observation(spec: KindSpec, patient_id: str, effective: str) -> dict[str, Any]:
    category = CATEGORY_VITAL_SIGNS
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": category.system, "code": category.code,
                                  "display": category.display}],
                      "text": category.display}],
        "code": _code(spec),
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": effective,
        "performer": [{"reference": f"Patient/{patient_id}"}],
    }


def _companion(field: str, raw: object, spec: KindSpec, scale: float) -> float:
    """The stored height (m) or weight (kg) a BMI is derived from, checked like a reading."""
    value = _number(field, raw)
    assert spec.low is not None and spec.high is not None
    low, high = spec.low * scale, spec.high * scale
    if not low <= value <= high:
        unit = "m" if field == "height_m" else "kg"
        raise ReadingError(field, f"{field} {_fmt(value)} is not plausible; the accepted range "
                                  f"is {_fmt(low)} to {_fmt(high)} {unit}")
    return value


def build_observations(reading: Reading, patient_id: str, now: datetime, *,
                       height_m: float | None = None,
                       weight_kg: float | None = None) -> list[dict[str, Any]]:
    """FHIR R4 vital-signs Observations (JSON dicts without id) for one checked reading.

    The first Observation is the reading itself, in the canonical UCUM unit, rounded per kind;
    blood pressure is the 85354-9 panel with systolic/diastolic components and no value. When a
    weight comes with the patient's `height_m`, or a height with `weight_kg`, a second
    Observation carries the BMI (39156-5) computed from the two. That BMI has no `derivedFrom`:
    the ids of the source Observations are not known until they are stored (the gateway may add
    the references then); it carries no device or note, as the device did not measure it.

    Raises ReadingError for anything implausible or malformed, including an effective time
    without a zone or more than 5 minutes after `now`, and a BMI outside 8-100 kg/m2 (then the
    field is the companion measure, `height_m` or `weight_kg`). `now` must be timezone-aware.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if not isinstance(patient_id, str) or not _PATIENT_ID.fullmatch(patient_id):
        raise ReadingError("patient_id", f"not a FHIR id: {patient_id!r}")
    spec = _spec(reading.kind)
    _check_shape(spec, reading.value, reading.systolic, reading.diastolic)
    unit = _unit(spec, reading.unit)
    _effective(reading.effective, now)
    effective = reading.effective.strip()
    obs = _observation(spec, patient_id, effective)
    device, note = _device(reading.device), _note(reading.note)
    if device is not None:
        obs["device"] = {"reference": device}
    if note is not None:
        obs["note"] = [{"text": note}]

    exact = 0.0  # the unrounded canonical value, for a derived BMI
    if spec.components:
        systolic, diastolic = (_plausible(part, part.key, _number(part.key, raw), unit)
                               for part, raw in zip(spec.components,
                                                    (reading.systolic, reading.diastolic),
                                                    strict=True))
        if systolic <= diastolic:
            raise ReadingError("diastolic", f"diastolic pressure ({_fmt(diastolic)} mmHg) must be "
                                            f"lower than systolic ({_fmt(systolic)} mmHg)")
        obs["component"] = [{"code": _code(part), "valueQuantity": _quantity(part, value)}
                            for part, value in zip(spec.components, (systolic, diastolic),
                                                   strict=True)]
    else:
        value = _number("value", reading.value)
        obs["valueQuantity"] = _quantity(spec, _plausible(spec, "value", value, unit))
        exact = to_canonical(spec.key, value, unit)
    result = [obs]

    bmi: float | None = None
    if spec.key == "weight" and height_m is not None:
        height = _companion("height_m", height_m, KINDS["height"], 0.01)
        bmi, companion = exact / height**2, "height_m"
    elif spec.key == "height" and weight_kg is not None:
        weight = _companion("weight_kg", weight_kg, KINDS["weight"], 1.0)
        bmi, companion = weight / (exact / 100) ** 2, "weight_kg"
    if bmi is not None:
        rounded = round(bmi, _BMI.decimals)
        assert _BMI.low is not None and _BMI.high is not None
        if not _BMI.low <= rounded <= _BMI.high:
            raise ReadingError(companion, f"the BMI computed from this {spec.label} and "
                                          f"{companion} is {_fmt(bmi)}, outside the plausible "
                                          f"range {_fmt(_BMI.low)} to {_fmt(_BMI.high)} kg/m2")
        derived = _observation(_BMI, patient_id, effective)
        derived["valueQuantity"] = _quantity(_BMI, rounded)
        result.append(derived)
    return result


def _utc(effective: object) -> object:
    """An effective time as a UTC instant (so +01:00 and Z spellings compare equal)."""
    if isinstance(effective, str):
        try:
            when = datetime.fromisoformat(effective)
        except ValueError:
            return effective
        if when.tzinfo is not None:
            return when.astimezone(UTC).isoformat()
    return effective


def _first_code(concept: Mapping[str, Any] | None) -> str | None:
    codings = (concept or {}).get("coding") or [{}]
    return codings[0].get("code")


def duplicate_key(observation: Mapping[str, Any]) -> tuple:
    """(code, effective, values, unit, device) of an Observation built here.

    Two readings of one patient with equal keys are the same reading entered twice, so a
    gateway can refuse the second. The effective time is compared as an instant; values are a
    1-tuple of the value, or for a panel ((component code, value), ...) in component order;
    unit is the UCUM code; device the reference or None. The patient is not part of the key:
    compare within one patient's Observations.
    """
    components = observation.get("component") or []
    if components:
        values: tuple = tuple((_first_code(c.get("code")),
                               float(c.get("valueQuantity", {}).get("value", math.nan)))
                              for c in components)
        units = {c.get("valueQuantity", {}).get("code") for c in components}
        unit = units.pop() if len(units) == 1 else tuple(sorted(units, key=str))
    else:
        quantity = observation.get("valueQuantity") or {}
        raw = quantity.get("value")
        values = (None if raw is None else float(raw),)
        unit = quantity.get("code")
    device = (observation.get("device") or {}).get("reference")
    return (_first_code(observation.get("code")), _utc(observation.get("effectiveDateTime")),
            values, unit, device)


# --- Alerts ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlertRule:
    """An alert fires when the value of `code` (in `unit`) compares to `threshold` as given."""

    code: str  # LOINC of the Observation or of a component
    comparator: str  # "<", ">" or ">="
    threshold: float
    unit: str  # UCUM
    message: str


#: The rule set of `alerts`, in plain words:
#: - blood pressure: systolic 180 mmHg or more, or diastolic 120 mmHg or more, is a hypertensive
#:   crisis; systolic below 90 or diastolic below 60 mmHg is low blood pressure;
#: - oxygen saturation below 90 %;
#: - heart rate below 40 or above 130 beats per minute;
#: - blood glucose below 54 or above 400 mg/dL;
#: - temperature 39.4 Cel (103 degF) or more.
ALERT_RULES: tuple[AlertRule, ...] = (
    AlertRule("8480-6", ">=", 180, "mm[Hg]",
              "Hypertensive crisis: systolic blood pressure is 180 mmHg or higher"),
    AlertRule("8462-4", ">=", 120, "mm[Hg]",
              "Hypertensive crisis: diastolic blood pressure is 120 mmHg or higher"),
    AlertRule("8480-6", "<", 90, "mm[Hg]", "Low blood pressure: systolic is below 90 mmHg"),
    AlertRule("8462-4", "<", 60, "mm[Hg]", "Low blood pressure: diastolic is below 60 mmHg"),
    AlertRule("59408-5", "<", 90, "%", "Low oxygen saturation: below 90 %"),
    AlertRule("8867-4", "<", 40, "/min", "Low heart rate: below 40 beats per minute"),
    AlertRule("8867-4", ">", 130, "/min", "High heart rate: above 130 beats per minute"),
    AlertRule("2339-0", "<", 54, "mg/dL", "Low blood glucose: below 54 mg/dL"),
    AlertRule("2339-0", ">", 400, "mg/dL", "High blood glucose: above 400 mg/dL"),
    AlertRule("8310-5", ">=", 39.4, "Cel", "High fever: temperature is 39.4 C (103 F) or higher"),
)

_COMPARE = {"<": lambda a, b: a < b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _measured(code: str | None, quantity: Mapping[str, Any] | None) -> tuple[str, float] | None:
    """(code, value in the canonical unit) of a coded quantity, or None when not comparable."""
    if code not in _BY_CODE or not quantity:
        return None
    value, unit = quantity.get("value"), quantity.get("code")
    spec = _BY_CODE[code]
    if isinstance(value, bool) or not isinstance(value, int | float) or unit not in spec.units:
        return None
    return code, spec.units[unit].to_canonical(value)


def alerts(observation: Mapping[str, Any]) -> list[str]:
    """Messages of the ALERT_RULES that an Observation meets, in rule order; [] when none.

    The value and components are read in their UCUM unit (converted when it is another accepted
    unit, e.g. [degF] or mmol/L); values of unknown codes or units raise no alert.
    """
    measured = [_measured(_first_code(observation.get("code")), observation.get("valueQuantity"))]
    measured += [_measured(_first_code(c.get("code")), c.get("valueQuantity"))
                 for c in observation.get("component") or []]
    values = [m for m in measured if m is not None]
    return [rule.message for rule in ALERT_RULES
            if any(code == rule.code and _COMPARE[rule.comparator](value, rule.threshold)
                   for code, value in values)]
