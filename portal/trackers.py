"""Health trackers: enter a reading in the patient's own units, see each kind over time.

Readings go to the server's `Observation/$record-reading`; the chart and table of a kind come
from `Observation/$lastn`, the 30-day summary from `Observation/$stats`. The portal checks what
it can before calling (a number, the plausible range the operation states, a real time not in
the future, diastolic below systolic, the note's length), so bad input never reaches the
server; what only the server can know (a reading already recorded) is its 4xx, said in the
patient's words. The unit a patient chooses is kept in the server-side session, per kind, and
used for display too. URLs name a kind of tracker (the same pages for every patient), never a
value or the patient.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from flask import abort, redirect, render_template, request, url_for

from portal import charts, records
from portal.blueprint import api, bp, current, signed_in, t
from portal.fhir_api import GatewayError
from portal.forms import new_form_id, use_form_id

LOINC = "http://loinc.org"
MAX_NOTE = 1000
CHART_READINGS = 30  # newest readings shown per kind (chart and table alike)
STATS_DAYS = 30
#: How far after now a reading's time may lie (the operation's clock-skew tolerance).
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
EARLIEST = dt.date(1900, 1, 1)
CRITICAL = "AA"  # v3 ObservationInterpretation "critical abnormal", set by an alert rule


@dataclass(frozen=True)
class Unit:
    """A unit the patient may enter and see: `code` is what the operation accepts (as
    entered); canonical = (value + offset) * factor; `decimals` for display."""

    code: str
    factor: Decimal
    decimals: int
    offset: Decimal = Decimal(0)

    def to_canonical(self, value: Decimal) -> Decimal:
        return (value + self.offset) * self.factor

    def from_canonical(self, value: Decimal) -> Decimal:
        return value / self.factor - self.offset


@dataclass(frozen=True)
class Part:
    """One number of a reading: its field name, LOINC code, plausible range (canonical)."""

    field: str
    loinc: str
    low: Decimal
    high: Decimal
    decimals: int  # rounding of the stored value (the operation's)


@dataclass(frozen=True)
class Kind:
    key: str
    loinc: str
    canonical: str  # UCUM code the server stores
    units: tuple[Unit, ...]  # the first is the default
    parts: tuple[Part, ...]  # one, or systolic and diastolic
    integer: bool = False

    @property
    def is_bp(self) -> bool:
        return len(self.parts) == 2

    def unit(self, code: str | None) -> Unit:
        return next((u for u in self.units if u.code == code), self.units[0])


def _d(text: str) -> Decimal:
    return Decimal(text)


_ONE = Decimal(1)
_MMHG = Unit("mmHg", _ONE, 0)
#: The kinds `$record-reading` takes, in the order patients see them. Ranges and roundings are
#: the ones the operation states (README "Portal actions"); the portal checks them first.
KINDS: dict[str, Kind] = {k.key: k for k in (
    Kind("blood-pressure", "85354-9", "mm[Hg]", (_MMHG,),
         (Part("systolic", "8480-6", _d("50"), _d("300"), 0),
          Part("diastolic", "8462-4", _d("20"), _d("200"), 0))),
    Kind("weight", "29463-7", "kg",
         (Unit("kg", _ONE, 1), Unit("lb", _d("0.45359237"), 1)),
         (Part("value", "29463-7", _d("0.5"), _d("500"), 2),)),
    Kind("glucose", "2339-0", "mg/dL",
         (Unit("mg/dL", _ONE, 0), Unit("mmol/L", _d("18.016"), 1)),
         (Part("value", "2339-0", _d("10"), _d("1500"), 0),)),
    Kind("heart-rate", "8867-4", "/min", (Unit("/min", _ONE, 0),),
         (Part("value", "8867-4", _d("20"), _d("300"), 0),)),
    Kind("temperature", "8310-5", "Cel",
         (Unit("Cel", _ONE, 1), Unit("degF", Decimal(5) / Decimal(9), 1, _d("-32"))),
         (Part("value", "8310-5", _d("30"), _d("45"), 1),)),
    Kind("spo2", "59408-5", "%", (Unit("%", _ONE, 0),),
         (Part("value", "59408-5", _d("50"), _d("100"), 0),)),
    Kind("steps", "55423-8", "{steps}", (Unit("steps", _ONE, 0),),
         (Part("value", "55423-8", _d("0"), _d("100000"), 0),), integer=True),
    Kind("height", "8302-2", "cm",
         (Unit("cm", _ONE, 1), Unit("in", _d("2.54"), 1)),
         (Part("value", "8302-2", _d("30"), _d("272"), 1),)),
    Kind("bmi", "39156-5", "kg/m2", (Unit("kg/m2", _ONE, 1),),
         (Part("value", "39156-5", _d("8"), _d("100"), 1),)),
)}

#: The alert rules the operation applies (README "Portal actions"), so the portal can say in
#: words what a flagged reading means: (catalogue key, LOINC code, comparator, threshold in the
#: canonical unit).
ALERTS = (
    ("trk.alert.bp_high", "8480-6", ">=", Decimal(180)),
    ("trk.alert.bp_high", "8462-4", ">=", Decimal(120)),
    ("trk.alert.bp_low", "8480-6", "<", Decimal(90)),
    ("trk.alert.bp_low", "8462-4", "<", Decimal(60)),
    ("trk.alert.spo2_low", "59408-5", "<", Decimal(90)),
    ("trk.alert.hr_low", "8867-4", "<", Decimal(40)),
    ("trk.alert.hr_high", "8867-4", ">", Decimal(130)),
    ("trk.alert.glucose_low", "2339-0", "<", Decimal(54)),
    ("trk.alert.glucose_high", "2339-0", ">", Decimal(400)),
    ("trk.alert.fever", "8310-5", ">=", Decimal("39.4")),
)


# --- Pure helpers ------------------------------------------------------------------------------

def round_to(value: Decimal, decimals: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def show(value: Decimal, unit: Unit) -> str:
    """A number in `unit`, rounded for display."""
    return f"{round_to(value, unit.decimals):f}"


#: A number as typed: ASCII digits, one optional sign and decimal point, at most 12 characters
#: (no reading needs more; a longer one could not even be rounded).
_NUMBER = re.compile(r"[+-]?(?=.{1,12}$)(\d+\.?\d*|\.\d+)", re.ASCII)


def parse_number(raw: str) -> Decimal | None:
    """A finite number from what the patient typed ('72', '72.5', '72,5'), else None."""
    text = raw.strip().replace(" ", "")
    if text.count(",") == 1 and "." not in text:
        text = text.replace(",", ".")
    if not _NUMBER.fullmatch(text):
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _passes(part: Part, unit: Unit, value: Decimal) -> bool:
    return part.low <= round_to(unit.to_canonical(value), part.decimals) <= part.high


def allowed_range(part: Part, unit: Unit) -> tuple[str, str]:
    """The plausible range of `part` written in `unit` (rounded inwards, so both ends pass)."""
    lo, hi = sorted((unit.from_canonical(part.low), unit.from_canonical(part.high)))
    step = Decimal(1).scaleb(-unit.decimals)
    low, high = round_to(lo, unit.decimals), round_to(hi, unit.decimals)
    if not _passes(part, unit, low):
        low += step
    if not _passes(part, unit, high):
        high -= step
    return f"{low:f}", f"{high:f}"


def check_value(kind: Kind, part: Part, raw: str, unit: Unit) -> tuple[Decimal | None, str | None]:
    """(number as entered, error text) for one field."""
    if not raw.strip():
        return None, t("trk.err_empty")
    value = parse_number(raw)
    if value is None:
        return None, t("trk.err_number")
    if kind.integer and value != value.to_integral_value():
        return None, t("trk.err_whole")
    canonical = round_to(unit.to_canonical(value), part.decimals)
    if not part.low <= canonical <= part.high:  # the operation rounds first, then checks
        low, high = allowed_range(part, unit)
        return None, t("trk.err_range", low=low, high=high, unit=t(f"trk.unit.{unit.code}"))
    return value, None


def check_time(date_raw: str, time_raw: str, now: dt.datetime
               ) -> tuple[dt.datetime | None, dict[str, str]]:
    """The reading's time (aware, in the portal's local zone) from the date and time fields."""
    errors: dict[str, str] = {}
    try:
        day = dt.date.fromisoformat(date_raw.strip())
    except ValueError:
        errors["date"] = t("trk.err_date") if date_raw.strip() else t("trk.err_empty")
        day = None
    try:
        clock = dt.time.fromisoformat(time_raw.strip()) if time_raw.strip() else None
    except ValueError:
        clock = None
    if clock is None:
        errors["time"] = t("trk.err_time") if time_raw.strip() else t("trk.err_empty")
    if errors or day is None or clock is None:
        return None, errors
    if day < EARLIEST:
        return None, {"date": t("trk.err_date_old")}
    when = dt.datetime.combine(day, clock.replace(second=0, microsecond=0)).astimezone()
    if when > now + FUTURE_TOLERANCE:
        return None, {"date": t("trk.err_future")}
    return when, {}


def quantity(obs: dict, loinc: str) -> tuple[Decimal | None, str]:
    """(value, UCUM code) of the Observation's value or of its component with `loinc`."""
    if records.code_of(obs.get("code")) == loinc and "valueQuantity" in obs:
        q = obs["valueQuantity"]
    else:
        q = next((c.get("valueQuantity") or {} for c in obs.get("component") or []
                  if records.code_of(c.get("code")) == loinc), {})
    try:
        value = Decimal(str(q["value"])) if "value" in q else None
    except InvalidOperation:
        value = None
    return value, q.get("code") or q.get("unit") or ""


def in_unit(kind: Kind, value: Decimal, stored_code: str, unit: Unit) -> Decimal | None:
    """A stored value in the patient's unit; None when stored in a unit the portal does not
    know (it is then shown as stored)."""
    if stored_code in (kind.canonical, "mmHg"):
        return unit.from_canonical(value)
    known = next((u for u in kind.units if u.code == stored_code), None)
    return unit.from_canonical(known.to_canonical(value)) if known else None


def reading_text(kind: Kind, obs: dict, unit: Unit) -> str:
    """A stored reading in the patient's unit, e.g. '120/80 mmHg' or '165.3 lb'."""
    shown = []
    for part in kind.parts:
        value, code = quantity(obs, part.loinc)
        if value is None:
            return ""
        converted = in_unit(kind, value, code, unit)
        shown.append(show(converted, unit) if converted is not None else f"{value} {code}")
        if converted is None:
            return " / ".join(shown)
    return "/".join(shown) + " " + t(f"trk.unit.{unit.code}")


def is_alert(obs: dict) -> bool:
    return any(c.get("code") == CRITICAL for i in obs.get("interpretation") or []
               for c in i.get("coding") or [])


def alert_keys(obs: dict) -> list[str]:
    """Catalogue keys saying what a reading the server flagged means (the rules it meets), in
    rule order without repeats; a generic one when flagged by a rule not known here; none when
    the server did not flag it (the server's alert is the one the care team was told of)."""
    if not is_alert(obs):
        return []
    keys: list[str] = []
    for key, loinc, comparator, threshold in ALERTS:
        value, _ = quantity(obs, loinc)
        if value is None:
            continue
        met = {"<": value < threshold, ">": value > threshold, ">=": value >= threshold}
        if met[comparator] and key not in keys:
            keys.append(key)
    return keys or ["trk.alert.other"]


def when_text(obs: dict) -> str:
    """The effective time as the patient reads it: 'YYYY-MM-DD HH:MM' in the portal's zone."""
    return records.local_time(obs.get("effectiveDateTime"))


def kind_of(obs: dict) -> Kind | None:
    code = records.code_of(obs.get("code"))
    return next((k for k in KINDS.values() if k.loinc == code), None)


# --- Session: the patient's units ------------------------------------------------------------

def chosen_unit(kind: Kind) -> Unit:
    return kind.unit(current().data.get("tracker_units", {}).get(kind.key))


def remember_unit(kind: Kind, code: str) -> None:
    if any(u.code == code for u in kind.units):
        current().data.setdefault("tracker_units", {})[kind.key] = code


# --- Gateway calls -----------------------------------------------------------------------------

def _newest(kind: Kind | None = None, count: int = 1) -> list[dict]:
    params = {"max": str(count)}
    if kind is not None:
        params["code"] = f"{LOINC}|{kind.loinc}"
    found = api().bundle_entries("Observation/$lastn", params)
    return records.only(found, "Observation")


def _stats(kind: Kind, unit: Unit) -> dict[str, str] | None:
    """Average, lowest and highest of the last STATS_DAYS days in the patient's unit."""
    if kind.is_bp:
        return None
    out = api().get_operation("Observation/$stats", {
        "code": kind.loinc, "statistic": "average,minimum,maximum,count",
        "duration": str(STATS_DAYS)})
    summary = next((p.get("resource") for p in out.get("parameter") or []
                    if p.get("name") == "statistic"), None) or {}
    values: dict[str, str] = {}
    for comp in summary.get("component") or []:
        name = records.code_of(comp.get("code"))
        q = comp.get("valueQuantity") or {}
        if "value" not in q:
            continue
        value = Decimal(str(q["value"]))
        if name == "count":
            values[name] = f"{value:f}"
            continue
        converted = in_unit(kind, value, q.get("code", ""), unit)
        if converted is not None:
            values[name] = show(converted, unit)
    return values if values.get("count", "0") != "0" and "average" in values else None


# --- Views -------------------------------------------------------------------------------------

@bp.get("/trackers")
@signed_in
def trackers():
    latest: dict[str, dict] = {}
    for obs in _newest(count=1):
        kind = kind_of(obs)
        if kind is not None:
            latest.setdefault(kind.key, obs)
    cards = []
    for kind in KINDS.values():
        obs = latest.get(kind.key)
        unit = chosen_unit(kind)
        cards.append({"kind": kind, "reading": reading_text(kind, obs, unit) if obs else "",
                      "when": when_text(obs) if obs else "",
                      "alerts": alert_keys(obs) if obs else []})
    return render_template("trackers.html", cards=cards)


def _kind(key: str) -> Kind:
    kind = KINDS.get(key)
    if kind is None:
        abort(404)
    return kind


def _page(kind: Kind, errors: dict[str, str] | None = None,
          values: dict[str, str] | None = None, status: int = 200):
    unit = chosen_unit(kind)
    readings = sorted(_newest(kind, CHART_READINGS), key=lambda o: o.get("effectiveDateTime", ""))
    rows = [{"id": o.get("id", ""), "when": when_text(o), "reading": reading_text(kind, o, unit),
             "alert": is_alert(o), "note": "; ".join(n.get("text", "") for n in o.get("note")
                                                   or [])} for o in readings]
    chart = None
    if len(readings) >= 2:
        series = []
        for part in kind.parts:
            points = []
            for o in readings:
                value, code = quantity(o, part.loinc)
                converted = in_unit(kind, value, code, unit) if value is not None else None
                points.append(round_to(converted, unit.decimals) if converted is not None
                              else None)
            series.append((t(f"trk.part.{part.field}") if kind.is_bp else "", points))
        chart = charts.series_svg([r["when"][:10] for r in rows], series,
                                  t(f"trk.kind.{kind.key}"), t(f"trk.unit.{unit.code}"),
                                  [r["alert"] for r in rows])
    latest = readings[-1] if readings else None
    now = dt.datetime.now().astimezone()
    form = {"date": now.date().isoformat(), "time": now.strftime("%H:%M"), "unit": unit.code,
            **(values or {})}
    notice = current().data.pop("tracker_notice", None)
    return render_template(
        "tracker.html", kind=kind, unit=unit, rows=rows, chart=chart,
        latest={"reading": rows[-1]["reading"], "when": rows[-1]["when"],
                "alerts": alert_keys(latest)} if latest else None,
        stats=_stats(kind, unit) if readings else None, stats_days=STATS_DAYS,
        errors=errors or {}, form=form, form_id=new_form_id(), max_note=MAX_NOTE,
        ranges={p.field: [(*allowed_range(p, u), u.code) for u in
                          (unit, *(u for u in kind.units if u != unit))] for p in kind.parts},
        notice=notice), status


@bp.get("/trackers/<key>")
@signed_in
def tracker(key: str):
    return _page(_kind(key))


@bp.post("/trackers/<key>/unit")
@signed_in
def tracker_unit(key: str):
    """Show (and enter) this kind in another unit, for the rest of the session."""
    kind = _kind(key)
    remember_unit(kind, request.form.get("unit", ""))
    return redirect(url_for("portal.tracker", key=kind.key), code=303)


def check_reading(kind: Kind, form, now: dt.datetime) -> tuple[list[dict], dict[str, str]]:
    """The operation's parameters for a submitted form, or the errors per field."""
    errors: dict[str, str] = {}
    code = form.get("unit", kind.units[0].code)
    unit = next((u for u in kind.units if u.code == code), None)
    if unit is None:
        return [], {"unit": t("trk.err_unit")}
    params: list[dict] = [{"name": "kind", "valueCode": kind.key}]
    numbers: dict[str, Decimal] = {}
    for part in kind.parts:
        value, error = check_value(kind, part, form.get(part.field, ""), unit)
        if error:
            errors[part.field] = error
        else:
            numbers[part.field] = value
    if kind.is_bp and len(numbers) == 2 and numbers["diastolic"] >= numbers["systolic"]:
        errors["diastolic"] = t("trk.err_diastolic")
    when, time_errors = check_time(form.get("date", ""), form.get("time", ""), now)
    errors.update(time_errors)
    note = form.get("note", "").strip()
    if len(note) > MAX_NOTE:
        errors["note"] = t("trk.err_note_long", length=len(note), max=MAX_NOTE)
    if errors:
        return [], errors
    for name, value in numbers.items():
        params.append({"name": name, "valueDecimal": float(value)})
    if not kind.is_bp:
        params.append({"name": "unit", "valueString": unit.code})
    params.append({"name": "effective", "valueDateTime": when.isoformat(timespec="seconds")})
    if note:
        params.append({"name": "note", "valueString": note})
    return params, {}


#: The operation's names for the stored height or weight a BMI is worked out from.
_BMI_COMPANIONS = {"height_m", "weight_kg"}
_REFUSED_FIELD = {"value": "value", "systolic": "systolic", "diastolic": "diastolic",
                  "unit": "unit", "effective": "date", "note": "note"}


@bp.post("/trackers/<key>")
@signed_in
def record_reading(key: str):
    """Save one reading; errors are shown next to their field and nothing is sent."""
    kind = _kind(key)
    values = {k: request.form.get(k, "") for k in
              ("value", "systolic", "diastolic", "unit", "date", "time", "note")}
    remember_unit(kind, values["unit"])
    if not use_form_id(request.form.get("form_id", "")):
        return _page(kind, {"_form": t("trk.err_twice")}, values, status=409)
    params, errors = check_reading(kind, request.form, dt.datetime.now().astimezone())
    if errors:
        return _page(kind, errors, values, status=400)
    try:
        _, bundle = api().post_operation("Observation/$record-reading", params)
    except GatewayError as exc:
        if exc.status == 422:  # the one 422 of the operation: this reading is already stored
            return _page(kind, {"_form": t("trk.err_duplicate")}, values, status=422)
        if exc.status == 400:
            where = exc.expression.split(",")[0]
            if where in _BMI_COMPANIONS:  # with the stored height (or weight), a BMI over 100
                return _page(kind, {"value": t("trk.refused_bmi")}, values, status=400)
            field = _REFUSED_FIELD.get(where, "_form")
            return _page(kind, {field: t("trk.err_refused", reason=exc.text)}, values,
                         status=400)
        raise
    stored = [e.get("resource") or {} for e in bundle.get("entry") or []]
    reading = next((r for r in stored if r.get("resourceType") == "Observation"), {})
    told = any(r.get("resourceType") == "Communication" for r in stored)
    current().data["tracker_notice"] = {"alerts": alert_keys(reading), "told": told,
                                        "bmi": sum(1 for r in stored
                                                   if r.get("resourceType") == "Observation")
                                        > 1}
    return redirect(url_for("portal.tracker", key=kind.key), code=303)
