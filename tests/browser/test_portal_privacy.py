"""Privacy in a real browser: the apps with access to the record (the portal and a second app
given a grant by a real SMART launch), removing the second app with a confirm step (its token
is then a 401 at the gateway, the portal's keeps working), removing the portal's own access
(the patient is signed out), bad input that changes nothing, and the access log against what
the gateway recorded, page by page.
"""

from __future__ import annotations

import httpx

from tests.browser.support import CLIENT_ID, check_page, menu, sign_in
from tests.smart_support import REDIRECT

DIARY = "vitals-diary"
DIARY_SCOPE = ("launch/patient online_access patient/Observation.rs?category=vital-signs "
               "patient/Patient.rs")


def _diary_grant(env, username: str) -> dict:
    """A second app gets a grant the way any SMART app does: authorize, the patient signs in
    and allows it at the gateway, code exchange (PKCE)."""
    if env.smart.clients.get(DIARY) is None:
        env.smart.clients.add(DIARY, "public", redirect_uris=[REDIRECT], name="Vitals Diary")
    return env.patient_token(DIARY, username, DIARY_SCOPE)


def _status(env, token: str, path: str = "Observation?category=vital-signs&_count=1") -> int:
    with env.fhir(token) as fhir:
        return fhir.get(path).status_code


def _state(env, pid: str) -> tuple:
    """What a bad input must not change: the EHR store and the patient's live grants."""
    return env.live.fingerprint(), env.smart.records.live_grants(pid)


def _new_token(portal, known: set[str]) -> str:
    (token,) = set(portal.tokens()) - known
    return token


def _log_rows(page) -> list[list[str]]:
    return [[c.strip() for c in row.locator("td").all_inner_texts()]
            for row in page.locator("table.access-log tbody tr").all()]


def test_apps_access_log_and_removing_a_second_app(env, portal, page):
    known = set(portal.tokens())
    sign_in(page, portal, "ann")
    token = _new_token(portal, known)
    diary = _diary_grant(env, "ann")
    for _ in range(12):  # the diary reads ann's vital signs (enough for a second log page)
        assert _status(env, diary["access_token"]) == 200

    menu(page, "Privacy")
    page.wait_for_url(f"{portal.url}/privacy")
    portal_card = page.locator(f'li.app[data-client="{CLIENT_ID}"]')
    diary_card = page.locator(f'li.app[data-client="{DIARY}"]')
    assert "(this website)" in portal_card.locator("h3").inner_text()
    assert "Can see your whole record" in portal_card.inner_text()
    assert "Vitals Diary" in diary_card.locator("h3").inner_text()
    assert ("Can see your test results and measurements (only vital signs), your personal "
            "details") in diary_card.inner_text()
    assert "Has access only while you are using it" in diary_card.inner_text()
    assert "this website" not in diary_card.inner_text()
    check_page(page, "privacy")
    page.get_by_role("button", name="Larger text").click()  # and back to this page
    page.wait_for_url(f"{portal.url}/privacy")
    assert page.locator("html").get_attribute("class") == "large-text"
    check_page(page, "privacy-large")
    page.get_by_role("button", name="Normal text").click()
    page.wait_for_url(f"{portal.url}/privacy")

    # the access log is what the gateway recorded: newest first, 20 a page; the newest entry
    # at the gateway now is the $access-log call that drew the page itself
    audit = env.live.app.extensions["fhir_gateway"].audit
    stored = audit.search(patient="pat-0001", count=21)[1:]
    rows = _log_rows(page)
    assert len(rows) == 20 == len(stored)
    names = {CLIENT_ID: "This website", DIARY: "Vitals Diary"}
    for row, entry in zip(rows, stored, strict=True):
        assert row[0] == entry["recorded"][:16].replace("T", " ") + " UTC"
        assert row[2] == names.get(entry["client_id"] or "", entry["client_id"] or "")
    texts = [" | ".join(r) for r in rows]
    assert any("Vitals Diary | Searched your test results and measurements | Done" in r
               for r in texts), texts
    assert any(r.startswith(rows[0][0][:10]) and "You | This website" in r for r in texts)
    # and older pages go on where this one stopped
    page.get_by_role("link", name="Show older entries").click()
    assert f"before={stored[-1]['seq']}" in page.url
    older = _log_rows(page)
    assert older[0][0] == audit.search(patient="pat-0001", count=1,
                                       before_seq=stored[-1]["seq"])[0]["recorded"][:16] \
        .replace("T", " ") + " UTC"
    check_page(page, "privacy-older")
    page.get_by_role("link", name="Back to the newest").click()
    page.wait_for_url(f"{portal.url}/privacy#h-log")

    # remove the diary: a confirm step first, which changes nothing yet
    page.locator(f'li.app[data-client="{DIARY}"]').get_by_role(
        "button", name="Remove access").click()
    page.wait_for_url(f"{portal.url}/privacy/remove")
    assert page.locator("h2").inner_text() == "Remove access for Vitals Diary?"
    assert _status(env, diary["access_token"]) == 200
    check_page(page, "privacy-confirm")
    page.get_by_role("button", name="Yes, remove access").click()
    page.wait_for_url(f"{portal.url}/privacy")
    assert "Access removed for Vitals Diary" in page.locator("p.notice").inner_text()
    assert page.locator(f'li.app[data-client="{DIARY}"]').count() == 0
    check_page(page, "privacy-removed")
    # at the gateway: the diary's token is refused, its refresh token too; the portal's works
    assert _status(env, diary["access_token"]) == 401
    refreshed = env.token(grant_type="refresh_token", client_id=DIARY,
                          refresh_token=diary["refresh_token"])
    assert refreshed.status_code == 400
    assert [g["client_id"] for g in env.smart.records.live_grants("pat-0001")] == [CLIENT_ID]
    assert _status(env, token, "Patient/pat-0001") == 200
    assert token in portal.tokens()
    menu(page, "Home")
    page.wait_for_url(f"{portal.url}/home")


def test_bad_input_changes_nothing_and_removing_this_website_signs_out(env, portal, page):
    known = set(portal.tokens())
    sign_in(page, portal, "bob")
    token = _new_token(portal, known)
    diary = _diary_grant(env, "bob")
    page.goto(f"{portal.url}/privacy")
    # bob's page shows only bob's grants and bob's log
    assert {c.get_attribute("data-client") for c in page.locator("li.app").all()} == {
        CLIENT_ID, DIARY}
    assert "pat-0001" not in page.content()
    form = page.locator(f'li.app[data-client="{DIARY}"] form')
    fields = {n: form.locator(f'input[name="{n}"]').get_attribute("value")
              for n in ("csrf_token", "form_id", "client")}
    mark = _state(env, "pat-0002")

    # an app that has no grant (a tampered form): an inline message, nothing sent
    resp = page.request.post(f"{portal.url}/privacy/remove",
                             form={**fields, "client": "no-such-app", "confirm": "yes"})
    assert resp.status == 404 and "has no access to your record" in resp.text()
    assert _state(env, "pat-0002") == mark
    # a client id that is not one at all
    resp = page.request.post(f"{portal.url}/privacy/remove",
                             form={**fields, "client": "two words", "confirm": "yes"})
    assert resp.status == 400 and _state(env, "pat-0002") == mark
    # a missing CSRF token
    resp = page.request.post(f"{portal.url}/privacy/remove",
                             form={"form_id": fields["form_id"], "client": DIARY,
                                   "confirm": "yes"})
    assert resp.status == 400 and "open too long" in resp.text()
    assert _state(env, "pat-0002") == mark
    # the same form twice: the first opens the confirm step, a replay of it changes nothing
    page.reload()  # the tampered post above used up that form's one-time id
    fields = {n: form.locator(f'input[name="{n}"]').get_attribute("value")
              for n in ("csrf_token", "form_id", "client")}
    form.get_by_role("button", name="Remove access").click()
    page.wait_for_url(f"{portal.url}/privacy/remove")
    confirm = {n: page.locator(f'form input[name="{n}"]').last.get_attribute("value")
               for n in ("csrf_token", "form_id", "client", "confirm")}
    resp = page.request.post(f"{portal.url}/privacy/remove", form={**fields, "confirm": "yes"})
    assert resp.status == 409 and "already sent" in resp.text()
    assert _state(env, "pat-0002") == mark
    assert _status(env, diary["access_token"]) == 200
    # shown in the page next to the app, announced
    page.goto(f"{portal.url}/privacy")
    bad = page.locator(f'li.app[data-client="{DIARY}"] input[name="client"]')
    bad.evaluate("e => { e.value = 'no-such-app' }")
    page.locator(f'li.app[data-client="{DIARY}"]').get_by_role(
        "button", name="Remove access").click()
    alert = page.locator('p.error[role="alert"]')
    assert "has no access to your record" in alert.inner_text()
    check_page(page, "privacy-error")
    assert _state(env, "pat-0002") == mark

    # confirmed once it is removed; the confirm form sent again changes nothing more
    resp = page.request.post(f"{portal.url}/privacy/remove", form=confirm)
    assert resp.status == 200 and _status(env, diary["access_token"]) == 401
    after = _state(env, "pat-0002")
    resp = page.request.post(f"{portal.url}/privacy/remove", form=confirm)
    assert resp.status == 409 and "already sent" in resp.text()
    assert _state(env, "pat-0002") == after

    # removing this website's own access signs bob out, and its token is dead at the gateway
    page.goto(f"{portal.url}/privacy")
    page.locator(f'li.app[data-client="{CLIENT_ID}"]').get_by_role(
        "button", name="Remove access").click()
    page.wait_for_url(f"{portal.url}/privacy/remove")
    assert "signed out now" in page.locator("main").inner_text()
    check_page(page, "privacy-confirm-self")
    page.get_by_role("button", name="Yes, remove access").click()
    page.wait_for_url(f"{portal.url}/signin")
    assert "removed this website's access" in page.locator("p.notice").inner_text()
    check_page(page, "privacy-signed-out")
    assert token not in portal.tokens()
    assert _status(env, token, "Patient/pat-0002") == 401
    assert env.smart.records.live_grants("pat-0002") == []
    page.goto(f"{portal.url}/privacy")
    assert page.url == f"{portal.url}/signin"
    # the log the gateway keeps names the removals, never another patient
    audit = env.live.app.extensions["fhir_gateway"].audit
    revokes = [e for e in audit.search(patient="pat-0002", count=50) if e["action"] == "revoke"]
    assert {e["client_id"] for e in revokes} >= {DIARY, CLIENT_ID}
    assert httpx.get(f"{portal.url}/privacy", follow_redirects=False).status_code == 302
