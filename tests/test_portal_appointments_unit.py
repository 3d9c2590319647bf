"""The appointments pages' pure rules (`portal/visits.py`) without a browser: the dates a
patient types, times in words in both languages, coming and past visits, when a video visit
opens, and reading the gateway's refusals (checked against the gateway's own wording)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from mappings.portal import scheduling as sched
from portal import PortalSettings, create_portal, visits
from portal.fhir_api import valid_id
from portal.messages import EN

TODAY = date(2026, 12, 1)
TELE = {"coding": [{"system": "http://snomed.info/sct", "code": "448337001"}]}
OFFICE = {"coding": [{"system": "http://snomed.info/sct", "code": "11429006"}]}


def form(**kw) -> dict:
    return {"practitioner": "prac-01", "visit_type": "in-person", "start": "2026-12-04",
            "end": "", **kw}


@pytest.mark.parametrize(("raw", "err"), [
    ("", "appt.err_date_empty"), ("   ", "appt.err_date_empty"),
    ("2026-02-30", "appt.err_date_impossible"), ("2026-13-01", "appt.err_date_impossible"),
    ("04/12/2026", "appt.err_date_format"), ("tomorrow", "appt.err_date_format"),
    ("2026-12-4", "appt.err_date_format"), ("2026-12-04T10:00", "appt.err_date_format"),
])
def test_bad_dates_are_named(raw, err):
    assert visits.parse_day(raw) == (None, err)


def test_search_checks_every_field_and_builds_the_find_parameters():
    ok = visits.check_search(form(), {"prac-01"}, TODAY)
    assert not ok.errors and ok.end == date(2026, 12, 10)  # seven days with no To date
    assert ok.params("pat-0001") == {
        "visit-type": "in-person", "start": visits.local_midnight(date(2026, 12, 4)),
        "end": visits.local_midnight(date(2026, 12, 11)),
        "_count": "100", "patient": "Patient/pat-0001", "practitioner": "prac-01"}
    anyone = visits.check_search(form(practitioner="", end="2026-12-04"), set(), TODAY)
    assert not anyone.errors and "practitioner" not in anyone.params("pat-0001")
    assert anyone.params("p")["end"] == visits.local_midnight(date(2026, 12, 5))
    # the days are the portal's: midnight where it runs, with the offset, not a UTC day
    start = datetime.fromisoformat(ok.params("p")["start"])
    assert start.utcoffset() == datetime(2026, 12, 4).astimezone().utcoffset()
    assert (start.hour, start.minute) == (0, 0)
    assert visits.check_search(form(start="2026-11-30"), {"prac-01"}, TODAY).errors == {
        "start": "appt.err_date_past"}
    assert not visits.check_search(form(start="2026-12-01"), {"prac-01"}, TODAY).errors
    longest = visits.check_search(form(start="2026-12-01", end="2026-12-31"), {"prac-01"}, TODAY)
    assert not longest.errors
    too_long = visits.check_search(form(start="2026-12-01", end="2027-01-01"), {"prac-01"},
                                   TODAY)
    assert too_long.errors == {"end": "appt.err_range_long"}
    assert too_long.values["end"] == {"max": 31}
    assert visits.check_search(form(end="2026-12-03"), {"prac-01"}, TODAY).errors == {
        "end": "appt.err_end_before"}
    bad = visits.check_search(form(practitioner="prac-99", visit_type="home", start=""),
                              {"prac-01"}, TODAY)
    assert bad.errors == {"practitioner": "appt.err_doctor",
                          "visit_type": "appt.err_visit_type", "start": "appt.err_date_empty"}
    assert set(bad.errors.values()) <= set(EN)


def test_cancel_reason_is_optional_but_checked():
    assert visits.check_reason("") == (None, None)
    assert visits.check_reason("  Feeling better \n") == ("Feeling better", None)
    assert visits.check_reason("   ") == (None, "appt.err_reason_blank")
    assert visits.check_reason("x" * 1001) == (None, "appt.err_reason_long")
    assert visits.check_reason("x" * 1000) == ("x" * 1000, None)
    assert visits.check_reason("bad\x00byte") == (None, "appt.err_reason_chars")
    assert visits.check_reason("two\nlines") == ("two\nlines", None)


def test_times_in_words_keep_the_stored_clock():
    stored = "2026-12-02T09:30:00-05:00"  # the clinic's offset: shown as written
    assert visits.when_words(stored, "en") == "Wednesday, December 2, 2026 at 9:30 AM"
    assert visits.when_words(stored, "es") == "miércoles 2 de diciembre de 2026 a las 09:30"
    assert visits.when_words("2026-12-02T17:00:00Z", "en").endswith("at 5:00 PM")
    assert visits.when_words("2026-12-02T00:05:00Z", "en").endswith("at 12:05 AM")
    assert visits.when_words("2026-12-02T12:00:00Z", "en").endswith("at 12:00 PM")
    assert visits.when_words("not a date", "en") == "Time not known"
    assert visits.when_words(None, "es") == "Hora desconocida"


def appt(start: datetime, *, status="booked", tele=False, minutes=30, aid="a1") -> dict:
    return {"resourceType": "Appointment", "id": aid, "status": status,
            "serviceType": [TELE if tele else OFFICE], "start": start.isoformat(),
            "end": (start + timedelta(minutes=minutes)).isoformat()}


def test_coming_and_past_visits():
    now = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    clinic = timezone(timedelta(hours=-5))
    during = appt(datetime(2026, 12, 1, 9, 50, tzinfo=clinic), aid="during")  # 14:50Z-15:20Z
    done = appt(now - timedelta(days=3), status="fulfilled", aid="done")
    older = appt(now - timedelta(days=30), status="fulfilled", aid="older")
    soon = appt(now + timedelta(days=1), aid="soon")
    later = appt(now + timedelta(days=9), aid="later")
    coming, past = visits.split([older, later, done, during, soon, {"id": "no-start"}], now)
    assert [a["id"] for a in coming] == ["during", "soon", "later"]  # until the visit ends
    assert [a["id"] for a in past] == ["done", "older"]


def test_a_video_visit_opens_30_minutes_early_and_closes_at_its_end():
    start = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    video = appt(start, tele=True)
    assert visits.join_state(video, start - timedelta(minutes=31)) == "later"
    assert visits.join_state(video, start - timedelta(minutes=30)) == "open"
    assert visits.join_state(video, start + timedelta(minutes=30)) == "open"
    assert visits.join_state(video, start + timedelta(minutes=31)) is None
    assert visits.join_state({**video, "status": "arrived"}, start) == "joined"
    assert visits.join_state({**video, "status": "cancelled"}, start) is None
    assert visits.join_state(appt(start), start) is None  # in person: no video
    assert visits.opens_at(video) == "2026-12-01T14:30:00+00:00"
    # the same rule the gateway applies to $start-visit
    for minutes, allowed in ((-31, False), (-30, True), (30, True), (31, False)):
        try:
            sched.check_visit_time(video, start + timedelta(minutes=minutes), "x")
            ok = True
        except sched.SchedulingError:
            ok = False
        assert ok is allowed
        assert (visits.join_state(video, start + timedelta(minutes=minutes)) == "open") is ok


def test_join_link_is_the_virtual_service_address():
    booked = sched.booked_appointment(
        {"id": "s1", "serviceType": [TELE], "start": "2026-12-01T15:00:00Z",
         "end": "2026-12-01T15:30:00Z"}, {"actor": []}, "pat-0001", "a-1",
        datetime(2026, 11, 1, tzinfo=UTC))
    assert visits.is_telehealth(booked)
    assert visits.join_link(booked) == sched.join_link("a-1")
    tampered = {"extension": [{"url": visits.VIRTUAL_SERVICE, "extension": [
        {"url": "address", "valueUrl": "javascript:alert(1)"}]}]}
    assert visits.join_link(tampered) is None and visits.join_link({}) is None


def test_free_times_grouped_by_their_stored_day():
    clinic = timezone(timedelta(hours=-5))
    times = [appt(datetime(2026, 12, d, h, 0, tzinfo=clinic), aid=f"{d}-{h}")
             for d, h in ((3, 9), (2, 15), (2, 9), (3, 20))]
    grouped = visits.group_by_day(times)
    assert [(day.isoformat(), [a["id"] for a in group]) for day, group in grouped] == [
        ("2026-12-02", ["2-9", "2-15"]), ("2026-12-03", ["3-9", "3-20"])]  # 20:00-05:00 stays


def test_the_gateways_window_refusal_is_read_back():
    start = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    with pytest.raises(sched.SchedulingError) as err:
        sched.check_window(appt(start), start - timedelta(hours=2), 24, "cancelled",
                           "call the clinic at (217) 555-0100", "Appointment.start")
    assert visits.window_refusal(str(err.value)) == ("24", "(217) 555-0100")
    with pytest.raises(sched.SchedulingError) as err:
        sched.check_window(appt(start), start - timedelta(hours=2), 48, "rescheduled",
                           "call the clinic", "Appointment.start")
    assert visits.window_refusal(str(err.value)) == ("48", "")
    assert visits.window_refusal("Slot/x is taken") is None


def test_ids_in_forms_are_opaque_fhir_ids_only():
    assert valid_id("slot-01-20261202-0900") and valid_id("a.b-C9")
    for bad in ("", "../Patient/1", "a/b", "x" * 65, "a b", "a?b=1"):
        assert not valid_id(bad)


def test_every_appointment_status_has_words_in_both_languages():
    from portal.messages import ES
    r4 = {"proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow",
          "entered-in-error", "checked-in", "waitlist"}
    assert {f"appt.status.{s}" for s in r4} <= set(EN) & set(ES)


def test_appointment_pages_need_a_sign_in():
    app = create_portal(PortalSettings(
        fhir_base="http://127.0.0.1:9/fhir", client_id="demo-portal",
        redirect_uri="http://127.0.0.1:8081/callback", secret_key="test-secret"))
    app.config["WTF_CSRF_ENABLED"] = False
    client = app.test_client()
    for path in ("/appointments", "/appointments/find", "/appointments/a-1/change",
                 "/appointments/a-1/cancel"):
        resp = client.get(path)
        assert resp.status_code == 302 and resp.headers["Location"].endswith("/signin"), path
    for path in ("/appointments/find", "/appointments/choose", "/appointments/book",
                 "/appointments/cancel", "/appointments/join"):
        resp = client.post(path, data={"slot": "s1", "appointment": "a-1"})
        assert resp.status_code == 302 and resp.headers["Location"].endswith("/signin"), path
