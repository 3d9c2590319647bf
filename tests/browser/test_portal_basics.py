"""The patient portal end to end in a real browser (Debian chromium through Playwright):
a real gateway with SMART on and seeded patients, the real portal on its own loopback port,
the patient signing in through the gateway's own login form. Each flow checks what the gateway
stored, not only what the page says; every page is checked with axe-core at desktop and phone
sizes and kept as a screenshot in var/artifacts/portal-*.png.

Skips with the reason where chromium or Playwright is missing; GATEWAY_REQUIRE_BROWSER=1 (CI)
makes that a failure.
"""

from __future__ import annotations

import threading
import time

import httpx

from tests.browser.support import CLIENT_ID, check_page, menu, sign_in
from tests.smart_support import PASSWORD


def tasks_for(env, mr_id: str) -> list[dict]:
    return [r for r in env.live.adapter.iter_all() if r["resourceType"] == "Task"
            and r.get("focus", {}).get("reference") == f"MedicationRequest/{mr_id}"]


def test_sign_in_home_record_and_preferences(env, portal, page, caplog):
    page.goto(portal.url)
    assert page.url == f"{portal.url}/signin"
    check_page(page, "signin")
    known = set(portal.tokens())
    sign_in(page, portal, "ann")
    patient = env.live.adapter.read("Patient", "pat-0001")
    given = patient["name"][0]["given"][0]
    assert given in page.locator("h1").inner_text()
    for heading in ("What needs doing", "Next visits", "Unread messages", "Balance due",
                    "Tracker alerts"):
        assert page.get_by_role("heading", name=heading).count() == 1
    # what the home page says is what the gateway holds
    (token,) = set(portal.tokens()) - known
    with env.fhir(token) as fhir:
        unread = fhir.get("Communication/$unread").json()["parameter"][0]["valueInteger"]
    messages = page.locator("#h-messages + p").inner_text()
    assert (f"{unread} unread" in messages if unread > 1
            else "1 unread message." in messages if unread == 1 else "no unread" in messages)
    balance = sum(sub["valueMoney"]["value"] for r in env.live.adapter.iter_all()
                  if r["resourceType"] == "Account"
                  and r["subject"][0]["reference"] == "Patient/pat-0001"
                  for ext in r.get("extension", []) if ext["url"].endswith("Account.balance")
                  for sub in ext["extension"] if "valueMoney" in sub)
    shown = page.locator("#h-balance + p").inner_text()
    assert shown == (f"${balance:.2f}" if balance else "You owe nothing.")
    # each card leads to its part of the portal, and the menu marks where the patient is
    for link, path in (("See your appointments", "/appointments"),
                       ("Read your messages", "/messages"), ("See your bills", "/billing"),
                       ("See your health trackers", "/trackers")):
        assert page.get_by_role("link", name=link).get_attribute("href") == path
    current = page.get_by_role("navigation", name="Main").locator('[aria-current="page"]')
    assert current.all_inner_texts() == ["Home"]
    check_page(page, "home")

    menu(page, "My record")
    page.wait_for_url(f"{portal.url}/record")
    labs = [r for r in env.live.adapter.iter_all() if r["resourceType"] == "Observation"
            and r["subject"]["reference"] == "Patient/pat-0001"
            and any(c["code"] == "laboratory" for cat in r.get("category", [])
                    for c in cat.get("coding", []))]
    rows = page.locator("table.results tbody tr")
    assert rows.count() == len(labs) > 0
    abnormal = [o for o in labs if o["interpretation"][0]["coding"][0]["code"] != "N"]
    out = page.locator("table.results tr.out-of-range")
    assert out.count() == len(abnormal) > 0
    first = out.first.inner_text()
    assert "Out of range" in first  # in words, not only the colour
    assert page.locator("table.results tbody tr").first.locator("td").nth(3).inner_text()
    conditions = [r for r in env.live.adapter.iter_all() if r["resourceType"] == "Condition"
                  and r["subject"]["reference"] == "Patient/pat-0001"]
    assert page.locator("#h-conditions + div tbody tr").count() == len(conditions)
    check_page(page, "record")

    # a repeated test's trend: a chart drawn by the server and the same data as a table
    link = page.get_by_role("link", name="See trend").first
    oid = link.locator("xpath=ancestor::tr").get_attribute("data-result")
    link.click()
    page.wait_for_url(f"{portal.url}/record/trend/{oid}")
    code = env.live.adapter.read("Observation", oid)["code"]["coding"][0]["code"]
    same = [o for o in labs if o["code"]["coding"][0]["code"] == code]
    assert len(same) > 1
    assert page.locator("svg.chart[role=img] circle").count() == len(same)
    assert page.locator("table.results tbody tr").count() == len(same)
    check_page(page, "trend")
    # a sub-page marks its part in the menu
    current = page.get_by_role("navigation", name="Main").locator('[aria-current="page"]')
    assert current.all_inner_texts() == ["My record"]
    page.get_by_role("link", name="Back to my record").click()
    page.wait_for_url(f"{portal.url}/record")

    page.get_by_role("button", name="Larger text").click()
    assert "large-text" in (page.locator("html").get_attribute("class") or "")
    page.select_option("#lang-select", "es")
    page.get_by_role("button", name="Change language").click()
    assert page.locator("html").get_attribute("lang") == "es"
    assert page.get_by_role("heading", name="Mi expediente", level=1).count() == 1
    check_page(page, "record-es-large")
    page.select_option("#lang-select", "en")
    page.get_by_role("button", name="Cambiar idioma").click()
    page.get_by_role("button", name="Normal text").click()
    page.wait_for_selector("html:not(.large-text)")

    # keyboard only: the skip link is the first stop and moves focus to the main content
    page.goto(f"{portal.url}/record")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"

    # no PHI in any URL the browser asked for, nor in the portal's (or anyone's) log
    birth = patient["birthDate"]
    for url in page.requested_urls:
        assert given not in url and birth not in url, url
    assert caplog.records and given not in caplog.text and birth not in caplog.text


def test_refill_bad_input_then_request_then_double_submit(env, portal, page):
    sign_in(page, portal, "bob")
    menu(page, "Prescriptions")
    page.wait_for_url(f"{portal.url}/prescriptions")
    card = page.locator("li.rx:has(form)").first
    mr = card.get_attribute("data-prescription")
    stored_mr = env.live.adapter.read("MedicationRequest", mr)
    assert stored_mr["status"] == "active"
    check_page(page, "prescriptions")
    before = tasks_for(env, mr)

    for note, words, shot in (("    ", "only spaces", "refill-blank"),
                              ("x" * 1001, "too long: 1001 characters", "refill-too-long")):
        mark = env.live.fingerprint()
        card = page.locator(f'li.rx[data-prescription="{mr}"]')
        card.locator("textarea").fill(note)
        card.get_by_role("button", name="Send refill request").click()
        card = page.locator(f'li.rx[data-prescription="{mr}"]')
        error = card.locator("p.error[role=alert]")
        assert words in error.inner_text()
        field = card.locator("textarea")
        assert field.get_attribute("aria-invalid") == "true"
        assert error.get_attribute("id") in field.get_attribute("aria-describedby")
        assert env.live.fingerprint() == mark
        assert tasks_for(env, mr) == before
        check_page(page, shot)

    # another patient's prescription (a tampered form) is refused and changes nothing
    other = next(r["id"] for r in env.live.adapter.iter_all()
                 if r["resourceType"] == "MedicationRequest"
                 and r["subject"]["reference"] == "Patient/pat-0001")
    form = page.locator(f'li.rx[data-prescription="{mr}"] form')
    fields = {n: form.locator(f'input[name="{n}"]').get_attribute("value")
              for n in ("csrf_token", "form_id")}
    mark = env.live.fingerprint()
    resp = page.request.post(f"{portal.url}/prescriptions/refill",
                             form={**fields, "prescription": other, "note": ""})
    assert resp.status == 404 and "could not find that prescription" in resp.text()
    assert env.live.fingerprint() == mark
    # a missing CSRF token is refused
    resp = page.request.post(f"{portal.url}/prescriptions/refill",
                             form={"prescription": mr, "note": ""})
    assert resp.status == 400 and env.live.fingerprint() == mark

    page.reload()
    form = page.locator(f'li.rx[data-prescription="{mr}"] form')
    fields = {n: form.locator(f'input[name="{n}"]').get_attribute("value")
              for n in ("csrf_token", "form_id", "prescription")}
    form.locator("textarea").fill("Running low, 3 tablets left")
    form.get_by_role("button", name="Send refill request").click()
    page.wait_for_url(f"{portal.url}/prescriptions")
    assert "refill request was sent" in page.locator("p.notice").inner_text()
    after = tasks_for(env, mr)
    assert len(after) == len(before) + 1
    task = next(t for t in after if t not in before)
    assert task["status"] == "requested"
    assert task["note"][0]["text"] == "Running low, 3 tablets left"
    assert task["for"]["reference"] == "Patient/pat-0002"
    card = page.locator(f'li.rx[data-prescription="{mr}"]')
    assert "Asked for" in card.locator("ul.requests").inner_text()
    assert card.locator("form").count() == 0  # one open request at a time
    check_page(page, "refill-sent")

    # the same form sent again (double click, back and resend) changes nothing
    mark = env.live.fingerprint()
    resp = page.request.post(f"{portal.url}/prescriptions/refill",
                             form={**fields, "note": "Running low, 3 tablets left"})
    assert resp.status == 409 and "already sent" in resp.text()
    assert env.live.fingerprint() == mark
    assert len(tasks_for(env, mr)) == len(before) + 1

    page.goto(f"{portal.url}/home")
    assert "is waiting for the clinic" in page.locator("#h-todo + ul").inner_text()


def test_sign_out_revokes_the_token(env, portal, page):
    known = set(portal.tokens())
    sign_in(page, portal, "ann")
    (token,) = set(portal.tokens()) - known
    with env.fhir(token) as fhir:
        assert fhir.get("Patient/pat-0001").status_code == 200
        # every one of ann's prescriptions is one the gateway would refuse (stopped, no
        # refills left after the completed requests, controlled): no refill form is offered
        for med in fhir.get("MedicationRequest", params={"patient": "pat-0001"}).json()["entry"]:
            refused = fhir.post(f"MedicationRequest/{med['resource']['id']}/$refill-request",
                                json={"resourceType": "Parameters"},
                                headers={"Content-Type": "application/fhir+json"})
            assert refused.status_code == 422, refused.text
    page.goto(f"{portal.url}/prescriptions")
    assert page.locator("li.rx").count() > 0 and page.locator("li.rx form").count() == 0
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{portal.url}/signin")
    assert "You are signed out" in page.locator("p.notice").inner_text()
    check_page(page, "signed-out")
    assert token not in portal.tokens()
    with env.fhir(token) as fhir:
        assert fhir.get("Patient/pat-0001").status_code == 401
    page.goto(f"{portal.url}/record")
    assert page.url == f"{portal.url}/signin"


def test_an_expired_token_is_refreshed_and_a_dead_one_signs_out(env, portal, page):
    known = set(portal.tokens())
    sign_in(page, portal, "ann")
    (token,) = set(portal.tokens()) - known
    entry = next(e for e in portal.store._items.values()
                 if e.signed_in and e.fhir_state["server"]["auth"]["access_token"] == token)
    refresh = entry.fhir_state["server"]["auth"]["refresh_token"]  # online_access was asked
    revoke = f"{env.auth}/revoke"
    assert httpx.post(revoke, data={"token": token, "client_id": CLIENT_ID}).status_code == 200
    page.goto(f"{portal.url}/record")
    assert page.url == f"{portal.url}/record"  # refreshed behind the scenes
    renewed = entry.fhir_state["server"]["auth"]["access_token"]
    assert renewed != token
    with env.fhir(renewed) as fhir:
        assert fhir.get("Patient/pat-0001").status_code == 200
    # two pages at once both meet a dead token: one refresh, both pages work, the grant lives
    assert httpx.post(revoke, data={"token": renewed, "client_id": CLIENT_ID}).status_code == 200
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    answers: list[int] = []

    def load(path: str) -> None:
        with httpx.Client(cookies=cookies, timeout=30) as browser:
            answers.append(browser.get(f"{portal.url}{path}").status_code)

    pages = [threading.Thread(target=load, args=(p,)) for p in ("/record", "/prescriptions")]
    for t in pages:
        t.start()
    for t in pages:
        t.join(30)
    assert answers == [200, 200]
    renewed = entry.fhir_state["server"]["auth"]["access_token"]
    with env.fhir(renewed) as fhir:
        assert fhir.get("Patient/pat-0001").status_code == 200

    # the server ends the whole grant: the next page asks the patient to sign in again
    new_refresh = entry.fhir_state["server"]["auth"]["refresh_token"]
    for dead in {refresh, new_refresh, renewed}:
        httpx.post(revoke, data={"token": dead, "client_id": CLIENT_ID})
    page.goto(f"{portal.url}/prescriptions")
    assert page.url == f"{portal.url}/signin"
    assert "signed out to keep your record safe" in page.locator("p.notice").inner_text()
    assert entry not in portal.store._items.values()


def test_session_expires_after_inactivity(env, portal, page):
    store = portal.store
    idle = store.idle
    known = set(portal.tokens())
    try:
        sign_in(page, portal, "ann")  # at the usual limit: a slow machine may take seconds
        (token,) = set(portal.tokens()) - known
        store.idle = 2  # checked on each request, so it holds for this session from now
        time.sleep(2.5)
        page.goto(f"{portal.url}/prescriptions")
        assert page.url == f"{portal.url}/signin"
        assert "signed out to keep your record safe" in page.locator("p.notice").inner_text()
    finally:
        store.idle = idle
    with env.fhir(token) as fhir:
        assert fhir.get("Patient/pat-0001").status_code == 401  # revoked on expiry


def test_session_ends_after_absolute_lifetime(env, portal, page):
    store = portal.store
    absolute = store.absolute
    try:
        sign_in(page, portal, "ann")
        page.goto(f"{portal.url}/record")  # active all along
        store.absolute = 0
        page.goto(f"{portal.url}/home")
        assert page.url == f"{portal.url}/signin"
    finally:
        store.absolute = absolute


def test_ehr_launch_shows_the_patient_banner(env, portal, page):
    launch = env.smart.records.create_launch(CLIENT_ID, "pat-0002", None)
    page.goto(f"{portal.url}/launch?" + str(httpx.QueryParams({"iss": env.base, "launch": launch})))
    page.fill("#username", "bob")
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{portal.url}/home")
    patient = env.live.adapter.read("Patient", "pat-0002")
    banner = page.get_by_role("complementary", name="Patient")
    assert banner.count() == 1
    assert patient["birthDate"] in banner.inner_text()
    check_page(page, "home-ehr-launch")


def test_launch_from_another_server_is_refused(portal, page):
    page.goto(f"{portal.url}/launch?iss=https://evil.example/fhir&launch=x")
    assert page.url == f"{portal.url}/signin"
    assert "not for this portal" in page.locator("p.notice").inner_text()


def test_error_pages_are_plain_and_accessible(portal, page):
    page.goto(f"{portal.url}/no-such-page")
    assert "This page does not exist" in page.locator("main").inner_text()
    check_page(page, "not-found")
    page.goto(f"{portal.url}/signin")
    page.context.clear_cookies()  # the form's CSRF token no longer matches any session
    page.get_by_role("button", name="Larger text").click()
    assert "open too long" in page.locator("main [role=alert]").inner_text()
    check_page(page, "csrf-error")


def test_a_prescription_stopped_meanwhile_is_refused_in_the_patients_words(env, portal, page):
    """(Runs before the double-click test, which leaves this patient's card with an open
    request; this one stores nothing.)"""
    sign_in(page, portal, "carol", patient="pat-0003")
    page.goto(f"{portal.url}/prescriptions")
    card = page.locator("li.rx:has(form)").first
    mr = card.get_attribute("data-prescription")
    order = env.live.adapter.read("MedicationRequest", mr)
    original = {k: v for k, v in order.items() if k != "meta"}
    env.live.adapter.update({**original, "status": "stopped"})  # the clinic, meanwhile
    try:
        before, mark = tasks_for(env, mr), env.live.fingerprint()
        card.locator("textarea").fill("Still taking it")
        card.get_by_role("button", name="Send refill request").click()
        card = page.locator(f'li.rx[data-prescription="{mr}"]')
        assert "no longer active" in card.locator("p.error[role=alert]").inner_text()
        assert card.locator("form").count() == 0  # nothing left to ask for here
        assert tasks_for(env, mr) == before and env.live.fingerprint() == mark
        check_page(page, "refill-refused")
    finally:
        env.live.adapter.update(original)


def test_a_double_click_on_send_makes_one_request(env, portal, page):
    sign_in(page, portal, "carol", patient="pat-0003")  # a proxy, for this patient
    page.goto(f"{portal.url}/prescriptions")
    card = page.locator("li.rx:has(form)").first
    mr = card.get_attribute("data-prescription")
    before = tasks_for(env, mr)
    # offered only where the gateway's rule allows: active, and refills left after the
    # completed refill requests
    stored = env.live.adapter.read("MedicationRequest", mr)
    used = sum(1 for t in before if t["status"] == "completed")
    assert stored["status"] == "active"
    assert stored["dispenseRequest"]["numberOfRepeatsAllowed"] - used > 0
    card.locator("textarea").fill("Please send it to the usual pharmacy")
    card.get_by_role("button", name="Send refill request").dblclick()
    page.wait_for_selector("p.notice, p.error[role=alert]")
    shown = page.locator("p.notice, p.error[role=alert]").first.inner_text()
    assert "refill request was sent" in shown or "already sent" in shown
    after = tasks_for(env, mr)
    assert len(after) == len(before) + 1
    page.goto(f"{portal.url}/prescriptions")
    assert "Asked for" in page.locator(f'li.rx[data-prescription="{mr}"] ul.requests').inner_text()


def test_a_callback_with_the_wrong_state_is_refused(portal, page):
    page.goto(f"{portal.url}/signin")
    page.get_by_role("button", name="Sign in with my clinic").click()
    page.wait_for_selector("#username")  # at the gateway's login page, launch pending
    signed_in = len(portal.tokens())
    page.goto(f"{portal.url}/callback?code=forged&state=not-the-one-we-sent")
    assert page.url == f"{portal.url}/signin"
    assert "could not sign you in" in page.locator("p.notice").inner_text()
    page.goto(f"{portal.url}/callback?code=forged&state=again")  # the pending launch is gone
    assert page.url == f"{portal.url}/signin"
    assert len(portal.tokens()) == signed_in
    page.goto(f"{portal.url}/home")
    assert page.url == f"{portal.url}/signin"
