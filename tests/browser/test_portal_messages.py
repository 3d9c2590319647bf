"""Messages and Learn end to end in a real browser: reading a thread marks it read (and Home's
unread count follows), a new message to the care team with an attachment, a reply inside a
thread (partOf, inResponseTo, recipient as stored at the gateway), downloads served with a safe
Content-Disposition, every bad input shown next to its field and proven to change nothing
(`env.live.fingerprint()`), and the education handouts grouped and readable.
"""

from __future__ import annotations

import base64
import datetime as dt
import re

from tests.browser.support import check_page, menu, sign_in

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00"
       b"\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05"
       b"\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")
MAX_BYTES = 5 * 1024 * 1024  # the gateway's default max_attachment_bytes


def comms(env, patient: str) -> list[dict]:
    return [r for r in env.live.adapter.iter_all() if r["resourceType"] == "Communication"
            and r["subject"]["reference"] == f"Patient/{patient}"]


def unread_at_gateway(env, patient: str) -> int:
    return sum(1 for c in comms(env, patient) if c.get("partOf") and not c.get("received")
               and any(r["reference"] == f"Patient/{patient}" for r in c["recipient"]))


def expect_error(page, field: str, words: str) -> None:
    """The message is next to the field, announced, and tied to it."""
    error = page.locator(f"#err-{field}[role=alert]")
    assert words in error.inner_text(), error.inner_text()
    control = page.locator(f"#{field}")
    assert control.get_attribute("aria-invalid") == "true"
    assert f"err-{field}" in (control.get_attribute("aria-describedby") or "")


def test_read_a_thread_reply_and_home_count_agrees(env, portal, page):
    sign_in(page, portal, "ann")
    assert unread_at_gateway(env, "pat-0001") == 1
    assert page.locator("#h-messages + p").inner_text() == "You have 1 unread message."
    menu(page, "Messages")
    page.wait_for_url(f"{portal.url}/messages")
    headers = [c["id"] for c in comms(env, "pat-0001") if not c.get("partOf")]
    cards = page.locator("li.thread")
    assert [cards.nth(i).get_attribute("data-thread") for i in range(cards.count())] == headers
    card = page.locator('li.thread[data-thread="comm-0001-01"]')
    text = card.inner_text()
    assert "Preparing for my next visit" in text and "New: 1 unread message" in text
    newest = max(c["sent"] for c in comms(env, "pat-0001")
                 if c.get("partOf", [{}])[0].get("reference") == "Communication/comm-0001-01")
    shown = dt.datetime.fromisoformat(newest).astimezone().strftime("%Y-%m-%d %H:%M")
    assert "With: Dr. Sarah Mitchell" in text and f"Last message: {shown}" in text
    check_page(page, "messages")

    card.get_by_role("link", name="Preparing for my next visit").click()
    page.wait_for_url(f"{portal.url}/messages/comm-0001-01")
    stored = sorted((c for c in comms(env, "pat-0001")
                     if c.get("partOf") == [{"reference": "Communication/comm-0001-01"}]),
                    key=lambda c: c["sent"])
    shown = page.locator("li.message")
    assert [shown.nth(i).get_attribute("data-message") for i in range(shown.count())] == \
        [c["id"] for c in stored]
    assert shown.nth(0).locator(".from").inner_text() == "You"
    assert "Dr. Sarah Mitchell" in shown.nth(1).locator(".from").inner_text()
    assert "New" in shown.nth(1).locator(".new-marker").inner_text()  # new when opened
    assert stored[1]["payload"][0]["contentString"] in shown.nth(1).inner_text()
    # opening the thread stored the read receipt; the seeded one is kept as it was
    assert env.live.adapter.read("Communication", "comm-0001-01-02")["received"]
    assert env.live.adapter.read("Communication", "comm-0001-01-01")["received"] == \
        stored[0]["received"]
    assert unread_at_gateway(env, "pat-0001") == 0
    check_page(page, "thread")

    # a reply: empty, then too long, change nothing; then it is stored in the thread
    for words, text_in in (("Please write your message", "   "),
                           ("too long: 10001 characters", "x" * 10_001)):
        mark = env.live.fingerprint()
        page.fill("#text", text_in)
        page.get_by_role("button", name="Send reply").click()
        expect_error(page, "text", words)
        assert env.live.fingerprint() == mark
    check_page(page, "thread-reply-error")
    before = {c["id"] for c in comms(env, "pat-0001")}
    page.fill("#text", "Thank you.\nSee you on Monday.")
    page.get_by_role("button", name="Send reply").click()
    page.wait_for_url(f"{portal.url}/messages/comm-0001-01")
    assert page.locator("p.notice").inner_text() == "Your message was sent."
    (new,) = [c for c in comms(env, "pat-0001") if c["id"] not in before]
    assert new["partOf"] == [{"reference": "Communication/comm-0001-01"}]
    assert new["inResponseTo"] == [{"reference": "Communication/comm-0001-01-02"}]
    assert new["recipient"] == [{"reference": "Practitioner/prac-01"}]
    assert new["sender"] == {"reference": "Patient/pat-0001"}
    assert new["payload"] == [{"contentString": "Thank you.\nSee you on Monday."}]
    assert page.locator("li.message").last.get_attribute("data-message") == new["id"]

    menu(page, "Home")
    assert page.locator("#h-messages + p").inner_text() == "You have no unread messages."
    menu(page, "Messages")
    assert "All read" in page.locator('li.thread[data-thread="comm-0001-01"]').inner_text()


def _compose_fields(page) -> dict:
    form = page.locator("form.message-form")
    return {n: form.locator(f'input[name="{n}"]').get_attribute("value")
            for n in ("csrf_token", "form_id")}


def test_new_message_with_attachment_bad_input_and_double_submit(env, portal, page):
    sign_in(page, portal, "bob")
    page.goto(f"{portal.url}/messages")
    page.get_by_role("link", name="Write a new message").click()
    page.wait_for_url(f"{portal.url}/messages/new")
    options = page.locator("#recipient option")
    assert [options.nth(i).get_attribute("value") for i in range(options.count())] == \
        ["", "Practitioner/prac-01", "Practitioner/prac-04"]  # bob's care team
    check_page(page, "compose")

    # nothing filled in: every field says what is missing, at once
    mark = env.live.fingerprint()
    page.get_by_role("button", name="Send message").click()
    expect_error(page, "recipient", "Please choose who to write to")
    expect_error(page, "topic", "Please write a topic")
    expect_error(page, "text", "Please write your message")
    assert env.live.fingerprint() == mark
    check_page(page, "compose-errors")

    def attempt(files, words, topic="Swollen ankle"):
        mark = env.live.fingerprint()
        page.select_option("#recipient", "Practitioner/prac-04")
        page.fill("#topic", topic)
        page.fill("#text", "My ankle is swollen since Sunday.")
        page.set_input_files("#attachment", files)
        page.get_by_role("button", name="Send message").click()
        expect_error(page, "attachment", words)
        assert env.live.fingerprint() == mark
        # what was typed is kept (the file must be chosen again)
        assert page.locator("#recipient").input_value() == "Practitioner/prac-04"
        assert page.locator("#text").input_value() == "My ankle is swollen since Sunday."

    attempt({"name": "tool.exe", "mimeType": "application/x-msdownload", "buffer": b"MZ\x90"},
            "This kind of file cannot be sent")
    attempt({"name": "scan.pdf", "mimeType": "application/pdf", "buffer": b"hello, not a pdf"},
            "not really a PDF file")
    attempt({"name": "empty.txt", "mimeType": "text/plain", "buffer": b""}, "The file is empty")
    page.goto(f"{portal.url}/messages/new")
    page.get_by_role("button", name="Larger text").click()
    page.wait_for_selector("html.large-text")
    assert page.url == f"{portal.url}/messages/new"
    check_page(page, "compose-large")
    page.get_by_role("button", name="Normal text").click()
    page.wait_for_selector("html:not(.large-text)")
    # over the limit (far enough that the portal does not even read the body; one byte over
    # is read and refused the same way, tests/test_portal_messages_unit.py)
    mark = env.live.fingerprint()
    page.select_option("#recipient", "Practitioner/prac-04")
    page.set_input_files("#attachment", {"name": "huge.txt", "mimeType": "text/plain",
                                         "buffer": b"a" * (MAX_BYTES + 200_000)})
    page.get_by_role("button", name="Send message").click()
    expect_error(page, "attachment", "The file is too big. Files can be up to 5 MB")
    assert env.live.fingerprint() == mark
    check_page(page, "compose-file-error")
    mark = env.live.fingerprint()
    page.fill("#topic", "t" * 201)
    page.fill("#text", "x")
    page.get_by_role("button", name="Send message").click()
    expect_error(page, "topic", "too long: 201 characters")
    assert env.live.fingerprint() == mark

    # a tampered form: someone not on bob's care team, and no CSRF token
    fields = _compose_fields(page)
    form = {**fields, "recipient": "Practitioner/prac-02", "topic": "Hi", "text": "Hello"}
    resp = page.request.post(f"{portal.url}/messages/new", multipart=form)
    assert resp.status == 400 and "only write to someone on your care team" in resp.text()
    assert env.live.fingerprint() == mark
    resp = page.request.post(f"{portal.url}/messages/new", multipart={
        "recipient": "Practitioner/prac-04", "topic": "Hi", "text": "Hello"})
    assert resp.status == 400 and env.live.fingerprint() == mark

    # the real thing
    page.reload()
    fields = _compose_fields(page)
    before = {c["id"] for c in comms(env, "pat-0002")}
    page.select_option("#recipient", "Practitioner/prac-04")
    page.fill("#topic", "Swollen ankle")
    page.fill("#text", "My ankle is swollen since Sunday.\nPhoto attached.")
    page.set_input_files("#attachment", {"name": "ankle photo.png", "mimeType": "image/png",
                                         "buffer": PNG})
    page.get_by_role("button", name="Send message").click()
    page.wait_for_url(re.compile(rf"{re.escape(portal.url)}/messages/[A-Za-z0-9.-]+$"))
    assert page.locator("p.notice").inner_text() == "Your message was sent."
    new = [c for c in comms(env, "pat-0002") if c["id"] not in before]
    (header,) = [c for c in new if not c.get("partOf")]
    (message,) = [c for c in new if c.get("partOf")]
    assert page.url.endswith(f"/messages/{header['id']}")
    assert header["topic"] == {"text": "Swollen ankle"}
    assert header["recipient"] == [{"reference": "Practitioner/prac-04"}]
    assert header["sender"] == {"reference": "Patient/pat-0002"}
    assert message["partOf"] == [{"reference": f"Communication/{header['id']}"}]
    assert message["recipient"] == [{"reference": "Practitioner/prac-04"}]
    assert "inResponseTo" not in message
    text, file = message["payload"]
    assert text == {"contentString": "My ankle is swollen since Sunday.\nPhoto attached."}
    stored = file["contentAttachment"]
    assert stored["contentType"] == "image/png" and stored["title"] == "ankle photo.png"
    assert base64.b64decode(stored["data"]) == PNG and stored["size"] == len(PNG)
    assert "With: Dr. Robert Patel" in page.locator("main").inner_text()
    check_page(page, "thread-new")

    # the download comes through the portal with the declared type and a safe name
    link = page.get_by_role("link", name="Download ankle photo.png")
    resp = page.request.get(portal.url + link.get_attribute("href"))
    assert resp.status == 200 and resp.body() == PNG
    assert resp.headers["content-type"] == "image/png"
    assert resp.headers["content-disposition"] == 'attachment; filename="ankle photo.png"'
    assert header["id"] in link.get_attribute("href")

    # the same form sent again (double click, back and resend) changes nothing
    mark = env.live.fingerprint()
    resp = page.request.post(f"{portal.url}/messages/new", multipart={
        **fields, "recipient": "Practitioner/prac-04", "topic": "Swollen ankle",
        "text": "My ankle is swollen since Sunday."})
    assert resp.status == 409 and "already sent" in resp.text()
    assert env.live.fingerprint() == mark

    # no PHI in any URL the browser asked for: the topic and the text went in POST bodies
    for url in page.requested_urls:
        assert "Swollen" not in url and "ankle" not in url and "Sunday" not in url, url

    page.get_by_role("link", name="Back to all messages").click()
    first = page.locator("li.thread").first  # newest first
    assert first.get_attribute("data-thread") == header["id"]
    assert "All read" in first.inner_text()  # bob's own message is not unread for him


def test_staff_attachment_of_an_unsafe_kind_downloads_safely(env, portal, page):
    hostile = env.live.adapter.create({
        "resourceType": "Communication", "status": "completed",
        "partOf": [{"reference": "Communication/comm-0001-01"}],
        "subject": {"reference": "Patient/pat-0001"}, "sent": "2026-06-04T09:00:00-05:00",
        "sender": {"reference": "Practitioner/prac-01"},
        "recipient": [{"reference": "Patient/pat-0001"}],
        "payload": [{"contentString": "Your letter."}, {"contentAttachment": {
            "contentType": "text/html", "title": '../../evil"\r\nX: 1.html',
            "data": base64.b64encode(b"<script>alert(1)</script>").decode()}}],
    }).resource
    sign_in(page, portal, "ann")
    page.goto(f"{portal.url}/messages/comm-0001-01")
    assert env.live.adapter.read("Communication", hostile["id"])["received"]
    link = page.locator(f'li[data-message="{hostile["id"]}"] .files a')
    resp = page.request.get(portal.url + link.get_attribute("href"))
    assert resp.status == 200 and resp.body() == b"<script>alert(1)</script>"
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["content-disposition"] == 'attachment; filename="evilX 1.html"'
    assert resp.headers["x-content-type-options"] == "nosniff"
    # a thread with someone who is not (or no longer) on ann's care team: no reply form,
    # and a reply forced through anyway changes nothing
    stranger = env.live.adapter.create({
        "resourceType": "Communication", "status": "completed",
        "subject": {"reference": "Patient/pat-0001"}, "topic": {"text": "Flu shots"},
        "sent": "2026-06-05T09:00:00-05:00", "sender": {"reference": "Practitioner/prac-02"},
        "recipient": [{"reference": "Patient/pat-0001"}]}).resource
    page.goto(f"{portal.url}/messages/{stranger['id']}")
    assert "no longer on your care team" in page.locator("main").inner_text()
    assert page.locator("form.message-form").count() == 0
    check_page(page, "thread-cannot-reply")
    page.goto(f"{portal.url}/messages/comm-0001-01")
    fields = {n: page.locator(f'form.message-form input[name="{n}"]').get_attribute("value")
              for n in ("csrf_token", "form_id")}
    mark = env.live.fingerprint()
    resp = page.request.post(f"{portal.url}/messages/{stranger['id']}/reply",
                             multipart={**fields, "text": "Hello?"})
    assert resp.status == 400 and "no longer on your care team" in resp.text()
    assert env.live.fingerprint() == mark

    # another patient's message, or a part that is not there, is not found
    for path in ("comm-0001-01/comm-0002-01-01/file/0", f"comm-0001-01/{hostile['id']}/file/7",
                 f"comm-0002-01/{hostile['id']}/file/1"):
        assert page.request.get(f"{portal.url}/messages/{path}").status == 404
    assert page.request.get(f"{portal.url}/messages/comm-0002-01").status == 404


def test_learn_groups_the_handouts_and_each_reads_in_the_portal(env, portal, page):
    known = set(portal.tokens())
    sign_in(page, portal, "ann")
    (token,) = set(portal.tokens()) - known
    with env.fhir(token) as fhir:
        docs = [e["resource"] for e in
                fhir.get("Patient/pat-0001/$education").json().get("entry", [])]
    assert docs
    menu(page, "Learn")
    page.wait_for_url(f"{portal.url}/learn")
    groups = page.locator("section.learn-group")
    expected = [name for code, name in (("Condition", "About your health problems"),
                                        ("Medication", "About your medicines"),
                                        ("Observation", "About your test results"))
                if any(d["category"][0]["coding"][0]["code"] == code for d in docs)]
    assert [groups.nth(i).locator("h2").inner_text() for i in range(groups.count())] == expected
    links = page.locator("ul.handouts a")
    assert sorted(links.all_inner_texts()) == sorted(d["description"] for d in docs)
    check_page(page, "learn")

    doc = docs[0]
    page.get_by_role("link", name=doc["description"], exact=True).click()
    page.wait_for_url(f"{portal.url}/learn/*")
    handout_url = page.url
    # the URL names no topic (catalogue ids say the condition: "type-2-diabetes")
    assert all(d["id"] not in handout_url for d in docs)
    assert page.locator("h1").inner_text() == doc["description"]
    body = base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()
    article = page.locator("article.handout")
    assert article.get_attribute("lang") == "en"
    assert page.get_by_role("heading", name="When to get help").count() == 1
    first_item = next(line for line in body.splitlines() if line.startswith("- "))
    assert article.locator("li").first.inner_text() == first_item[2:]
    check_page(page, "handout")
    assert page.request.get(f"{portal.url}/learn/no-such-topic").status == 404
    assert page.request.get(f"{portal.url}/learn/{doc['id']}").status == 404

    # in Spanish the handout says it is in English only
    page.select_option("#lang-select", "es")
    page.get_by_role("button", name="Change language").click()
    page.goto(handout_url)
    assert "solo está en inglés" in page.locator("article.handout").inner_text()
    check_page(page, "handout-es")
