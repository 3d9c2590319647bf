"""Health trackers end to end in a real browser: readings entered in the patient's own units
(stored by `Observation/$record-reading` as UCUM vital signs, checked here in the gateway's
store), each kind's chart and table (`$lastn`) and 30-day summary (`$stats`) in the patient's
unit, alerts said in words with the care team's Communication, Home's "Tracker alerts" agreeing,
and every kind of bad input shown next to its field while the store stays unchanged.
"""

from __future__ import annotations

import datetime as dt

from tests.browser.support import check_page, menu, sign_in

UCUM = "http://unitsofmeasure.org"


def observations(env, pid: str, loinc: str) -> list[dict]:
    return [r for r in env.live.adapter.iter_all() if r["resourceType"] == "Observation"
            and r["subject"]["reference"] == f"Patient/{pid}"
            and r["code"]["coding"][0]["code"] == loinc]


def yesterday(hour: int, minute: int = 0) -> dt.datetime:
    """A time of yesterday in the portal's (this machine's) zone, aware."""
    day = dt.date.today() - dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(hour, minute)).astimezone()


def fill_time(page, when: dt.datetime) -> None:
    page.fill("#f-date", when.date().isoformat())
    page.fill("#f-time", when.strftime("%H:%M"))


def only_new(before: list[dict], after: list[dict]) -> dict:
    known = {o["id"] for o in before}
    (new,) = [o for o in after if o["id"] not in known]
    return new


def test_readings_in_the_patients_units_chart_table_and_summary(env, portal, page):
    sign_in(page, portal, "bob")
    menu(page, "Health trackers")
    page.wait_for_url(f"{portal.url}/trackers")
    assert page.locator("li.tracker-card").count() == 9
    check_page(page, "trackers")

    # weight in pounds: stored in kg (UCUM), BMI added from the stored height
    page.locator('li[data-kind="weight"]').get_by_role("link").click()
    page.wait_for_url(f"{portal.url}/trackers/weight")
    before, bmi_before = observations(env, "pat-0002", "29463-7"), \
        observations(env, "pat-0002", "39156-5")
    page.fill("#f-value", "165")
    page.select_option("#f-unit", "lb")
    when = yesterday(8, 30)
    fill_time(page, when)
    page.fill("#f-note", "After breakfast")
    page.get_by_role("button", name="Save reading").click()
    page.wait_for_url(f"{portal.url}/trackers/weight")
    notice = page.locator("div.notice[role=status]").inner_text()
    assert "Your reading was saved" in notice and "BMI" in notice
    weight = only_new(before, observations(env, "pat-0002", "29463-7"))
    assert weight["valueQuantity"] == {"value": 74.84, "unit": "kg", "system": UCUM,
                                       "code": "kg"}
    assert dt.datetime.fromisoformat(weight["effectiveDateTime"]) == when
    assert weight["note"] == [{"text": "After breakfast"}]
    assert weight["category"][0]["coding"][0]["code"] == "vital-signs"
    assert "interpretation" not in weight
    bmi = only_new(bmi_before, observations(env, "pat-0002", "39156-5"))
    assert bmi["valueQuantity"]["code"] == "kg/m2"
    # shown in the patient's unit (remembered), the chart and the table hold the same readings
    assert page.locator("#latest-reading").inner_text() == "165.0 lb (pounds)"
    assert page.locator("#f-unit").input_value() == "lb"
    stored = observations(env, "pat-0002", "29463-7")
    rows = page.locator("table.readings tbody tr")
    assert rows.count() == len(stored) == len(before) + 1
    assert page.locator("svg.chart circle").count() == len(stored)
    first = rows.first
    assert first.get_attribute("data-reading") == weight["id"]
    assert first.locator("td").nth(1).inner_text() == "165.0 lb (pounds)"
    assert first.locator("td").nth(3).inner_text() == "After breakfast"
    oldest = min(stored, key=lambda o: o["effectiveDateTime"])
    pounds = oldest["valueQuantity"]["value"] / 0.45359237
    assert rows.last.locator("td").nth(1).inner_text() == f"{pounds:.1f} lb (pounds)"
    # the 30-day summary ($stats): only the new reading is that recent
    assert page.locator("#stats").inner_text() == (
        "Last 30 days: average 165.0, lowest 165.0, highest 165.0 lb (pounds). "
        "Number of readings: 1.")
    check_page(page, "tracker-weight")
    # another display unit, for the rest of the session
    page.select_option("#show-unit", "kg")
    page.get_by_role("button", name="Change unit").click()
    page.wait_for_url(f"{portal.url}/trackers/weight")
    assert page.locator("#latest-reading").inner_text() == "74.8 kg"
    page.select_option("#show-unit", "lb")
    page.get_by_role("button", name="Change unit").click()

    # blood sugar in mmol/L, stored in mg/dL
    page.goto(f"{portal.url}/trackers/glucose")
    before = observations(env, "pat-0002", "2339-0")
    page.fill("#f-value", "6,1")  # a decimal comma is understood
    page.select_option("#f-unit", "mmol/L")
    fill_time(page, yesterday(9))
    page.get_by_role("button", name="Save reading").click()
    page.wait_for_url(f"{portal.url}/trackers/glucose")
    glucose = only_new(before, observations(env, "pat-0002", "2339-0"))
    assert glucose["valueQuantity"] == {"value": 110, "unit": "mg/dL", "system": UCUM,
                                        "code": "mg/dL"}
    assert page.locator("#latest-reading").inner_text() == "6.1 mmol/L"

    # temperature in degF, stored in Cel
    page.goto(f"{portal.url}/trackers/temperature")
    before = observations(env, "pat-0002", "8310-5")
    page.fill("#f-value", "98.6")
    page.select_option("#f-unit", "degF")
    fill_time(page, yesterday(9, 5))
    page.get_by_role("button", name="Save reading").click()
    page.wait_for_url(f"{portal.url}/trackers/temperature")
    temperature = only_new(before, observations(env, "pat-0002", "8310-5"))
    assert temperature["valueQuantity"]["value"] == 37.0
    assert temperature["valueQuantity"]["code"] == "Cel"

    # blood pressure: the panel with two components, drawn as two series
    page.goto(f"{portal.url}/trackers/blood-pressure")
    before = observations(env, "pat-0002", "85354-9")
    page.fill("#f-systolic", "128")
    page.fill("#f-diastolic", "82")
    fill_time(page, yesterday(9, 10))
    page.get_by_role("button", name="Save reading").click()
    page.wait_for_url(f"{portal.url}/trackers/blood-pressure")
    assert "Alert" not in page.locator("div.notice").inner_text()
    bp = only_new(before, observations(env, "pat-0002", "85354-9"))
    assert [(c["code"]["coding"][0]["code"], c["valueQuantity"]["value"],
             c["valueQuantity"]["code"]) for c in bp["component"]] == [
        ("8480-6", 128, "mm[Hg]"), ("8462-4", 82, "mm[Hg]")]
    assert page.locator("#latest-reading").inner_text() == "128/82 mmHg"
    stored = observations(env, "pat-0002", "85354-9")
    assert page.locator("table.readings tbody tr").count() == len(stored)
    assert page.locator("svg.chart polyline").count() == 2
    assert page.locator("svg.chart circle").count() == len(stored) + 1  # + the legend's
    check_page(page, "tracker-bp")

    # the overview shows each latest reading in the patient's unit
    page.get_by_role("link", name="Back to health trackers").click()
    page.wait_for_url(f"{portal.url}/trackers")
    assert page.locator('li[data-kind="weight"] .reading').inner_text() == "165.0 lb (pounds)"
    assert page.locator('li[data-kind="temperature"] .reading').inner_text() == "98.6 °F"

    # Spanish and larger text
    page.goto(f"{portal.url}/trackers/blood-pressure")
    page.get_by_role("button", name="Larger text").click()
    page.select_option("#lang-select", "es")
    page.get_by_role("button", name="Change language").click()
    page.goto(f"{portal.url}/trackers/blood-pressure")
    assert page.get_by_role("heading", name="Presión arterial", level=1).count() == 1
    check_page(page, "tracker-bp-es-large")


def test_an_alert_is_said_in_words_the_care_team_is_told_and_home_agrees(env, portal, page):
    sign_in(page, portal, "ann")
    assert "No readings need attention" in page.locator("#h-alerts + p").inner_text()
    page.goto(f"{portal.url}/trackers/blood-pressure")
    before = observations(env, "pat-0001", "85354-9")
    messages = [r["id"] for r in env.live.adapter.iter_all()
                if r["resourceType"] == "Communication"]
    page.fill("#f-systolic", "185")
    page.fill("#f-diastolic", "95")
    fill_time(page, yesterday(7, 45))
    page.get_by_role("button", name="Save reading").click()
    page.wait_for_url(f"{portal.url}/trackers/blood-pressure")
    notice = page.locator("div.notice[role=status]").inner_text()
    assert "blood pressure is very high (180/120 or higher)" in notice
    assert "Your care team was told" in notice and "call 911" in notice
    bp = only_new(before, observations(env, "pat-0001", "85354-9"))
    assert bp["interpretation"][0]["coding"][0]["code"] == "AA"
    (alert,) = [r for r in env.live.adapter.iter_all() if r["resourceType"] == "Communication"
                and r["id"] not in messages]
    assert alert["about"] == [{"reference": f"Observation/{bp['id']}"}]
    assert alert["subject"] == {"reference": "Patient/pat-0001"}
    assert alert["category"][0]["coding"][0]["code"] == "alert"
    team = next(r for r in env.live.adapter.iter_all() if r["resourceType"] == "CareTeam"
                and r["subject"]["reference"] == "Patient/pat-0001")
    assert alert["recipient"] == [p["member"] for p in team["participant"]]
    row = page.locator(f'table.readings tr[data-reading="{bp["id"]}"]')
    assert "Alert" in row.inner_text() and "out-of-range" in row.get_attribute("class")
    assert "very high" in page.locator("#h-latest ~ p.flag").inner_text()
    check_page(page, "tracker-alert")

    # a low blood sugar, entered in mmol/L (2.5 mmol/L = 45 mg/dL, below 54)
    page.goto(f"{portal.url}/trackers/glucose")
    page.fill("#f-value", "2.5")
    page.select_option("#f-unit", "mmol/L")
    fill_time(page, yesterday(7, 50))
    page.get_by_role("button", name="Save reading").click()
    page.wait_for_url(f"{portal.url}/trackers/glucose")
    assert "blood sugar is very low" in page.locator("div.notice").inner_text()
    (glucose,) = observations(env, "pat-0001", "2339-0")
    assert glucose["valueQuantity"]["value"] == 45
    assert glucose["interpretation"][0]["coding"][0]["code"] == "AA"

    # the overview and Home say the same: these two readings need attention
    page.goto(f"{portal.url}/trackers")
    alerted = page.locator("li.tracker-card:has(p.flag)")
    assert sorted(alerted.evaluate_all("els => els.map(e => e.dataset.kind)")) == [
        "blood-pressure", "glucose"]
    assert "blood sugar is very low" in page.locator('li[data-kind="glucose"] p.flag').inner_text()
    check_page(page, "trackers-alerts")
    page.goto(f"{portal.url}/home")
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    flagged = [o for o in env.live.adapter.iter_all() if o["resourceType"] == "Observation"
               and o["subject"]["reference"] == "Patient/pat-0001"
               and any(c.get("code") == "AA" for i in o.get("interpretation", [])
                       for c in i["coding"])
               and dt.datetime.fromisoformat(o["effectiveDateTime"]) >= since]
    items = page.locator("#h-alerts + ul li")
    assert items.count() == len(flagged) == 2
    text = page.locator("#h-alerts + ul").inner_text()
    assert "Blood pressure" in text and "Out of range" in text
    assert "2.5 mmol/L" in text and "mg/dL" not in text  # in the unit the patient chose
    assert "Blood sugar: 2.5 mmol/L" in text and "panel" not in text  # named as the tracker
    check_page(page, "home-tracker-alerts")


def test_bad_input_is_shown_next_to_the_field_and_changes_nothing(env, portal, page):
    sign_in(page, portal, "carol", patient="pat-0003")
    page.goto(f"{portal.url}/trackers/blood-pressure")
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    cases = [  # (fields, field in error, words, screenshot)
        ({"systolic": "", "diastolic": "80"}, "systolic", "Please fill this in", "bp-empty"),
        ({"systolic": "12o", "diastolic": "80"}, "systolic", "enter a number", None),
        ({"systolic": "400", "diastolic": "80"}, "systolic",
         "Enter a value between 50 and 300 mmHg", None),
        ({"systolic": "120", "diastolic": "130"}, "diastolic", "must be lower", None),
        ({"systolic": "120", "diastolic": "80", "date": tomorrow}, "date", "in the future",
         None),
        ({"systolic": "120", "diastolic": "80", "note": "x" * 1001}, "note",
         "too long: 1001 characters", None),
    ]
    for fields, field, words, shot in cases:
        mark = env.live.fingerprint()
        for name, value in fields.items():
            page.fill(f"#f-{name}", value)
        page.get_by_role("button", name="Save reading").click()
        error = page.locator(f"#err-{field}[role=alert]")
        assert words in error.inner_text(), (fields, error.inner_text())
        control = page.locator(f"#f-{field}")
        assert control.get_attribute("aria-invalid") == "true"
        assert f"err-{field}" in control.get_attribute("aria-describedby")
        assert env.live.fingerprint() == mark
        if shot:
            check_page(page, f"tracker-{shot}")
        page.goto(f"{portal.url}/trackers/blood-pressure")

    # the allowed range is said in the patient's unit
    page.goto(f"{portal.url}/trackers/weight")
    mark = env.live.fingerprint()
    page.fill("#f-value", "2000")
    page.select_option("#f-unit", "lb")
    page.get_by_role("button", name="Save reading").click()
    assert "between 1.1 and 1102.3 lb" in page.locator("#err-value").inner_text()
    # plausible alone, but with the stored height a BMI over 100: the gateway's own 400,
    # said in the patient's words
    assert observations(env, "pat-0003", "8302-2")
    page.goto(f"{portal.url}/trackers/weight")
    page.fill("#f-value", "500")
    page.select_option("#f-unit", "kg")
    page.get_by_role("button", name="Save reading").click()
    assert "body mass index that is not possible" in page.locator(
        "#err-value[role=alert]").inner_text()
    assert page.locator("#f-value").get_attribute("aria-invalid") == "true"
    assert env.live.fingerprint() == mark
    check_page(page, "tracker-refused")
    page.goto(f"{portal.url}/trackers/steps")
    page.fill("#f-value", "1000.5")
    page.get_by_role("button", name="Save reading").click()
    assert "whole number" in page.locator("#err-value").inner_text()
    assert env.live.fingerprint() == mark

    # what a browser's date and time pickers do not let through, sent by hand
    page.goto(f"{portal.url}/trackers/heart-rate")
    form = page.locator("form.reading-form")
    hidden = {n: form.locator(f'input[name="{n}"]').get_attribute("value")
              for n in ("csrf_token", "form_id")}
    url = f"{portal.url}/trackers/heart-rate"
    for fields, words in (({"date": "2025-02-30", "time": "08:00"}, "not a real date"),
                          ({"date": "2025-02-03", "time": "25:00"}, "not a real time"),
                          ({"date": "1850-02-03", "time": "08:00"}, "too long ago"),
                          ({"date": "2025-02-03", "time": "08:00", "unit": "furlongs"},
                           "choose a unit")):
        page.goto(url)
        hidden["form_id"] = page.locator('input[name="form_id"]').get_attribute("value")
        resp = page.request.post(url, form={**hidden, "value": "70", "unit": "/min", **fields})
        assert resp.status == 400 and words in resp.text(), words
        assert env.live.fingerprint() == mark
    resp = page.request.post(url, form={"value": "70", "unit": "/min", "date": "2025-02-03",
                                        "time": "08:00"})
    assert resp.status == 400 and env.live.fingerprint() == mark  # no CSRF token
    assert page.request.get(f"{portal.url}/trackers/no-such-kind").status == 404

    # a good reading, then the same form sent again (double click, back and resend)
    page.goto(url)
    form = page.locator("form.reading-form")
    sent = {n: form.locator(f'input[name="{n}"]').get_attribute("value")
            for n in ("csrf_token", "form_id")}
    before = observations(env, "pat-0003", "8867-4")
    page.fill("#f-value", "72")
    fill_time(page, yesterday(6, 15))
    page.get_by_role("button", name="Save reading").click()
    page.wait_for_url(url)
    assert "saved" in page.locator("div.notice").inner_text()
    reading = only_new(before, observations(env, "pat-0003", "8867-4"))
    assert reading["valueQuantity"]["value"] == 72
    assert reading["valueQuantity"]["code"] == "/min"
    mark = env.live.fingerprint()
    again = {**sent, "value": "72", "unit": "/min", "date": yesterday(6, 15).date().isoformat(),
             "time": "06:15"}
    resp = page.request.post(url, form=again)
    assert resp.status == 409 and "already sent" in resp.text()
    assert env.live.fingerprint() == mark
    # the same reading in a new form: the gateway's 422 duplicate, in the patient's words
    page.goto(url)
    page.fill("#f-value", "72")
    fill_time(page, yesterday(6, 15))
    page.get_by_role("button", name="Save reading").click()
    assert "already saved this same reading" in page.locator("#err-form[role=alert]").inner_text()
    assert env.live.fingerprint() == mark
    assert len(observations(env, "pat-0003", "8867-4")) == len(before) + 1
    check_page(page, "tracker-duplicate")
