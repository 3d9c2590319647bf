"""The health trackers' pure rules without a browser: numbers as patients type them, the
plausible ranges in the patient's unit, the reading's time, display in the chosen unit, the
alert words, the two-series chart; and that the portal's copy of the operation's ranges and
alert rules matches the gateway's own (`mappings.portal.trackers`), so the portal never refuses
what the server would take, or sends what it would refuse."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from mappings.portal import trackers as gateway
from portal import PortalSettings, charts, create_portal
from portal import trackers as trk


@pytest.fixture(scope="module")
def app():
    return create_portal(PortalSettings(
        fhir_base="http://127.0.0.1:9/fhir", client_id="demo-portal",
        redirect_uri="http://127.0.0.1:8081/callback", secret_key="test-secret"))


@pytest.fixture
def ctx(app):
    with app.test_request_context("/"):
        yield


def test_the_portals_kinds_match_the_operations_ranges_units_and_codes():
    assert set(trk.KINDS) == set(gateway.KINDS)
    for key, kind in trk.KINDS.items():
        spec = gateway.KINDS[key]
        assert kind.loinc == spec.loinc and kind.canonical == spec.ucum, key
        specs = spec.components or (spec,)
        assert [p.loinc for p in kind.parts] == [s.loinc for s in specs], key
        for part, s in zip(kind.parts, specs, strict=True):
            assert (part.low, part.high, part.decimals) == (Decimal(str(s.low)),
                                                           Decimal(str(s.high)), s.decimals)
        for unit in kind.units:
            if unit.code == "mmHg":
                continue
            assert unit.code in spec.units, (key, unit.code)
            conv = spec.units[unit.code]
            for x in (Decimal(1), Decimal("37.5"), Decimal(200)):
                assert float(unit.to_canonical(x)) == pytest.approx(conv.to_canonical(float(x)))


def test_the_portals_alert_words_cover_the_operations_alert_rules():
    mine = {(code, comparator, threshold) for _, code, comparator, threshold in trk.ALERTS}
    theirs = {(r.code, r.comparator, Decimal(str(r.threshold))) for r in gateway.ALERT_RULES}
    assert mine == theirs


@pytest.mark.parametrize(("raw", "value"), [
    ("72", Decimal(72)), (" 72.5 ", Decimal("72.5")), ("72,5", Decimal("72.5")),
    ("1 000", Decimal(1000)), ("abc", None), ("", None), ("1e5", None), ("NaN", None),
    ("7.2.1", None), ("--1", None), ("1" + "0" * 40, None), ("4\u00b2", None),
    ("\u0663", None), ("1234567890123", None), (".5", Decimal("0.5"))])
def test_numbers_as_patients_type_them(raw, value):
    assert trk.parse_number(raw) == value


def test_allowed_ranges_in_the_patients_unit_pass_the_servers_check_at_both_ends(ctx):
    for kind in trk.KINDS.values():
        for part in kind.parts:
            for unit in kind.units:
                low, high = trk.allowed_range(part, unit)
                for end in (low, high):
                    value, error = trk.check_value(kind, part, end, unit)
                    assert error is None, (kind.key, unit.code, end)
                    if kind.is_bp:
                        continue
                    reading = gateway.Reading(kind.key, "2024-05-01T08:00:00Z",
                                              value=float(value), unit=unit.code)
                    gateway.build_observations(reading, "p1", dt.datetime.now(dt.UTC))
    weight = trk.KINDS["weight"]
    assert trk.allowed_range(weight.parts[0], weight.unit("lb")) == ("1.1", "1102.3")
    temp = trk.KINDS["temperature"]
    assert trk.allowed_range(temp.parts[0], temp.unit("degF")) == ("86.0", "113.0")


def test_check_value_errors(ctx):
    weight, steps = trk.KINDS["weight"], trk.KINDS["steps"]
    lb = weight.unit("lb")
    assert trk.check_value(weight, weight.parts[0], "", lb)[1] == "Please fill this in."
    assert "number" in trk.check_value(weight, weight.parts[0], "heavy", lb)[1]
    assert "between 1.1 and 1102.3 lb" in trk.check_value(weight, weight.parts[0], "2000", lb)[1]
    assert "between 1.1 and 1102.3 lb" in trk.check_value(weight, weight.parts[0], "-5", lb)[1]
    assert trk.check_value(weight, weight.parts[0], "165", lb) == (Decimal(165), None)
    assert "whole" in trk.check_value(steps, steps.parts[0], "10.5", steps.units[0])[1]


def test_check_time(ctx):
    now = dt.datetime(2026, 3, 1, 12, 0).astimezone()
    when, errors = trk.check_time("2026-03-01", "11:58", now)
    assert errors == {} and when == dt.datetime(2026, 3, 1, 11, 58).astimezone()
    assert trk.check_time("2026-03-01", "12:04", now)[1] == {}  # clock skew allowed
    assert "future" in trk.check_time("2026-03-01", "12:06", now)[1]["date"]
    assert "real date" in trk.check_time("2026-02-30", "08:00", now)[1]["date"]
    assert "real time" in trk.check_time("2026-02-03", "24:61", now)[1]["time"]
    assert set(trk.check_time("", "", now)[1]) == {"date", "time"}
    assert "too long ago" in trk.check_time("1899-12-31", "08:00", now)[1]["date"]


def test_check_reading_builds_the_operations_parameters(ctx):
    now = dt.datetime(2026, 3, 1, 12, 0).astimezone()
    params, errors = trk.check_reading(trk.KINDS["blood-pressure"], {
        "systolic": "128", "diastolic": "82", "date": "2026-03-01", "time": "08:30",
        "note": "  after a walk "}, now)
    assert errors == {}
    assert params == [
        {"name": "kind", "valueCode": "blood-pressure"},
        {"name": "systolic", "valueDecimal": 128.0}, {"name": "diastolic", "valueDecimal": 82.0},
        {"name": "effective", "valueDateTime":
            dt.datetime(2026, 3, 1, 8, 30).astimezone().isoformat(timespec="seconds")},
        {"name": "note", "valueString": "after a walk"}]
    _, errors = trk.check_reading(trk.KINDS["blood-pressure"], {
        "systolic": "80", "diastolic": "80", "date": "2026-03-01", "time": "08:30"}, now)
    assert set(errors) == {"diastolic"}
    _, errors = trk.check_reading(trk.KINDS["weight"], {
        "value": "70", "unit": "stone", "date": "2026-03-01", "time": "08:30"}, now)
    assert set(errors) == {"unit"}
    _, errors = trk.check_reading(trk.KINDS["weight"], {
        "value": "70", "unit": "kg", "date": "2026-03-01", "time": "08:30",
        "note": "x" * 1001}, now)
    assert set(errors) == {"note"}
    # a number too long to round is refused next to its field, not a server error
    _, errors = trk.check_reading(trk.KINDS["blood-pressure"], {
        "systolic": "1" + "0" * 40, "diastolic": "80", "date": "2026-03-01", "time": "08:30"},
        now)
    assert set(errors) == {"systolic"}


def test_stored_readings_are_shown_in_the_patients_unit(ctx):
    weight = {"code": {"coding": [{"code": "29463-7"}]},
              "valueQuantity": {"value": 74.84, "code": "kg"}}
    kind = trk.KINDS["weight"]
    assert trk.reading_text(kind, weight, kind.unit("lb")) == "165.0 lb (pounds)"
    assert trk.reading_text(kind, weight, kind.unit("kg")) == "74.8 kg"
    grams = {**weight, "valueQuantity": {"value": 74840, "code": "g"}}
    assert trk.reading_text(kind, grams, kind.unit("kg")) == "74840 g"  # unknown: as stored
    bp = {"code": {"coding": [{"code": "85354-9"}]}, "component": [
        {"code": {"coding": [{"code": "8480-6"}]}, "valueQuantity": {"value": 185,
                                                                     "code": "mm[Hg]"}},
        {"code": {"coding": [{"code": "8462-4"}]}, "valueQuantity": {"value": 95,
                                                                     "code": "mm[Hg]"}}]}
    bp_kind = trk.KINDS["blood-pressure"]
    assert trk.reading_text(bp_kind, bp, bp_kind.units[0]) == "185/95 mmHg"
    assert trk.alert_keys(bp) == []  # not flagged by the server: no alert
    assert trk.alert_keys({**bp, "interpretation": [{"coding": [{"code": "AA"}]}]}) == [
        "trk.alert.bp_high"]
    assert trk.alert_keys(weight) == []
    assert trk.alert_keys({**weight, "interpretation": [{"coding": [{"code": "AA"}]}]}) == [
        "trk.alert.other"]
    assert trk.when_text({"effectiveDateTime": "2026-03-01T08:30:00+00:00"}) == \
        dt.datetime(2026, 3, 1, 8, 30, tzinfo=dt.UTC).astimezone().strftime("%Y-%m-%d %H:%M")


def test_two_series_chart():
    svg = charts.series_svg(["03-01", "03-02", "03-03"],
                            [("Top", [Decimal(120), Decimal(185), None]),
                             ("Bottom", [Decimal(80), Decimal(95), Decimal(70)])],
                            "Blood pressure", "mmHg", [False, True, False])
    assert svg.count("<polyline") == 2
    assert svg.count("<circle") == 2 + 1  # systolic points (one missing) + legend
    assert svg.count('fill="#a4000f"') == 2  # the flagged reading, in both series
    assert ">Top<" in svg and ">Bottom<" in svg and "<title" in svg
    with pytest.raises(ValueError):
        charts.series_svg(["a"], [("x", [None])], "t")
    escaped = charts.series_svg(["<b>", "x"], [("", [Decimal(1), Decimal(2)])], "<t>")
    assert "<b>" not in escaped and "&lt;t&gt;" in escaped


def test_trackers_need_sign_in(app):
    client = app.test_client()
    for path in ("/trackers", "/trackers/weight"):
        resp = client.get(path)
        assert resp.status_code == 302 and resp.headers["Location"].endswith("/signin")
