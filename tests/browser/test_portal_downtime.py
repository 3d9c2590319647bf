"""The portal while the clinic's EHR takes no writes, in a real browser: the gateway here is
`fhir_rest` in front of a second `fhir-gateway serve` process, reached through a relay that
can refuse writes while reads still answer. A patient's reply and refill request are taken
(the portal says they will be passed on, and Home lists them), nothing reaches the EHR while
it refuses, and once it takes writes again each is stored exactly once and shows in the
portal. One the gateway holds back (503) gives the form back with what was typed; what the
EHR refused or the clinic dropped is said on Home.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import delete

from adapters.embedded import EmbeddedAdapter
from fhir_gateway.outbox import outbox as outbox_table
from tests.browser.support import CLIENT_ID, check_page, menu, sign_in
from tests.rest_support import relayed_upstream, start_rest_gateway
from tests.smart_support import smart_env_for


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """As the other browser modules' `env`, over the REST adapter; `env.proxy` is the relay."""
    data = tmp_path_factory.mktemp("downtime")
    upstream, proxy = relayed_upstream(data / "upstream")
    store = EmbeddedAdapter(upstream.database_url)
    live, stop = start_rest_gateway(data / "front", proxy.base, {
        "FHIR_GATEWAY_FHIR_REST_DEFAULT_CACHE_TTL": "0",
        "FHIR_GATEWAY_FHIR_REST_BREAKER_RESET": "1",
        # closed through the refused writes, so the reads between them still reach the EHR
        "FHIR_GATEWAY_FHIR_REST_BREAKER_FAILURES": "100"}, auth=True, store=store)
    smart = smart_env_for(live)
    smart.proxy = proxy
    try:
        yield smart
    finally:
        smart.browser.close()
        stop()
        proxy.close()
        upstream.kill()


def the_outbox(env):
    return env.live.app.extensions["fhir_gateway"].service.outbox


def forget(env, entries) -> None:
    """Take a test's own entries out of the outbox table (dropping one would leave it on
    Home as "not sent" for 30 days)."""
    with the_outbox(env).engine.begin() as conn:
        conn.execute(delete(outbox_table).where(outbox_table.c.id.in_([e.id for e in entries])))


def queue_change(env, rtype: str, body: dict, lane: str, **kw):
    """A change waiting in the outbox, not due for an hour."""
    return the_outbox(env).enqueue(
        method=kw.pop("method", "PUT"), resource_type=rtype, resource_id=body.get("id"),
        body=body, if_match=None, write_id=None, lane=lane, client_id=kw.pop("client", ""),
        error="test: waits", retry_after=kw.pop("retry_after", 3600), **kw)


def unmeta(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k != "meta"}


def test_held_back_the_form_comes_back_with_what_was_typed(env, portal, page):
    """A reply and a refill request while a change to the care team and to the order still
    wait (their checks would be out of date): nothing is sent or queued, and each form is
    shown again with the typed text and a message to try again soon."""
    store = env.live.adapter
    team = next(r for r in store.iter_all() if r["resourceType"] == "CareTeam"
                and r.get("subject", {}).get("reference") == "Patient/pat-0002")
    heads = [queue_change(env, "CareTeam", unmeta(team), "pat-0002"),
             queue_change(env, "MedicationRequest",
                          dict(unmeta(store.read("MedicationRequest", "mr-0002-02")),
                               status="on-hold"), "pat-0002")]
    entries = sum(the_outbox(env).counts().values())
    mark = env.live.fingerprint()
    try:
        sign_in(page, portal, "bob")
        page.goto(f"{portal.url}/messages/comm-0002-01")
        page.fill("#text", "Can we talk about my dose?")
        page.get_by_role("button", name="Send reply").click()
        page.wait_for_url(f"{portal.url}/messages/comm-0002-01/reply")
        assert "busy right now, so your message was not sent" in \
            page.locator("[role=alert]").first.inner_text()
        assert page.locator("#text").input_value() == "Can we talk about my dose?"
        check_page(page, "reply-busy")

        menu(page, "Prescriptions")
        card = page.locator('li.rx[data-prescription="mr-0002-02"]')
        card.locator("textarea").fill("Almost out")
        card.get_by_role("button", name="Send refill request").click()
        card = page.locator('li.rx[data-prescription="mr-0002-02"]')
        assert "busy right now, so your refill request was not sent" in \
            card.locator("p.error[role=alert]").inner_text()
        assert card.locator("textarea").input_value() == "Almost out"
        check_page(page, "refill-busy")
        assert env.live.fingerprint() == mark
        assert sum(the_outbox(env).counts().values()) == entries
    finally:
        forget(env, heads)


def stored_once(env, what: str, match, timeout: float = 30.0) -> dict:
    """The one resource in the EHR that `match`es, once the outbox has sent it."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in env.live.adapter.iter_all() if match(r)]
        assert len(found) <= 1, f"{what} is stored {len(found)} times"
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"{what} was never stored"
        time.sleep(0.2)


def test_a_reply_and_a_refill_request_wait_for_the_ehr(env, portal, page):
    store = env.live.adapter
    sign_in(page, portal, "bob")
    page.goto(f"{portal.url}/messages/comm-0002-01")
    text = "Sent while the clinic's system was down."

    def is_reply(r: dict) -> bool:
        return r["resourceType"] == "Communication" and \
            r.get("payload") == [{"contentString": text}]

    refused = env.proxy.refused
    env.proxy.mode = "no-writes"
    try:
        page.fill("#text", text)
        page.get_by_role("button", name="Send reply").click()
        page.wait_for_url(f"{portal.url}/messages")
        assert page.locator("p.notice").inner_text() == \
            "Your message was received and will be delivered soon."
        check_page(page, "message-queued")

        menu(page, "Prescriptions")
        page.wait_for_url(f"{portal.url}/prescriptions")
        card = page.locator("li.rx:has(form)").first
        mr = card.get_attribute("data-prescription")
        tasks = [r["id"] for r in store.iter_all() if r["resourceType"] == "Task"]
        card.locator("textarea").fill("Almost out")
        card.get_by_role("button", name="Send refill request").click()
        page.wait_for_url(f"{portal.url}/prescriptions")
        assert page.locator("p.notice").inner_text() == \
            "We got your refill request. We will send it to the clinic soon."
        check_page(page, "refill-queued")
        assert env.proxy.refused > refused, "no write was refused, so this proved nothing"
        assert not [r for r in store.iter_all() if is_reply(r)]
        assert [r["id"] for r in store.iter_all() if r["resourceType"] == "Task"] == tasks

        # Home says what waits (from the gateway's own database: no EHR needed for it)
        menu(page, "Home")
        card = page.locator("section:has(#h-waiting)")
        assert card.locator("h2").inner_text() == "Waiting for the clinic"
        shown = [li.inner_text() for li in card.locator("li").all()]
        assert len(shown) == 2, shown
        assert shown[0].startswith("Your message from ") and \
            shown[1].startswith("Your refill request from ")
        assert all(x.endswith("is waiting to be sent to the clinic. We will send it as soon "
                              "as their system answers.") for x in shown), shown
        check_page(page, "home-waiting")
    finally:
        env.proxy.mode = "pass"

    reply = stored_once(env, "the reply", is_reply)
    assert reply["partOf"] == [{"reference": "Communication/comm-0002-01"}]
    assert reply["sender"] == {"reference": "Patient/pat-0002"}
    task = stored_once(env, "the refill request", lambda r: r["resourceType"] == "Task"
                       and r["id"] not in tasks)
    assert task["focus"]["reference"] == f"MedicationRequest/{mr}"
    assert task["note"][0]["text"] == "Almost out" and task["status"] == "requested"

    page.goto(f"{portal.url}/messages/comm-0002-01")
    last = page.locator("li.message").last
    assert last.get_attribute("data-message") == reply["id"]
    assert text in last.inner_text()
    page.goto(f"{portal.url}/prescriptions")
    card = page.locator(f'li.rx[data-prescription="{mr}"]')
    assert "Asked for" in card.locator("ul.requests").inner_text()
    assert card.locator("form").count() == 0  # one open request at a time

    # once both are stored, Home no longer lists them
    deadline = time.monotonic() + 30
    while any(the_outbox(env).list(lane="pat-0002", status=s) for s in ("queued", "sending")):
        assert time.monotonic() < deadline, "the outbox did not settle"
        time.sleep(0.2)
    page.goto(f"{portal.url}/home")
    assert page.locator("#h-waiting").count() == 0


def test_home_shows_what_was_not_sent_and_only_the_patients_own(env, portal, page):
    """What the EHR refused for good (in its words) and what the clinic dropped are said on
    Home with a request to call. What a clinician's app queued about the patient, and another
    patient's refusal, are not shown."""
    bad = {"resourceType": "Communication", "status": "not-a-status",
           "subject": {"reference": "Patient/pat-0002"}}
    bob = {"client": CLIENT_ID, "requester": "Patient/pat-0002"}
    refused = queue_change(env, "Communication", bad, "pat-0002", method="POST",
                           retry_after=0, **bob)
    dropped = queue_change(env, "Task", {"resourceType": "Task"}, "pat-0002", method="POST",
                           **bob)
    clinicians = queue_change(env, "Communication", bad, "pat-0002", method="POST",
                              retry_after=0, client="clinic-app",
                              requester="Practitioner/prac-01")
    theirs = queue_change(env, "Communication",
                          dict(bad, subject={"reference": "Patient/pat-0001"}), "pat-0001",
                          method="POST", retry_after=0, client=CLIENT_ID,
                          requester="Patient/pat-0001")
    outbox = the_outbox(env)
    mine = (refused, dropped, clinicians, theirs)
    try:
        assert outbox.drop(dropped.id)
        deadline = time.monotonic() + 30
        while {outbox.get(e.id).status for e in (refused, clinicians, theirs)} != {"failed"}:
            assert time.monotonic() < deadline, [outbox.get(e.id).status for e in mine]
            time.sleep(0.2)
        first = outbox.get(refused.id).outcome["issue"][0]
        assert first["details"]["coding"][0]["code"] == "ehr-refused"
        words = first["details"]["text"]  # the EHR's own words, without the gateway's
        assert "not-a-status" in words and "The EHR refused" in first["diagnostics"]

        sign_in(page, portal, "bob")
        card = page.locator("section:has(#h-waiting)")
        shown = [li.inner_text() for li in card.locator("li").all()]
        assert len(shown) == 2, shown
        assert shown[0].startswith("Your refill request from ")
        assert "was not sent: the clinic stopped it. Please call the clinic about it." in \
            shown[0]
        assert shown[1].startswith("Your message from ")
        assert "was not taken by the clinic's system. Please call the clinic about it. " \
            "It said:" in shown[1]
        quoted = card.locator("li q").inner_text().removesuffix("\u2026")
        assert quoted and " ".join(words.split()).startswith(quoted)
        check_page(page, "home-refused")
    finally:
        forget(env, mine)
