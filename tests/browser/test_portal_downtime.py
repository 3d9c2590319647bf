"""The portal while the clinic's EHR takes no writes, in a real browser: the gateway here is
`fhir_rest` in front of a second `fhir-gateway serve` process, reached through a relay that
can refuse writes while reads still answer. A patient's reply and refill request are taken
(the portal says they will be passed on), nothing reaches the EHR while it refuses, and once
it takes writes again each is stored exactly once and shows in the portal.
"""

from __future__ import annotations

import time

import pytest

from adapters.embedded import EmbeddedAdapter
from tests.browser.support import check_page, menu, sign_in
from tests.rest_support import LossyProxy, UpstreamProcess, seed, start_rest_gateway
from tests.smart_support import smart_env_for


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """As the other browser modules' `env`, over the REST adapter; `env.proxy` is the relay."""
    data = tmp_path_factory.mktemp("downtime")
    upstream = UpstreamProcess(data / "upstream")
    proxy = LossyProxy(upstream.port)
    upstream.env["FHIR_GATEWAY_BASE_URL"] = proxy.base
    seed(upstream)
    upstream.start()
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
    page.goto(f"{portal.url}/home")
    assert page.locator("#h-waiting").count() == 0


def test_home_shows_what_the_ehr_refused_with_its_words(env, portal, page):
    """A kept write the EHR refuses for good ends failed; Home tells the patient, in the
    EHR's words, to call the clinic. Another patient's refusal is not shown."""
    outbox = env.live.app.extensions["fhir_gateway"].service.outbox
    bad = {"resourceType": "Communication", "status": "not-a-status",
           "subject": {"reference": "Patient/pat-0002"}}
    mine = outbox.enqueue(method="POST", resource_type="Communication", resource_id=None,
                          body=bad, if_match=None, write_id=None, lane="pat-0002",
                          client_id="", error="test: refused", retry_after=None)
    theirs = outbox.enqueue(method="POST", resource_type="Communication", resource_id=None,
                            body=dict(bad, subject={"reference": "Patient/pat-0001"}),
                            if_match=None, write_id=None, lane="pat-0001", client_id="",
                            error="test: refused", retry_after=None)
    deadline = time.monotonic() + 30
    while {outbox.get(e.id).status for e in (mine, theirs)} != {"failed"}:
        assert time.monotonic() < deadline, [outbox.get(e.id).status for e in (mine, theirs)]
        time.sleep(0.2)
    words = outbox.get(mine.id).outcome["issue"][0]["diagnostics"]
    assert "not-a-status" in words

    sign_in(page, portal, "bob")
    shown = [li.inner_text() for li in page.locator("section:has(#h-waiting) li").all()]
    assert len(shown) == 1, shown
    assert shown[0].startswith("Your message from ")
    assert "was not taken by the clinic's system. Please call the clinic about it." in shown[0]
    assert " ".join(words.split())[:150] in shown[0]
    check_page(page, "home-refused")

