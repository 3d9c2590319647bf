"""Appointments in the portal, end to end in a real browser: find a time, hold and book it,
a time taken meanwhile, change the time, cancel (and the clinic's window), join a video visit;
every bad input changes nothing at the gateway (store fingerprint). Each flow checks what the
gateway stored: the Appointment and its Slot (booked/busy, freed, moved, arrived + Encounter).

The seeded clinic's slots lie around 2026-06-15, so each test adds its own future Slots on the
seeded Schedules (`sched-01`: Dr. Sarah Mitchell in person at the main clinic, phone
(217) 555-0100; `sched-05`: Dr. Karen Walsh, telehealth).
"""

from __future__ import annotations

import itertools
import re
import uuid
from datetime import UTC, datetime, timedelta

from mappings.portal import scheduling as sched
from tests.browser.support import check_page, menu, sign_in
from tests.test_scheduling import IN_PERSON, TELEHEALTH

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
DAY = (NOW + timedelta(days=5)).date()  # outside the 24-hour cancellation window
_ids = itertools.count(1)


def at(day, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def add_slot(env, start: datetime, tele: bool = False, **extra) -> dict:
    body = {"resourceType": "Slot", "id": f"pslot-{next(_ids):03d}-{uuid.uuid4().hex[:6]}",
            "serviceType": [TELEHEALTH if tele else IN_PERSON],
            "schedule": {"reference": f"Schedule/{'sched-05' if tele else 'sched-01'}"},
            "status": "free", "start": sched.instant(start),
            "end": sched.instant(start + timedelta(minutes=30)), **extra}
    env.live.adapter.load([body])
    return env.live.adapter.read("Slot", body["id"])


def stored(env, rtype: str, rid: str) -> dict:
    return env.live.adapter.read(rtype, rid)


def appointments_on(env, slot_id: str) -> list[dict]:
    return [r for r in env.live.adapter.iter_all() if r["resourceType"] == "Appointment"
            and r.get("slot") == [{"reference": f"Slot/{slot_id}"}]]


def words(moment: datetime) -> str:
    hour = moment.hour % 12 or 12
    clock = f"{hour}:{moment.minute:02d} {'AM' if moment.hour < 12 else 'PM'}"
    return f"{moment:%A}, {moment:%B} {moment.day}, {moment.year} at {clock}"


def book_by_api(env, token: str, slot: dict) -> dict:
    with env.fhir(token) as fhir:
        resp = fhir.post("Appointment/$book", headers={"Content-Type": "application/fhir+json"},
                         json={"resourceType": "Parameters", "parameter": [
                             {"name": "slot",
                              "valueReference": {"reference": f"Slot/{slot['id']}"}}]})
    assert resp.status_code == 201, resp.text
    return resp.json()


def signed_in_token(page, portal, user: str = "ann") -> str:
    known = set(portal.tokens())
    sign_in(page, portal, user)
    (token,) = set(portal.tokens()) - known
    return token


def hidden_fields(form) -> dict:
    return {el.get_attribute("name"): el.get_attribute("value")
            for el in form.locator('input[type="hidden"]').all()}


def submit(page, button: str) -> None:
    """Press a form's button and wait for the page it loads (never read the old page)."""
    with page.expect_navigation():
        page.get_by_role("button", name=button).click()


def search(page, start: str, end: str = "", doctor: str = "prac-01",
           kind: str = "in-person") -> None:
    page.select_option("#practitioner", doctor)
    page.check(f'input[name="visit_type"][value="{kind}"]')
    page.fill("#start", start)
    page.fill("#end", end)
    submit(page, "Show free times")


def test_find_book_and_every_bad_input(env, portal, page):
    first, second = add_slot(env, at(DAY, 14)), add_slot(env, at(DAY, 14, 30))
    sign_in(page, portal, "ann")
    menu(page, "Appointments")
    page.wait_for_url(f"{portal.url}/appointments")
    past = page.locator("ul.past li.visit")
    seeded = [r for r in env.live.adapter.iter_all() if r["resourceType"] == "Appointment"
              and sched.patient_of(r) == "pat-0001"]
    assert past.count() == len(seeded) > 0  # the seeded visits all lie in the past
    newest = max(seeded, key=lambda a: a["start"])
    assert past.first.get_attribute("data-appointment") == newest["id"]
    check_page(page, "appointments")

    page.get_by_role("link", name="Find a time for a new visit").click()
    page.wait_for_url(f"{portal.url}/appointments/find")
    assert page.locator("#practitioner option").count() == 6  # any doctor + the 5 schedules
    check_page(page, "appointments-find")

    yesterday = (NOW - timedelta(days=1)).date().isoformat()
    for start, end, field, text, shot in (
            ("", "", "start", "Write a date.", None),
            (yesterday, "", "start", "in the past", "appointments-find-errors"),
            (DAY.isoformat(), (DAY + timedelta(days=40)).isoformat(), "end",
             "at most 31 days", None),
            (DAY.isoformat(), (DAY - timedelta(days=1)).isoformat(), "end",
             "before the From date", None)):
        mark = env.live.fingerprint()
        search(page, start, end)
        error = page.locator(f"#err-{field}")
        assert text in error.inner_text() and error.get_attribute("role") == "alert"
        box = page.locator(f"#{field}")
        assert box.get_attribute("aria-invalid") == "true"
        assert f"err-{field}" in box.get_attribute("aria-describedby")
        assert page.locator("section.results").count() == 0
        assert env.live.fingerprint() == mark
        if shot:
            check_page(page, shot)

    # what a browser's date field cannot send but a tampered form can
    csrf = page.locator('form.find input[name="csrf_token"]').get_attribute("value")
    for start, text in (("2026-02-30", "does not exist"), ("31/12/2026", "year-month-day"),
                        ("x" * 300, "year-month-day")):
        mark = env.live.fingerprint()
        resp = page.request.post(f"{portal.url}/appointments/find", form={
            "csrf_token": csrf, "practitioner": "prac-01", "visit_type": "in-person",
            "start": start, "end": ""})
        assert resp.status == 400 and text in resp.text()
        assert 'aria-invalid="true"' in resp.text() and env.live.fingerprint() == mark
    for tampered, text in (({"practitioner": "prac-99"}, "Choose a doctor from the list"),
                           ({"visit_type": "house-call"}, "Choose in person or video")):
        resp = page.request.post(f"{portal.url}/appointments/find", form={
            "csrf_token": csrf, "practitioner": "prac-01", "visit_type": "in-person",
            "start": DAY.isoformat(), "end": "", **tampered})
        assert resp.status == 400 and text in resp.text() and env.live.fingerprint() == mark

    search(page, DAY.isoformat())
    day = page.locator(f'fieldset.day[data-day="{DAY.isoformat()}"]')
    assert day.locator("legend").inner_text() == f"{DAY:%A}, {DAY:%B} {DAY.day}, {DAY.year}"
    offered = [el.get_attribute("value") for el in day.locator('input[name="slot"]').all()]
    assert offered[:2] == [first["id"], second["id"]]
    assert "2:00 PM with Dr. Sarah Mitchell, in person" in day.locator("li").first.inner_text()
    check_page(page, "appointments-times")

    mark = env.live.fingerprint()
    submit(page, "Continue")
    assert "Choose a time from the list" in page.locator("#err-slot").inner_text()
    assert env.live.fingerprint() == mark

    page.check(f'input[name="slot"][value="{first["id"]}"]')
    submit(page, "Continue")
    assert page.locator("h1").inner_text() == "Check your visit"
    held = stored(env, "Slot", first["id"])  # $hold keeps it while the patient confirms
    assert held["status"] == "busy-tentative"
    assert sched.hold_of(held).patient == "pat-0001"
    assert words(at(DAY, 14)) in page.locator(".chosen .when").inner_text()
    check_page(page, "appointments-confirm")

    form = page.locator('form[action="/appointments/book"]')
    fields = hidden_fields(form)
    submit(page, "Book this visit")
    page.wait_for_url(f"{portal.url}/appointments")
    (booked,) = appointments_on(env, first["id"])
    assert booked["status"] == "booked" and booked["start"] == first["start"]
    assert sched.patient_of(booked) == "pat-0001"
    assert stored(env, "Slot", first["id"])["status"] == "busy"
    notice = page.locator("div.notice")
    assert "Your visit is booked." in notice.inner_text()
    assert words(at(DAY, 14)) in notice.inner_text() and "Dr. Sarah Mitchell" in notice.inner_text()
    assert "Maple Grove Family Health - Main Clinic" in notice.inner_text()
    card = page.locator(f'li.visit[data-appointment="{booked["id"]}"]')
    assert "Booked" in card.locator(".status").inner_text()
    check_page(page, "appointments-booked")

    # the same confirmation sent again (double click, back and resend) books nothing more
    mark = env.live.fingerprint()
    resp = page.request.post(f"{portal.url}/appointments/book", form=fields)
    assert resp.status == 409 and "already sent" in resp.text()
    assert env.live.fingerprint() == mark and len(appointments_on(env, first["id"])) == 1

    # unknown slots, a slot another patient holds, another patient's appointment: 404, nothing
    theirs = add_slot(env, at(DAY, 15))
    env.live.adapter.load([sched.held_slot(theirs, "pat-0002", NOW + timedelta(hours=2))])
    bobs = next(r["id"] for r in env.live.adapter.iter_all() if r["resourceType"] == "Appointment"
                and sched.patient_of(r) == "pat-0002")
    criteria = {"csrf_token": csrf, "practitioner": "prac-01", "visit_type": "in-person",
                "start": DAY.isoformat(), "end": ""}
    # a real one-time form id (from the patient's own confirm page), to prove that moving
    # another patient's appointment is refused for its owner, not for a stale form
    confirm = page.request.post(f"{portal.url}/appointments/choose",
                                form={**criteria, "slot": second["id"]})
    assert confirm.status == 200, confirm.text()
    real_id = re.search(r'name="form_id" value="([^"]+)"', confirm.text()).group(1)
    mark = env.live.fingerprint()
    for path, form, status, text in (
            ("choose", {"slot": "no-such-slot"}, 404, "could not find that time"),
            ("choose", {"slot": theirs["id"]}, 404, "could not find that time"),
            ("choose", {"slot": "../Patient/pat-0002"}, 400, "could not find that time"),
            ("choose", {"slot": second["id"], "appointment": bobs}, 404,
             "could not find that appointment"),
            ("book", {"slot": second["id"], "appointment": bobs, "form_id": "x"}, 409,
             "already sent"),
            ("book", {"slot": second["id"], "appointment": bobs, "form_id": real_id}, 404,
             "could not find that appointment"),
            ("cancel", {"appointment": bobs, "reason": "", "form_id": "x"}, 404,
             "could not find that appointment"),
            ("join", {"appointment": bobs, "form_id": "x"}, 404,
             "could not find that appointment")):
        resp = page.request.post(f"{portal.url}/appointments/{path}", form={**criteria, **form})
        assert resp.status == status and text in resp.text(), (path, form, resp.status)
        assert 'role="alert"' in resp.text()
    assert page.request.get(f"{portal.url}/appointments/{bobs}/cancel").status == 404
    assert page.request.get(f"{portal.url}/appointments/{bobs}/change").status == 404
    assert env.live.fingerprint() == mark
    # choices travel in POST bodies: no name, birth date or slot in any URL the browser opened
    patient = stored(env, "Patient", "pat-0001")
    for url in page.requested_urls:
        assert patient["name"][0]["given"][0] not in url and patient["birthDate"] not in url
        assert first["id"] not in url, url


def test_a_time_taken_meanwhile_says_so_and_offers_the_list_again(env, portal, page):
    wanted, other = add_slot(env, at(DAY, 16)), add_slot(env, at(DAY, 16, 30))
    sign_in(page, portal, "ann")
    page.goto(f"{portal.url}/appointments/find")
    search(page, DAY.isoformat(), DAY.isoformat())
    page.check(f'input[name="slot"][value="{wanted["id"]}"]')
    submit(page, "Continue")
    assert page.locator("h1").inner_text() == "Check your visit"
    # back to the list: the time this patient holds is still offered to her, and kept held
    submit(page, "Choose another time")
    assert page.locator("#start").input_value() == DAY.isoformat()
    page.check(f'input[name="slot"][value="{wanted["id"]}"]')
    submit(page, "Continue")
    assert stored(env, "Slot", wanted["id"])["status"] == "busy-tentative"
    # meanwhile the clinic's front desk gives the time to someone on the phone
    env.live.adapter.load([sched.booked_slot(stored(env, "Slot", wanted["id"]))])
    mark = env.live.fingerprint()
    submit(page, "Book this visit")
    assert "someone else just took that time" in page.locator("#err-page").inner_text()
    offered = [el.get_attribute("value") for el in page.locator('input[name="slot"]').all()]
    assert other["id"] in offered and wanted["id"] not in offered
    assert env.live.fingerprint() == mark and appointments_on(env, wanted["id"]) == []
    check_page(page, "appointments-taken")

    # a busy doctor: the first 100 free times are listed, and the page says there are more
    far = DAY + timedelta(days=20)
    many = [{"resourceType": "Slot", "id": f"many-{i:03d}", "serviceType": [IN_PERSON],
             "schedule": {"reference": "Schedule/sched-02"}, "status": "free",
             "start": sched.instant(at(far, 8) + timedelta(minutes=5 * i)),
             "end": sched.instant(at(far, 8) + timedelta(minutes=5 * i + 5))}
            for i in range(101)]
    env.live.adapter.load(many)
    page.goto(f"{portal.url}/appointments/find")
    search(page, far.isoformat(), doctor="prac-02")
    assert page.locator('input[name="slot"]').count() == 100
    assert "first 100 free times" in page.locator("p.more").inner_text()


def test_change_the_time_then_cancel_and_the_clinics_window(env, portal, page):
    later = DAY + timedelta(days=1)
    old, new = add_slot(env, at(later, 14)), add_slot(env, at(later, 15))
    token = signed_in_token(page, portal)
    appt = book_by_api(env, token, old)
    page.goto(f"{portal.url}/appointments")
    card = page.locator(f'li.visit[data-appointment="{appt["id"]}"]')
    assert words(at(later, 14)) in card.locator("h3").inner_text()
    card.get_by_role("link", name="Change the time").click()
    page.wait_for_url(f"{portal.url}/appointments/{appt['id']}/change")
    assert page.locator("#practitioner").input_value() == "prac-01"
    assert words(at(later, 14)) in page.locator("p.moving").inner_text()
    check_page(page, "appointments-change")
    page.fill("#start", later.isoformat())
    submit(page, "Show free times")
    offered = [el.get_attribute("value") for el in page.locator('input[name="slot"]').all()]
    assert new["id"] in offered and old["id"] not in offered  # not "moved" onto itself
    page.check(f'input[name="slot"][value="{new["id"]}"]')
    submit(page, "Continue")
    assert words(at(later, 14)) in page.locator(".old .when").inner_text()
    assert words(at(later, 15)) in page.locator(".chosen .when").inner_text()
    check_page(page, "appointments-confirm-move")
    submit(page, "Move my visit to this time")
    page.wait_for_url(f"{portal.url}/appointments")
    assert "moved to the new time" in page.locator("div.notice").inner_text()
    moved = stored(env, "Appointment", appt["id"])  # the same appointment, one atomic move
    assert moved["slot"] == [{"reference": f"Slot/{new['id']}"}]
    assert moved["start"] == new["start"] and moved["status"] == "booked"
    assert stored(env, "Slot", new["id"])["status"] == "busy"
    assert stored(env, "Slot", old["id"])["status"] == "free"

    card = page.locator(f'li.visit[data-appointment="{appt["id"]}"]')
    card.get_by_role("link", name="Cancel this visit").click()
    page.wait_for_url(f"{portal.url}/appointments/{appt['id']}/cancel")
    check_page(page, "appointments-cancel")
    for reason, text in (("   ", "only spaces"), ("x" * 1001, "too long: 1001 characters")):
        mark = env.live.fingerprint()
        page.fill("#reason", reason)
        submit(page, "Yes, cancel this visit")
        assert text in page.locator("#err-reason").inner_text()
        assert page.locator("#reason").get_attribute("aria-invalid") == "true"
        assert "err-reason" in page.locator("#reason").get_attribute("aria-describedby")
        assert env.live.fingerprint() == mark
    check_page(page, "appointments-cancel-error")
    page.fill("#reason", "Feeling better")
    fields = {**hidden_fields(page.locator('form[action="/appointments/cancel"]')),
              "reason": "Feeling better"}
    submit(page, "Yes, cancel this visit")
    page.wait_for_url(f"{portal.url}/appointments")
    mark = env.live.fingerprint()  # the same form again changes nothing
    resp = page.request.post(f"{portal.url}/appointments/cancel", form=fields)
    assert resp.status == 409 and "already sent" in resp.text()
    assert env.live.fingerprint() == mark
    assert "Your visit was cancelled." in page.locator("div.notice").inner_text()
    cancelled = stored(env, "Appointment", appt["id"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelationReason"]["text"] == "Feeling better"
    assert stored(env, "Slot", new["id"])["status"] == "free"  # freed for someone else
    card = page.locator(f'li.visit[data-appointment="{appt["id"]}"]')
    assert "Cancelled" in card.locator(".status").inner_text()
    assert card.get_by_role("link").count() == 0

    # inside the clinic's 24-hour window the gateway refuses; the page says why and whom to call
    soon = book_by_api(env, token, add_slot(env, NOW + timedelta(hours=3)))
    page.goto(f"{portal.url}/appointments/{soon['id']}/cancel")
    mark = env.live.fingerprint()
    submit(page, "Yes, cancel this visit")
    error = page.locator("#err-page").inner_text()
    assert "until 24 hours before" in error and "(217) 555-0100" in error
    assert page.locator("#reason").count() == 0  # the form goes away
    assert env.live.fingerprint() == mark
    assert stored(env, "Appointment", soon["id"])["status"] == "booked"
    check_page(page, "appointments-cancel-window")
    # moving it is refused the same way, after the patient chose the new time: nothing moves
    spare = add_slot(env, at(later, 16))
    page.goto(f"{portal.url}/appointments/{soon['id']}/change")
    page.fill("#start", later.isoformat())
    submit(page, "Show free times")
    page.check(f'input[name="slot"][value="{spare["id"]}"]')
    submit(page, "Continue")
    mark = env.live.fingerprint()
    submit(page, "Move my visit to this time")
    assert "until 24 hours before" in page.locator("#err-page").inner_text()
    assert env.live.fingerprint() == mark
    assert stored(env, "Appointment", soon["id"])["slot"] == soon["slot"]


def test_join_a_video_visit(env, portal, page):
    token = signed_in_token(page, portal)
    now_slot = add_slot(env, datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10),
                        tele=True)
    visit = book_by_api(env, token, now_slot)
    future = book_by_api(env, token, add_slot(env, at(DAY + timedelta(days=2), 17), tele=True))
    page.goto(f"{portal.url}/appointments")
    later = page.locator(f'li.visit[data-appointment="{future["id"]}"]')
    opens = at(DAY + timedelta(days=2), 16, 30)
    assert words(opens) in later.locator(".join-later").inner_text()
    assert later.get_by_role("button", name="Join video visit").count() == 0
    card = page.locator(f'li.visit[data-appointment="{visit["id"]}"]')
    assert "Video visit" in card.locator(".where").inner_text()
    check_page(page, "appointments-video")

    fields = hidden_fields(card.locator("form"))
    with page.expect_navigation():
        card.get_by_role("button", name="Join video visit").click()
    assert page.locator("h1").inner_text() == "Your video visit has started"
    mark = env.live.fingerprint()  # the same form again changes nothing
    resp = page.request.post(f"{portal.url}/appointments/join", form=fields)
    assert resp.status == 409 and "already sent" in resp.text()
    assert env.live.fingerprint() == mark
    arrived = stored(env, "Appointment", visit["id"])
    assert arrived["status"] == "arrived"
    (encounter,) = [r for r in env.live.adapter.iter_all() if r["resourceType"] == "Encounter"
                    and r.get("appointment") == [{"reference": f"Appointment/{visit['id']}"}]]
    assert encounter["status"] == "in-progress" and encounter["class"]["code"] == "VR"
    link = next(s["valueUrl"] for e in arrived["extension"]
                if e["url"] == sched.VIRTUAL_SERVICE_EXTENSION for s in e["extension"]
                if s["url"] == "address")
    assert page.get_by_role("link", name="Open the video visit").get_attribute("href") == link
    check_page(page, "appointments-joined")

    page.goto(f"{portal.url}/appointments")
    card = page.locator(f'li.visit[data-appointment="{visit["id"]}"]')
    assert card.get_by_role("link", name="Go back to the video visit").get_attribute(
        "href") == link
    assert card.get_by_role("button", name="Join video visit").count() == 0
    # the "Larger text" setting comes back to this page, and the page still passes at both sizes
    submit(page, "Larger text")
    page.wait_for_url(f"{portal.url}/appointments")
    assert page.locator("html.large-text").count() == 1
    check_page(page, "appointments-large-text")
    # and in Spanish, dates and times in Spanish words
    page.select_option("#lang-select", "es")
    submit(page, "Change language")
    page.wait_for_url(f"{portal.url}/appointments")
    assert page.locator("h1").inner_text() == "Citas"
    later = page.locator(f'li.visit[data-appointment="{future["id"]}"]')
    day = DAY + timedelta(days=2)
    weekday = ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado",
               "domingo")[day.weekday()]
    assert later.locator("h3").inner_text().startswith(f"{weekday} {day.day} de ")
    assert later.locator("h3").inner_text().endswith("a las 17:00")
