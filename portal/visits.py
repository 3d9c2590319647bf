"""Pure rules of the appointments pages: dates a patient types, times in words, which visits
are coming and which are past, when a video visit can be joined, and what the server's
refusals mean. No I/O and no Flask, so each rule is tested on plain values.

Times are shown as the server stores them: the wall clock and date of the stored dateTime
(the clinic's own offset), never converted to the portal machine's zone.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from portal.messages import translate

#: The R4 serviceType code of a telehealth visit (SNOMED CT 448337001), as the gateway uses it.
TELEHEALTH = ("http://snomed.info/sct", "448337001")
#: R5 Appointment.virtualService as an R4 cross-version extension: the join link is `address`.
VIRTUAL_SERVICE = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService"
#: A video visit opens this many minutes before its start (the server's rule for $start-visit).
JOIN_EARLY_MINUTES = 30
#: The longest date range one search may cover, in days (From and To included).
MAX_RANGE_DAYS = 31
#: With no To date, the search covers this many days from From.
DEFAULT_RANGE_DAYS = 7
#: At most this many free times are asked for and listed at once.
MAX_TIMES = 100
MAX_REASON = 1000
VISIT_TYPES = ("in-person", "telehealth")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WINDOW = re.compile(r"until (\d+) hours before")
_PHONE = re.compile(r"call the clinic at (.+?) to change it")


def parse_day(raw: str) -> tuple[date | None, str | None]:
    """(the date, None) or (None, catalogue key of what is wrong)."""
    text = (raw or "").strip()
    if not text:
        return None, "appt.err_date_empty"
    if not _DAY.match(text):
        return None, "appt.err_date_format"
    try:
        return date.fromisoformat(text), None
    except ValueError:
        return None, "appt.err_date_impossible"


@dataclass
class Search:
    """What the patient asked for in the find form, and what is wrong with it."""

    practitioner: str = ""
    visit_type: str = "in-person"
    start: date | None = None
    end: date | None = None
    raw: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # field -> catalogue key
    values: dict[str, dict] = field(default_factory=dict)  # field -> the key's placeholders

    def params(self, patient: str) -> dict:
        """The `Appointment/$find` parameters: from the start of the From day to the start of
        the day after To, days of the portal's time zone (a bare date would be a UTC day)."""
        out = {"visit-type": self.visit_type, "start": local_midnight(self.start),
               "end": local_midnight(self.end + timedelta(days=1)), "_count": str(MAX_TIMES),
               "patient": f"Patient/{patient}"}
        if self.practitioner:
            out["practitioner"] = self.practitioner
        return out


def local_midnight(day: date) -> str:
    """The start of `day` in the portal's time zone, as a FHIR dateTime with its offset."""
    return datetime.combine(day, datetime.min.time()).astimezone().isoformat(timespec="seconds")


def today() -> date:
    """Today in the portal's time zone (the patient's "today", not UTC's)."""
    return datetime.now().astimezone().date()


def check_search(form: dict, doctors: set[str], today: date) -> Search:
    """The find form checked; `errors` maps a field to a catalogue key (`values` its fields)."""
    raw = {k: str(form.get(k, "")) for k in ("practitioner", "visit_type", "start", "end")}
    s = Search(practitioner=raw["practitioner"].strip(), visit_type=raw["visit_type"], raw=raw)
    if s.practitioner and s.practitioner not in doctors:
        s.errors["practitioner"] = "appt.err_doctor"
    if s.visit_type not in VISIT_TYPES:
        s.errors["visit_type"] = "appt.err_visit_type"
    s.start, err = parse_day(raw["start"])
    if err:
        s.errors["start"] = err
    elif s.start < today:
        s.errors["start"] = "appt.err_date_past"
    if raw["end"].strip():
        s.end, err = parse_day(raw["end"])
        if err:
            s.errors["end"] = err
        elif s.start and "start" not in s.errors:
            if s.end < s.start:
                s.errors["end"] = "appt.err_end_before"
            elif (s.end - s.start).days + 1 > MAX_RANGE_DAYS:
                s.errors["end"] = "appt.err_range_long"
                s.values["end"] = {"max": MAX_RANGE_DAYS}
    elif s.start:
        s.end = s.start + timedelta(days=DEFAULT_RANGE_DAYS - 1)
    return s


def check_reason(raw: str) -> tuple[str | None, str | None]:
    """(reason to send or None when left empty, catalogue key of what is wrong or None)."""
    if raw == "":
        return None, None
    if not raw.strip():
        return None, "appt.err_reason_blank"
    text = raw.strip()
    if len(text) > MAX_REASON:
        return None, "appt.err_reason_long"
    if any(unicodedata.category(c) == "Cc" and c not in "\n\r\t" for c in text):
        return None, "appt.err_reason_chars"
    return text, None


# -- times in words -----------------------------------------------------------------------

def moment(value: str | None) -> datetime | None:
    """A stored FHIR dateTime as it was written (its own offset; UTC when it has none)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def day_words(day: date, lang: str) -> str:
    """'Wednesday, December 2, 2026' / 'miércoles 2 de diciembre de 2026'."""
    weekday = translate(lang, f"appt.weekday.{day.weekday()}")
    month = translate(lang, f"appt.month.{day.month}")
    return translate(lang, "appt.day_format", weekday=weekday, month=month, day=day.day,
                     year=day.year)


def time_words(at: datetime, lang: str) -> str:
    """'9:30 AM' in English, '09:30' in Spanish: each language's usual clock."""
    if lang == "en":
        hour = at.hour % 12 or 12
        return f"{hour}:{at.minute:02d} {'AM' if at.hour < 12 else 'PM'}"
    return f"{at.hour:02d}:{at.minute:02d}"


def when_words(value: str | None, lang: str) -> str:
    at = moment(value)
    if at is None:
        return translate(lang, "appt.when_unknown")
    return translate(lang, "appt.when", day=day_words(at.date(), lang),
                     time=time_words(at, lang))


# -- what an Appointment says -------------------------------------------------------------

def is_telehealth(resource: dict) -> bool:
    return any((c.get("system"), c.get("code")) == TELEHEALTH
               for concept in resource.get("serviceType") or []
               for c in concept.get("coding") or [])


def join_link(appointment: dict) -> str | None:
    """The video visit's address (the R5 virtualService extension), if it is an https URL."""
    for ext in appointment.get("extension") or []:
        if ext.get("url") != VIRTUAL_SERVICE:
            continue
        for sub in ext.get("extension") or []:
            url = sub.get("valueUrl") or ""
            if sub.get("url") == "address" and url.startswith("https://"):
                return url
    return None


def actor(appointment: dict, rtype: str) -> dict | None:
    """The first participant of type `rtype`, as its Reference."""
    for part in appointment.get("participant") or []:
        ref = (part.get("actor") or {})
        if str(ref.get("reference", "")).split("/")[-2:-1] == [rtype]:
            return ref
    return None


def ref_id(ref: dict | None) -> str:
    return str((ref or {}).get("reference", "")).rsplit("/", 1)[-1]


def slot_id(appointment: dict) -> str:
    return ref_id((appointment.get("slot") or [None])[0])


def split(appointments: list[dict], now: datetime) -> tuple[list[dict], list[dict]]:
    """(upcoming soonest first, past newest first): upcoming until the visit has ended."""
    upcoming, past = [], []
    for appt in appointments:
        start = moment(appt.get("start"))
        end = moment(appt.get("end")) or start
        if start is None:
            continue
        (upcoming if end > now else past).append(appt)
    upcoming.sort(key=lambda a: moment(a["start"]))
    past.sort(key=lambda a: moment(a["start"]), reverse=True)
    return upcoming, past


def join_state(appointment: dict, now: datetime) -> str | None:
    """For a telehealth visit: 'open' (join now), 'joined' (already in), 'later' (opens
    JOIN_EARLY_MINUTES before the start); None for other visits or when it is over."""
    if not is_telehealth(appointment):
        return None
    start, end = moment(appointment.get("start")), moment(appointment.get("end"))
    if start is None or end is None or now > end:
        return None
    status = appointment.get("status")
    if status == "arrived":
        return "joined"
    if status != "booked":
        return None
    return "open" if now >= start - timedelta(minutes=JOIN_EARLY_MINUTES) else "later"


def opens_at(appointment: dict) -> str:
    """When the video visit opens, as a stored-style dateTime (same offset as the start)."""
    start = moment(appointment.get("start"))
    return (start - timedelta(minutes=JOIN_EARLY_MINUTES)).isoformat() if start else ""


def group_by_day(proposed: list[dict]) -> list[tuple[date, list[dict]]]:
    """Proposed Appointments grouped by their (stored) day, days and times in order."""
    days: dict[date, list[dict]] = {}
    for appt in sorted(proposed, key=lambda a: moment(a.get("start")) or datetime.max.replace(
            tzinfo=UTC)):
        at = moment(appt.get("start"))
        if at is not None:
            days.setdefault(at.date(), []).append(appt)
    return list(days.items())


def window_refusal(text: str) -> tuple[str, str] | None:
    """(hours, phone) from the server's refusal to change a visit inside its window."""
    hours = _WINDOW.search(text or "")
    if not hours:
        return None
    phone = _PHONE.search(text)
    return hours.group(1), (phone.group(1) if phone else "")
