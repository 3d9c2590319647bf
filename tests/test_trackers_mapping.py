"""Health-tracker readings -> FHIR R4 vital-signs Observations (mappings.portal.trackers).

Every built Observation is validated with fhir.resources (R4B models) and with fhirclient
(FHIR 4.0.1, strict), so the JSON is valid for both the R4B and R4 object models.
"""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhirclient.models.observation import Observation as ClientObservation
from hypothesis import given, settings
from hypothesis import strategies as st

from mappings.portal.trackers import (
    ALERT_RULES,
    KINDS,
    Reading,
    ReadingError,
    alerts,
    build_observations,
    duplicate_key,
    from_canonical,
    parse_reading,
    to_canonical,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WHEN = "2024-05-01T08:30:00+02:00"
PATIENT = "pat-1"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# One reading per kind and accepted unit: (kind, value, unit, canonical value stored).
SAMPLES = [
    ("weight", 70, "kg", 70), ("weight", 70500, "g", 70.5), ("weight", 150, "lb", 68.04),
    ("weight", 150, "[lb_av]", 68.04),
    ("height", 177.8, "cm", 177.8), ("height", 1.778, "m", 177.8), ("height", 70, "in", 177.8),
    ("height", 70, "[in_i]", 177.8), ("height", 6, "ft", 182.9), ("height", 6, "[ft_i]", 182.9),
    ("bmi", 24.2, "kg/m2", 24.2),
    ("heart-rate", 72, "/min", 72), ("heart-rate", 72, "bpm", 72),
    ("spo2", 97, "%", 97),
    ("temperature", 37.2, "Cel", 37.2), ("temperature", 98.6, "degF", 37.0),
    ("temperature", 98.6, "[degF]", 37.0),
    ("glucose", 110, "mg/dL", 110), ("glucose", 5.5, "mmol/L", 99),
    ("steps", 8042, "steps", 8042), ("steps", 8042, "{steps}", 8042),
]

CANONICAL = {"blood-pressure": ("85354-9", "mm[Hg]"), "weight": ("29463-7", "kg"),
             "height": ("8302-2", "cm"), "bmi": ("39156-5", "kg/m2"),
             "heart-rate": ("8867-4", "/min"), "spo2": ("59408-5", "%"),
             "temperature": ("8310-5", "Cel"), "glucose": ("2339-0", "mg/dL"),
             "steps": ("55423-8", "{steps}")}

UNIT_PAIRS = [(kind, unit) for kind, spec in KINDS.items() if not spec.components
              for unit in spec.units]


def assert_valid(obs: dict) -> None:
    """Valid for fhir.resources R4B and for fhirclient (FHIR 4.0.1) in strict mode."""
    get_fhir_model_class("Observation").model_validate(copy.deepcopy(obs))
    ClientObservation(copy.deepcopy(obs), strict=True).as_json()


def reading(kind: str = "heart-rate", **kw) -> Reading:
    fields = {"effective": WHEN, "value": 72, "unit": None} | kw
    if kind == "blood-pressure":
        fields = {"systolic": 120, "diastolic": 80, "effective": WHEN} | kw
    return Reading(kind=kind, **fields)


def build(r: Reading, **kw) -> list[dict]:
    obs = build_observations(r, PATIENT, NOW, **kw)
    for o in obs:
        assert_valid(o)
    return obs


def refused(field: str, fn, *args, **kw) -> ReadingError:
    with pytest.raises(ReadingError) as info:
        fn(*args, **kw)
    assert info.value.field == field, str(info.value)
    return info.value


# --- Building ---------------------------------------------------------------------------------

def test_samples_cover_every_kind_and_unit():
    covered = {(kind, unit) for kind, _, unit, _ in SAMPLES}
    assert covered == set(UNIT_PAIRS)
    assert set(KINDS) == set(CANONICAL)


@pytest.mark.parametrize(("kind", "value", "unit", "stored"), SAMPLES)
def test_every_kind_and_unit_builds_a_valid_observation(kind, value, unit, stored):
    [obs] = build(reading(kind, value=value, unit=unit))
    code, ucum = CANONICAL[kind]
    assert obs["resourceType"] == "Observation" and "id" not in obs
    assert obs["status"] == "final"
    assert obs["category"][0]["coding"][0] == {"system": CATEGORY, "code": "vital-signs",
                                               "display": "Vital Signs"}
    assert obs["code"]["coding"][0]["system"] == "http://loinc.org"
    assert obs["code"]["coding"][0]["code"] == code
    assert obs["code"]["text"]
    assert obs["subject"] == {"reference": f"Patient/{PATIENT}"}
    assert obs["performer"] == [{"reference": f"Patient/{PATIENT}"}]
    assert obs["effectiveDateTime"] == WHEN
    assert "device" not in obs and "note" not in obs
    quantity = obs["valueQuantity"]
    assert quantity["system"] == "http://unitsofmeasure.org"
    assert quantity["code"] == ucum
    assert quantity["unit"] == KINDS[kind].unit
    assert quantity["value"] == pytest.approx(stored)


def test_blood_pressure_is_a_panel_with_components():
    [obs] = build(reading("blood-pressure", systolic=128, diastolic=82, device="Device/cuff-7",
                          note="after a walk", unit="mmHg"))
    assert obs["code"]["coding"][0]["code"] == "85354-9"
    assert "valueQuantity" not in obs
    parts = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in obs["component"]}
    assert parts == {
        "8480-6": {"value": 128, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                   "code": "mm[Hg]"},
        "8462-4": {"value": 82, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                   "code": "mm[Hg]"},
    }
    assert obs["device"] == {"reference": "Device/cuff-7"}
    assert obs["note"] == [{"text": "after a walk"}]


def test_device_and_note_are_carried():
    [obs] = build(reading("spo2", value=96, unit="%", device="Device/oxi-1", note=" at rest "))
    assert obs["device"] == {"reference": "Device/oxi-1"}
    assert obs["note"] == [{"text": "at rest"}]


def test_values_are_rounded_per_kind():
    assert build(reading("heart-rate", value=71.6))[0]["valueQuantity"]["value"] == 72
    assert build(reading("weight", value=70.1234, unit="kg"))[0]["valueQuantity"]["value"] == 70.12
    assert build(reading("height", value=70.04, unit="in"))[0]["valueQuantity"]["value"] == 177.9
    glucose = build(reading("glucose", value=5.5, unit="mmol/L"))[0]["valueQuantity"]["value"]
    assert glucose == 99 and isinstance(glucose, int)


def test_bmi_is_derived_from_weight_and_known_height():
    weight, bmi = build(reading("weight", value=70, unit="kg"), height_m=1.75)
    assert weight["code"]["coding"][0]["code"] == "29463-7"
    assert bmi["code"]["coding"][0]["code"] == "39156-5"
    assert bmi["valueQuantity"] == {"value": 22.9, "unit": "kg/m2",
                                    "system": "http://unitsofmeasure.org", "code": "kg/m2"}
    assert bmi["effectiveDateTime"] == WHEN
    assert "derivedFrom" not in bmi and "device" not in bmi


def test_bmi_is_derived_from_height_and_known_weight():
    _, bmi = build(reading("height", value=70, unit="in"), weight_kg=80)
    assert bmi["valueQuantity"]["value"] == pytest.approx(round(80 / 1.778**2, 1))  # 25.3


def test_bmi_uses_the_unrounded_weight():
    _, bmi = build(reading("weight", value=200, unit="lb"), height_m=1.8)
    assert bmi["valueQuantity"]["value"] == round(200 * 0.45359237 / 1.8**2, 1)


def test_no_bmi_without_the_other_measure():
    assert len(build(reading("weight", value=70, unit="kg"))) == 1
    assert len(build(reading("height", value=170, unit="cm"))) == 1
    assert len(build(reading("weight", value=70, unit="kg"), weight_kg=70)) == 1
    assert len(build(reading("heart-rate"), height_m=1.7, weight_kg=70)) == 1


def test_implausible_companion_or_bmi_refused():
    refused("height_m", build_observations, reading("weight", value=70, unit="kg"), PATIENT, NOW,
            height_m=175)
    refused("weight_kg", build_observations, reading("height", value=170, unit="cm"), PATIENT,
            NOW, weight_kg=math.nan)
    error = refused("height_m", build_observations, reading("weight", value=300, unit="kg"),
                    PATIENT, NOW, height_m=0.5)
    assert "8 to 100 kg/m2" in error.message


@settings(max_examples=25)
@given(data=st.data())
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_any_plausible_reading_builds_valid_observations(kind, data):
    spec = KINDS[kind]
    if spec.components:
        diastolic = data.draw(st.integers(20, 199))
        systolic = data.draw(st.integers(max(50, diastolic + 1), 300))
        r = reading(kind, systolic=systolic, diastolic=diastolic)
    else:
        unit = data.draw(st.sampled_from(sorted(spec.units)))
        conv = spec.units[unit]
        lo, hi = sorted(conv.from_canonical(x) for x in (spec.low, spec.high))
        if spec.integer:
            value = data.draw(st.integers(int(lo), int(hi)))
        else:
            value = data.draw(st.floats(lo, hi, allow_nan=False))
            if not spec.low <= round(to_canonical(kind, value, unit), spec.decimals) <= spec.high:
                return  # rounds past a bound (floating error at the edge)
        r = reading(kind, value=value, unit=unit, device="Device/d1", note="n")
    observations = build(r)
    for obs in observations:
        assert alerts(obs) == alerts(copy.deepcopy(obs))
        quantities = [c["valueQuantity"] for c in obs.get("component", [])]
        quantities += [obs["valueQuantity"]] if "valueQuantity" in obs else []
        assert quantities
        for q in quantities:
            assert math.isfinite(q["value"]) and q["value"] >= 0


@settings(max_examples=60)
@given(weight=st.floats(0.5, 500), height_m=st.floats(0.3, 2.72))
def test_bmi_derived_or_refused_for_any_plausible_pair(weight, height_m):
    bmi = round(weight / height_m**2, 1)
    r = reading("weight", value=weight, unit="kg")
    if round(weight, 2) < 0.5 or round(weight, 2) > 500:
        return
    if 8 <= bmi <= 100:
        _, derived = build(r, height_m=height_m)
        assert derived["valueQuantity"]["value"] == bmi
    else:
        refused("height_m", build_observations, r, PATIENT, NOW, height_m=height_m)


# --- Conversions ------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "value", "unit", "canonical"), [
    ("weight", 150, "lb", 68.0388555), ("weight", 150, "[lb_av]", 68.0388555),
    ("weight", 1500, "g", 1.5), ("temperature", 98.6, "degF", 37.0),
    ("temperature", 32, "[degF]", 0.0), ("temperature", 212, "degF", 100.0),
    ("glucose", 5.5, "mmol/L", 99.088), ("height", 70, "in", 177.8),
    ("height", 70, "[in_i]", 177.8), ("height", 1, "ft", 30.48), ("height", 1.8, "m", 180),
    ("blood-pressure", 120, "mm[Hg]", 120),
])
def test_known_conversions(kind, value, unit, canonical):
    assert to_canonical(kind, value, unit) == pytest.approx(canonical, abs=1e-6)
    assert from_canonical(kind, canonical, unit) == pytest.approx(value, abs=1e-6)


def test_conversions_quoted_in_the_brief():
    assert round(to_canonical("weight", 150, "lb"), 2) == 68.04
    assert round(to_canonical("temperature", 98.6, "degF"), 6) == 37
    assert round(to_canonical("glucose", 5.5, "mmol/L"), 1) == 99.1
    assert to_canonical("height", 70, "in") == pytest.approx(177.8)


@settings(max_examples=60)
@given(data=st.data())
@pytest.mark.parametrize(("kind", "unit"), UNIT_PAIRS)
def test_round_trip_over_plausible_ranges(kind, unit, data):
    spec = KINDS[kind]
    lo, hi = sorted(from_canonical(kind, x, unit) for x in (spec.low, spec.high))
    value = data.draw(st.floats(lo, hi, allow_nan=False))
    back = from_canonical(kind, to_canonical(kind, value, unit), unit)
    assert back == pytest.approx(value, rel=1e-9, abs=1e-9)


def test_unknown_unit_or_kind_refused_by_converters():
    assert "kg" in refused("unit", to_canonical, "weight", 70, "stone").message
    refused("unit", from_canonical, "temperature", 37, "K")
    refused("unit", to_canonical, "glucose", 5, "mg/dl")  # UCUM is case-sensitive
    refused("kind", to_canonical, "cholesterol", 5, "mg/dL")
    refused("kind", from_canonical, "bp", 5, "mm[Hg]")


# --- Refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("r", "field", "range_text"), [
    (reading("weight", value=0.4, unit="kg"), "value", "0.5 to 500 kg"),
    (reading("weight", value=1200, unit="lb"), "value", "0.5 to 500 kg"),
    (reading("height", value=273, unit="cm"), "value", "30 to 272 cm"),
    (reading("height", value=11, unit="in"), "value", "30 to 272 cm"),
    (reading("bmi", value=7.9, unit="kg/m2"), "value", "8 to 100 kg/m2"),
    (reading("heart-rate", value=301), "value", "20 to 300 beats/minute"),
    (reading("heart-rate", value=19), "value", "20 to 300"),
    (reading("spo2", value=49, unit="%"), "value", "50 to 100 %"),
    (reading("spo2", value=101, unit="%"), "value", "50 to 100 %"),
    (reading("temperature", value=46, unit="Cel"), "value", "30 to 45"),
    (reading("temperature", value=120, unit="degF"), "value", "30 to 45"),
    (reading("glucose", value=9, unit="mg/dL"), "value", "10 to 1500 mg/dL"),
    (reading("glucose", value=90, unit="mmol/L"), "value", "10 to 1500 mg/dL"),
    (reading("steps", value=100001, unit="steps"), "value", "0 to 100000 steps"),
    (reading("blood-pressure", systolic=301, diastolic=80), "systolic", "50 to 300 mmHg"),
    (reading("blood-pressure", systolic=49, diastolic=30), "systolic", "50 to 300 mmHg"),
    (reading("blood-pressure", systolic=250, diastolic=201), "diastolic", "20 to 200 mmHg"),
    (reading("blood-pressure", systolic=120, diastolic=19), "diastolic", "20 to 200 mmHg"),
])
def test_implausible_values_refused_with_the_range(r, field, range_text):
    error = refused(field, build_observations, r, PATIENT, NOW)
    assert range_text in error.message


def test_range_also_given_in_the_entered_unit():
    error = refused("value", build_observations, reading("weight", value=1200, unit="lb"),
                    PATIENT, NOW)
    assert "(1.1 to 1102.31 lb)" in error.message


@pytest.mark.parametrize(("kind", "low", "high", "unit"), [
    ("weight", 0.5, 500, "kg"), ("height", 30, 272, "cm"), ("bmi", 8, 100, "kg/m2"),
    ("heart-rate", 20, 300, "/min"), ("spo2", 50, 100, "%"), ("temperature", 30, 45, "Cel"),
    ("glucose", 10, 1500, "mg/dL"), ("steps", 0, 100000, "steps"),
])
def test_range_bounds_are_inclusive(kind, low, high, unit):
    for value in (low, high):
        assert build(reading(kind, value=value, unit=unit))[0]["valueQuantity"]["value"] == value


def test_blood_pressure_bounds_and_order():
    build(reading("blood-pressure", systolic=300, diastolic=200))
    build(reading("blood-pressure", systolic=50, diastolic=20))
    error = refused("diastolic", build_observations,
                    reading("blood-pressure", systolic=90, diastolic=90), PATIENT, NOW)
    assert "lower than systolic" in error.message
    refused("diastolic", build_observations, reading("blood-pressure", systolic=80, diastolic=95),
            PATIENT, NOW)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1, -0.5, True, False, "abc",
                                 "nan", "inf", "1e400", "-3", "1_000", "0x10", [], {}])
@pytest.mark.parametrize("field", ["value", "systolic", "diastolic"])
def test_bad_numbers_refused_naming_the_field(field, bad):
    if field == "value":
        r, data = reading("heart-rate", value=bad), {"kind": "heart-rate", "value": bad}
    else:
        r = reading("blood-pressure", **{field: bad})
        data = {"kind": "blood-pressure", "systolic": 120, "diastolic": 80, field: bad}
    refused(field, build_observations, r, PATIENT, NOW)
    refused(field, parse_reading, data | {"effective": WHEN})


def test_decimal_numbers_accepted():
    r = parse_reading({"kind": "temperature", "value": Decimal("37.25"), "unit": "Cel",
                       "effective": WHEN})
    assert build(r)[0]["valueQuantity"]["value"] == 37.2
    refused("value", parse_reading, {"kind": "spo2", "value": Decimal("NaN"), "effective": WHEN})


def test_steps_must_be_whole():
    error = refused("value", build_observations, reading("steps", value=10.5, unit="steps"),
                    PATIENT, NOW)
    assert "whole number" in error.message
    assert build(reading("steps", value=0, unit="steps"))[0]["valueQuantity"]["value"] == 0


def test_unknown_unit_or_kind_refused_when_building():
    refused("unit", build_observations, reading("weight", value=70, unit="stone"), PATIENT, NOW)
    refused("unit", build_observations, reading("temperature", value=37, unit="degC"), PATIENT,
            NOW)
    refused("unit", build_observations, reading("blood-pressure", unit="kPa"), PATIENT, NOW)
    refused("kind", build_observations, Reading(kind="mood", effective=WHEN, value=3), PATIENT,
            NOW)


def test_unit_required_where_units_differ():
    refused("unit", build_observations, reading("weight", value=70), PATIENT, NOW)
    refused("unit", build_observations, reading("glucose", value=100), PATIENT, NOW)
    # Kinds whose accepted units all mean the same take the canonical unit when left out.
    assert build(reading("heart-rate", value=60))[0]["valueQuantity"]["code"] == "/min"
    assert build(reading("blood-pressure"))[0]["component"][0]["valueQuantity"]["value"] == 120


def test_value_and_pressures_belong_to_their_kinds():
    refused("value", build_observations, reading("heart-rate", value=None), PATIENT, NOW)
    refused("systolic", build_observations, reading("heart-rate", systolic=120), PATIENT, NOW)
    refused("value", build_observations, reading("blood-pressure", value=120), PATIENT, NOW)
    refused("diastolic", build_observations, reading("blood-pressure", diastolic=None), PATIENT,
            NOW)


def test_bad_device_patient_or_note_refused():
    refused("device", build_observations, reading(device="Patient/1"), PATIENT, NOW)
    refused("device", build_observations, reading(device="Device/a b"), PATIENT, NOW)
    refused("patient_id", build_observations, reading(), "bad id!", NOW)
    refused("note", build_observations, reading(note=5), PATIENT, NOW)
    assert "note" not in build(reading(note="   "))[0]


# --- Time -------------------------------------------------------------------------------------

def test_future_time_refused():
    soon = (NOW + timedelta(minutes=5)).isoformat()
    build(reading(effective=soon))  # clock skew of up to 5 minutes is allowed
    later = (NOW + timedelta(minutes=5, seconds=1)).isoformat()
    error = refused("effective", build_observations, reading(effective=later), PATIENT, NOW)
    assert "future" in error.message
    # The zone counts: 13:00+02:00 is 11:00Z, before NOW; 13:00Z is after it.
    build(reading(effective="2024-05-01T13:00:00+02:00"))
    refused("effective", build_observations, reading(effective="2024-05-01T13:00:00Z"), PATIENT,
            NOW)


@pytest.mark.parametrize("effective", ["2024-05-01T08:30:00", "2024-05-01T08:30",
                                       "2024-05-01T08:30:00.250"])
def test_time_without_zone_refused(effective):
    error = refused("effective", build_observations, reading(effective=effective), PATIENT, NOW)
    assert "zone" in error.message
    refused("effective", parse_reading, {"kind": "spo2", "value": 97, "effective": effective})


@pytest.mark.parametrize("effective", ["", "yesterday", "2024-05-01", "2024-02-30T08:00:00Z",
                                       "2024-05-01T25:00:00Z", "2024-05-01T08:30+02:00",
                                       "2024-05-01T08:30:00+15:00", None, 1714550000])
def test_malformed_time_refused(effective):
    refused("effective", build_observations, reading(effective=effective), PATIENT, NOW)


def test_naive_now_is_a_programming_error():
    with pytest.raises(ValueError, match="timezone-aware"):
        build_observations(reading(), PATIENT, datetime(2024, 5, 1, 12, 0))


def test_fractional_seconds_and_offsets_accepted():
    [obs] = build(reading(effective="2024-05-01T07:30:00.125-04:00"))
    assert obs["effectiveDateTime"] == "2024-05-01T07:30:00.125-04:00"


# --- Parsing ----------------------------------------------------------------------------------

def test_parse_form_strings():
    r = parse_reading({"kind": "weight", "value": " 150.5 ", "unit": "lb", "effective": WHEN,
                       "device": "", "note": ""})
    assert r == Reading(kind="weight", effective=WHEN, value=150.5, unit="lb")
    r = parse_reading({"kind": "blood-pressure", "systolic": "121", "diastolic": 79,
                       "effective": WHEN, "device": "Device/cuff", "note": "left arm"})
    assert (r.systolic, r.diastolic, r.device, r.note) == (121.0, 79.0, "Device/cuff", "left arm")
    [obs] = build(r)
    assert obs["component"][0]["valueQuantity"]["value"] == 121


@pytest.mark.parametrize(("data", "field"), [
    ({"value": 70, "unit": "kg", "effective": WHEN}, "kind"),
    ({"kind": "", "value": 70, "unit": "kg", "effective": WHEN}, "kind"),
    ({"kind": "mood", "value": 3, "effective": WHEN}, "kind"),
    ({"kind": "weight", "unit": "kg", "effective": WHEN}, "value"),
    ({"kind": "weight", "value": "", "unit": "kg", "effective": WHEN}, "value"),
    ({"kind": "weight", "value": 70, "effective": WHEN}, "unit"),
    ({"kind": "weight", "value": 70, "unit": "stone", "effective": WHEN}, "unit"),
    ({"kind": "weight", "value": 70, "unit": "kg"}, "effective"),
    ({"kind": "blood-pressure", "systolic": 120, "effective": WHEN}, "diastolic"),
    ({"kind": "blood-pressure", "diastolic": 80, "effective": WHEN}, "systolic"),
    ({"kind": "heart-rate", "value": 60, "systolic": 120, "effective": WHEN}, "systolic"),
    ({"kind": "heart-rate", "value": 60, "effective": WHEN, "patient": "Patient/2"}, "patient"),
    ({"kind": "heart-rate", "value": 60, "effective": WHEN, "device": "Device/"}, "device"),
    ({"kind": "heart-rate", "value": 60, "effective": WHEN, "note": 3}, "note"),
])
def test_parse_refuses_missing_or_unknown_fields(data, field):
    refused(field, parse_reading, data)


def test_parse_refuses_a_non_object():
    refused("reading", parse_reading, ["kind", "weight"])


def test_reading_error_is_a_value_error_with_field_and_message():
    error = refused("unit", to_canonical, "weight", 1, "st")
    assert isinstance(error, ValueError)
    assert str(error).startswith("unit: ") and error.message in str(error)


# --- Duplicates -------------------------------------------------------------------------------

def key(r: Reading) -> tuple:
    return duplicate_key(build_observations(r, PATIENT, NOW)[0])


def test_duplicate_key_equal_for_identical_readings():
    r = reading("weight", value=150, unit="lb", device="Device/scale")
    assert key(r) == key(reading("weight", value=150, unit="lb", device="Device/scale"))
    # Same measurement entered in another unit or zone spelling is the same reading.
    assert key(r) == key(reading("weight", value=68.04, unit="kg", device="Device/scale"))
    assert key(r) == key(reading("weight", value=150, unit="lb", device="Device/scale",
                                 effective="2024-05-01T06:30:00Z"))
    # A note does not make a reading different.
    assert key(r) == key(reading("weight", value=150, unit="lb", device="Device/scale",
                                 note="morning"))
    bp = reading("blood-pressure", systolic=120, diastolic=80)
    assert key(bp) == key(reading("blood-pressure", systolic=120, diastolic=80))
    assert key(bp) == ("85354-9", "2024-05-01T06:30:00+00:00",
                       (("8480-6", 120.0), ("8462-4", 80.0)), "mm[Hg]", None)


@pytest.mark.parametrize("other", [
    reading("heart-rate", value=72, effective="2024-05-01T08:31:00+02:00"),
    reading("heart-rate", value=73),
    reading("heart-rate", value=72, device="Device/watch-2"),
    reading("heart-rate", value=72, device=None),
    reading("spo2", value=72, unit="%"),
])
def test_duplicate_key_differs_when_anything_differs(other):
    assert key(reading("heart-rate", value=72, device="Device/watch-1")) != key(other)


@pytest.mark.parametrize(("systolic", "diastolic"), [(121, 80), (120, 81), (80, 120)])
def test_duplicate_key_differs_per_pressure(systolic, diastolic):
    base = key(reading("blood-pressure", systolic=120, diastolic=80))
    if systolic > diastolic:
        assert base != key(reading("blood-pressure", systolic=systolic, diastolic=diastolic))
    else:
        refused("diastolic", key, reading("blood-pressure", systolic=systolic,
                                          diastolic=diastolic))


def test_duplicate_key_is_hashable():
    assert len({key(reading()), key(reading()), key(reading(value=90))}) == 2


# --- Alerts -----------------------------------------------------------------------------------

def alert_for(kind: str, **kw) -> list[str]:
    return alerts(build_observations(reading(kind, **kw), PATIENT, NOW)[0])


def test_no_alerts_for_normal_readings():
    assert alert_for("blood-pressure", systolic=120, diastolic=80) == []
    for kind, value, unit, _ in SAMPLES:
        assert alert_for(kind, value=value, unit=unit) == []


@pytest.mark.parametrize(("systolic", "diastolic", "expected"), [
    (180, 80, ["systolic blood pressure is 180"]),
    (179, 80, []),
    (190, 119, ["systolic blood pressure is 180"]),
    (150, 120, ["diastolic blood pressure is 120"]),
    (150, 119, []),
    (185, 125, ["systolic blood pressure is 180", "diastolic blood pressure is 120"]),
    (89, 60, ["systolic is below 90"]),
    (90, 60, []),
    (100, 59, ["diastolic is below 60"]),
    (85, 55, ["systolic is below 90", "diastolic is below 60"]),
])
def test_blood_pressure_alert_boundaries(systolic, diastolic, expected):
    got = alert_for("blood-pressure", systolic=systolic, diastolic=diastolic)
    assert len(got) == len(expected)
    for message, text in zip(got, expected, strict=True):
        assert text in message
    if systolic >= 180 or diastolic >= 120:
        assert all(m.startswith("Hypertensive crisis") for m in got)


@pytest.mark.parametrize(("kind", "unit", "fires", "quiet", "text"), [
    ("spo2", "%", 89, 90, "oxygen"),
    ("heart-rate", "/min", 39, 40, "Low heart rate"),
    ("heart-rate", "/min", 131, 130, "High heart rate"),
    ("glucose", "mg/dL", 53, 54, "Low blood glucose"),
    ("glucose", "mg/dL", 401, 400, "High blood glucose"),
    ("temperature", "Cel", 39.4, 39.3, "fever"),
])
def test_alert_boundaries(kind, unit, fires, quiet, text):
    [message] = alert_for(kind, value=fires, unit=unit)
    assert text in message
    assert alert_for(kind, value=quiet, unit=unit) == []


def test_alerts_apply_to_converted_input_units():
    assert alert_for("temperature", value=103, unit="degF")  # 39.44 Cel
    assert alert_for("temperature", value=102.9, unit="degF")  # 39.39, stored as 39.4
    assert alert_for("temperature", value=102.8, unit="degF") == []  # 39.33, stored as 39.3
    assert alert_for("glucose", value=2.9, unit="mmol/L")  # 52 mg/dL


def test_alerts_read_other_ucum_units_of_a_stored_observation():
    [obs] = build_observations(reading("temperature", value=37, unit="Cel"), PATIENT, NOW)
    obs["valueQuantity"] |= {"value": 104, "code": "[degF]"}
    assert len(alerts(obs)) == 1
    obs["valueQuantity"] |= {"value": 104, "code": "K"}  # not a unit of the table: no alert
    assert alerts(obs) == []
    assert alerts({"resourceType": "Observation", "code": {"text": "free text"}}) == []


def test_alert_rule_table_is_documented():
    assert len(ALERT_RULES) == 10
    for rule in ALERT_RULES:
        assert rule.comparator in {"<", ">", ">="}
        assert rule.message and rule.unit
        kinds = [k for k in KINDS.values()
                 if rule.code in {k.loinc, *(c.loinc for c in k.components)}]
        assert kinds, rule.code


def test_zone_of_duplicate_key_uses_utc():
    other_zone = timezone(timedelta(hours=-4))
    when = datetime(2024, 5, 1, 2, 30, tzinfo=other_zone).isoformat()
    assert key(reading(effective=when)) == key(reading(effective="2024-05-01T06:30:00Z"))
