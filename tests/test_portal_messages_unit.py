"""Messages and Learn without a browser: thread and message rules, the checks a message passes
before it is sent, safe downloads, handout grouping and rendering, and a few views through
Flask's test client with a recording stand-in for the FHIR server."""

from __future__ import annotations

import base64
import io
import re

import pytest

from portal import PortalSettings, create_portal, inbox, learn
from portal import threads as th

ME = "Patient/p1"
ALLOWED = ("application/pdf", "image/jpeg", "image/png", "text/plain")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8


def comm(cid, sent, sender, recipient, thread=None, received=None, topic=None, payload=(),
         reply_to=None):
    c = {"resourceType": "Communication", "id": cid, "sent": sent,
         "sender": {"reference": sender}, "recipient": [{"reference": recipient}],
         "subject": {"reference": ME}, "payload": list(payload)}
    if thread:
        c["partOf"] = [{"reference": f"Communication/{thread}"}]
    if received:
        c["received"] = received
    if topic:
        c["topic"] = {"text": topic}
    if reply_to:
        c["inResponseTo"] = [{"reference": f"Communication/{reply_to}"}]
    return c


DATA = [
    comm("h1", "2026-06-01T10:00:00-05:00", ME, "Practitioner/d1", topic="Old"),
    comm("m1", "2026-06-01T10:00:00-05:00", ME, "Practitioner/d1", "h1",
         payload=[{"contentString": "hi"}]),
    comm("m2", "2026-06-02T09:00:00-05:00", "Practitioner/d1", ME, "h1",
         received="2026-06-02T10:00:00Z", payload=[{"contentString": "hello"}]),
    # started by the clinic; newest by its instant although "earlier" as a string
    comm("h2", "2026-06-02T23:00:00-08:00", "Practitioner/d2", ME, topic="Results"),
    comm("m3", "2026-06-02T23:00:00-08:00", "Practitioner/d2", ME, "h2", payload=[
        {"contentString": "see file"},
        {"contentAttachment": {"contentType": "application/pdf", "title": "r.pdf",
                               "size": 5, "data": base64.b64encode(b"%PDF-").decode()}}]),
    comm("m4", "2026-06-03T08:00:00Z", "Practitioner/d2", ME, "h2", reply_to="m3"),
]


def test_threads_newest_first_with_unread_counts_and_whom():
    found = th.threads(DATA, ME)
    assert [t.id for t in found] == ["h2", "h1"]
    h2, h1 = found
    assert (h2.topic, h2.with_, h2.unread, h2.count, h2.last) == \
        ("Results", "Practitioner/d2", 2, 2, "2026-06-03T08:00:00Z")
    assert (h1.with_, h1.unread, h1.count) == ("Practitioner/d1", 0, 2)
    assert th.when("2026-06-02T23:00:00-08:00") > th.when("2026-06-03T01:00:00-05:00")
    assert th.when(None) < th.when("2026-01-01") and th.when("garbage") == th.when(None)


def test_messages_in_order_with_attachments_and_the_message_a_reply_answers():
    shown = th.messages(list(reversed(DATA)), "h2", ME)
    assert [m.id for m in shown] == ["m3", "m4"]
    assert shown[0].texts == ["see file"] and shown[0].unread
    (a,) = shown[0].attachments
    assert (a.index, a.title, a.content_type, a.size) == (1, "r.pdf", "application/pdf", 5)
    assert th.answered(shown, ME) == "m4"
    assert th.answered(th.messages(DATA[:2], "h1", ME), ME) == ""  # nobody answered yet
    assert th.messages(DATA, "nope", ME) == []


def test_care_team_members_of_active_teams_only():
    teams = [
        {"resourceType": "CareTeam", "status": "active", "participant": [
            {"member": {"reference": "Practitioner/d1", "display": "Dr. One"}},
            {"member": {"reference": "http://x/fhir/Practitioner/d2"}}]},
        {"resourceType": "CareTeam", "status": "inactive", "participant": [
            {"member": {"reference": "Practitioner/d9", "display": "Dr. Gone"}}]},
        {"resourceType": "OperationOutcome"},
    ]
    assert th.care_team(teams) == {"Practitioner/d1": "Dr. One", "Practitioner/d2": ""}
    names = th.names_of([{"sender": {"reference": "Practitioner/d2", "display": "Dr. Two"}}],
                        th.care_team(teams))
    assert names == {"Practitioner/d2": "Dr. Two", "Practitioner/d1": "Dr. One"}
    with pytest.raises(th.InputError) as err:
        th.clean_recipient("Practitioner/d9", th.care_team(teams))
    assert err.value.key == "msg.err_recipient_unknown"
    with pytest.raises(th.InputError) as err:
        th.clean_recipient("", th.care_team(teams))
    assert err.value.key == "msg.err_recipient_empty"


def test_text_and_topic_limits_are_the_operations():
    assert th.clean_text("  a\r\nb  ") == "a\nb"
    assert th.clean_text("x" * th.MAX_TEXT) == "x" * 10_000
    for raw, key in (("", "msg.err_text_empty"), (" \r\n ", "msg.err_text_empty"),
                     ("x" * 10_001, "msg.err_text_long")):
        with pytest.raises(th.InputError) as err:
            th.clean_text(raw)
        assert (err.value.field, err.value.key) == ("text", key)
    with pytest.raises(th.InputError) as err:
        th.clean_text("t" * 201, "topic", th.MAX_TOPIC)
    assert err.value.key == "msg.err_topic_long" and err.value.values == {"length": 201,
                                                                          "max": 200}


def test_uploads_are_checked_like_the_operation_checks_them():
    ok = th.clean_upload("C:\\Users\\me\\scan.PNG", "image/png", PNG, ALLOWED, 100)
    assert ok == {"contentType": "image/png", "data": base64.b64encode(PNG).decode(),
                  "title": "scan.png"}
    assert th.clean_upload("a.txt", "text/plain; charset=utf-8", "olé".encode(), ALLOWED,
                           100)["contentType"] == "text/plain"
    for args, key in ((("x.exe", "application/x-msdownload", b"MZ"), "msg.err_file_type"),
                      (("x.png", "image/png", PNG * 20), "msg.err_file_big"),
                      (("x.png", "image/png", b""), "msg.err_file_empty"),
                      (("x.pdf", "application/pdf", b"hello"), "msg.err_file_content"),
                      (("x.jpg", "image/jpeg", PNG), "msg.err_file_content"),
                      (("x.txt", "text/plain", b"\xff\xfe\xfa"), "msg.err_file_content")):
        with pytest.raises(th.InputError) as err:
            th.clean_upload(*args, ALLOWED, 100)
        assert (err.value.field, err.value.key) == ("attachment", key)
    assert th.content_matches("application/pdf", b"%PDF-1.7")
    assert th.content_matches("image/jpeg", b"\xff\xd8\xff\xe0")
    assert not th.content_matches("text/html", b"<p>")


def test_download_names_and_types_are_safe():
    assert th.safe_filename('../../evil"\r\nX: 1.html', "application/octet-stream") == \
        "evilX 1.html"
    assert th.safe_filename("", "application/pdf") == "attachment.pdf"
    assert th.safe_filename("report", "application/pdf") == "report.pdf"
    assert th.safe_filename("photo.JPG", "image/jpeg") == "photo.jpg"
    long = th.safe_filename("a" * 300 + ".pdf", "application/pdf")
    assert len(long) == 100 and long.endswith(".pdf")
    data = base64.b64encode(b"<script>").decode()
    assert th.download({"contentType": "text/html", "data": data, "title": "x.html"},
                       ALLOWED) == (b"<script>", "application/octet-stream", "x.html")
    assert th.download({"contentType": "application/pdf; x=y", "data":
                        base64.b64encode(b"%PDF").decode()}, ALLOWED)[1:] == \
        ("application/pdf", "attachment.pdf")
    assert th.download({"contentType": "text/plain", "url": "http://x/y"}, ALLOWED) is None
    assert th.download({"contentType": "text/plain", "data": "not base64!"}, ALLOWED) is None
    assert th.size_words(5 * 1024 * 1024) == "5 MB" and th.size_words(80) == "80 bytes"


def test_the_portal_knows_the_gateways_attachment_rules():
    from fhir_gateway.config import PortalConfig

    gateway = PortalConfig()
    portal = PortalSettings("http://x/fhir", "c", "http://x/cb", "k")
    assert ",".join(portal.attachment_types) == gateway.attachment_types
    assert portal.max_attachment_bytes == gateway.max_attachment_bytes
    app = create_portal(portal)
    assert app.config["MAX_CONTENT_LENGTH"] == 64 * 1024 + 5 * 1024 * 1024


# --- Learn ------------------------------------------------------------------------------------

def doc(did, title, kind=None, text="", content_type="text/plain; charset=utf-8"):
    d = {"resourceType": "DocumentReference", "id": did, "description": title,
         "content": [{"attachment": {"contentType": content_type, "language": "en",
                                     "data": base64.b64encode(text.encode()).decode()}}]}
    if kind:
        d["category"] = [{"coding": [{"system": learn.RESOURCE_TYPES, "code": kind}]}]
    return d


def test_handouts_grouped_by_what_they_are_about():
    docs = [doc("lab", "A1C", "Observation"), doc("drug", "Metformin", "Medication"),
            doc("x", "Other", None), doc("dm", "Diabetes", "Condition"),
            doc("bad id!", "Bad", "Condition"), {"resourceType": "OperationOutcome"}]
    groups = learn.grouped(docs)
    assert [(key, [h.id for h in items]) for key, items in groups] == [
        ("learn.group.conditions", ["dm"]), ("learn.group.medicines", ["drug"]),
        ("learn.group.results", ["lab"]), ("learn.group.other", ["x"])]
    assert learn.grouped([]) == []


def test_handout_text_becomes_headings_paragraphs_and_lists():
    text = ("Asthma\n\nWhat it is\nAsthma makes the airways narrow.\n\nWhat you can do\n"
            "- Use your inhaler.\n- Avoid smoke.\n\nWhen to get help\nCall 911 if you "
            "cannot speak.")
    assert learn.blocks(text, "Asthma") == [
        ("h", "What it is"), ("p", "Asthma makes the airways narrow."),
        ("h", "What you can do"), ("ul", ["Use your inhaler.", "Avoid smoke."]),
        ("h", "When to get help"), ("p", "Call 911 if you cannot speak.")]
    html = ('<h2>What it is</h2><p>Plain <b>words</b> &amp; more.<script>alert(1)</script>'
            '</p><ul><li>One</li><li><a href="http://x">Two</a></li></ul>')
    plain, lang = learn.text_of(doc("h", "T", text=html, content_type="text/html"))
    assert lang == "en" and "<" not in plain and "alert" not in plain
    assert learn.blocks(plain) == [("h", "What it is"), ("p", "Plain words & more."),
                                   ("ul", ["One", "Two"])]
    assert learn.text_of(doc("p", "T", text="x", content_type="application/pdf")) == ("", "")


class FakeServer:
    """Stands in for the FHIR server: canned answers, and every call recorded."""

    def __init__(self, **answers):
        self.answers, self.calls = answers, []

    def bundle_entries(self, path, params=None):
        self.calls.append(("bundle", path))
        return self.answers.get("education", [])

    def search(self, rtype, params):
        self.calls.append(("search", rtype))
        return self.answers.get(rtype, [])

    def post_operation(self, path, parameters):
        self.calls.append(("post", path))
        raise AssertionError("nothing may be sent")


@pytest.fixture
def signed_in_client(monkeypatch):
    def make(server: FakeServer):
        app = create_portal(PortalSettings("http://127.0.0.1:9/fhir", "c",
                                           "http://127.0.0.1:8081/callback", "k"))
        sid, entry = app.extensions["portal"].store.create()
        entry.signed_in = True
        entry.fhir_state = {"patient_id": "p1", "server": {"auth": {"access_token": "t"}}}
        for module in (learn, inbox):
            monkeypatch.setattr(module, "api", lambda: server)
        client = app.test_client()
        with client.session_transaction() as session:
            session["sid"] = sid
        return client
    return make


def test_learn_says_plainly_when_there_is_nothing(signed_in_client):
    server = FakeServer(education=[])
    client = signed_in_client(server)
    page = client.get("/learn")
    assert page.status_code == 200 and "There are no handouts for you right now" in page.text
    assert server.calls == [("bundle", "Patient/p1/$education")]
    assert client.get("/learn/asthma").status_code == 404


def test_a_handout_is_rendered_escaped(signed_in_client):
    evil = doc("t1", "<b>Title</b>", "Condition", text="<img src=x onerror=alert(1)>")
    client = signed_in_client(FakeServer(education=[evil]))
    listing = client.get("/learn").text
    (path,) = re.findall(r'href="(/learn/[^"]+)"', listing)
    assert "t1" not in path  # the URL carries a key, not the catalogue id
    assert client.get("/learn/t1").status_code == 404
    page = client.get(path).text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img" not in page
    assert "&lt;b&gt;Title&lt;/b&gt;" in page and "About your health problems" in page
    assert client.get("/learn/no%20such").status_code == 404


def test_an_oversize_upload_gets_the_form_back_and_sends_nothing(signed_in_client):
    server = FakeServer(CareTeam=[{"resourceType": "CareTeam", "status": "active",
                                   "participant": [{"member": {"reference": "Practitioner/d1",
                                                               "display": "Dr. One"}}]}])
    client = signed_in_client(server)
    form = client.get("/messages/new").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    big = b"a" * (5 * 1024 * 1024 + 70 * 1024)


    resp = client.post("/messages/new", content_type="multipart/form-data", data={
        "csrf_token": token, "recipient": "Practitioner/d1", "topic": "t", "text": "x",
        "attachment": (io.BytesIO(big), "big.txt", "text/plain")})
    assert resp.status_code == 413
    assert 'id="err-attachment" role="alert"' in resp.text and "up to 5 MB" in resp.text
    # one byte over: read, and refused the same way, with what was typed kept
    form = client.get("/messages/new").text
    fields = {name: re.search(rf'name="{name}" value="([^"]+)"', form).group(1)
              for name in ("csrf_token", "form_id")}
    resp = client.post("/messages/new", content_type="multipart/form-data", data={
        **fields, "recipient": "Practitioner/d1", "topic": "t", "text": "kept words",
        "attachment": (io.BytesIO(b"a" * (5 * 1024 * 1024 + 1)), "big.txt", "text/plain")})
    assert resp.status_code == 400 and "up to 5 MB" in resp.text and "kept words" in resp.text
    assert not [c for c in server.calls if c[0] == "post"]


def test_a_refusal_of_the_server_is_shown_next_to_the_field_it_names(signed_in_client):
    from portal.fhir_api import GatewayError

    class Refusing(FakeServer):
        def post_operation(self, path, parameters):
            self.calls.append(("post", path, parameters))
            raise GatewayError(422, "Practitioner/d1 is not on your care team", "recipient")

    team = [{"resourceType": "CareTeam", "status": "active",
             "participant": [{"member": {"reference": "Practitioner/d1", "display": "Dr. One"}}]}]
    server = Refusing(CareTeam=team)
    client = signed_in_client(server)
    form = client.get("/messages/new").text
    fields = {name: re.search(rf'name="{name}" value="([^"]+)"', form).group(1)
              for name in ("csrf_token", "form_id")}
    resp = client.post("/messages/new", data={**fields, "recipient": "Practitioner/d1",
                                              "topic": " Knee ", "text": "It hurts\r\nmore"})
    assert resp.status_code == 422
    assert re.search(r'id="err-recipient" role="alert">This person is no longer on your care '
                     r"team", resp.text)
    assert 'value=" Knee "' in resp.text and "It hurts" in resp.text  # typed text kept
    (call,) = [c for c in server.calls if c[0] == "post"]
    assert call[1] == "Communication/$send"
    assert call[2] == [{"name": "topic", "valueString": "Knee"},
                       {"name": "recipient", "valueReference": {"reference": "Practitioner/d1"}},
                       {"name": "text", "valueString": "It hurts\nmore"}]


def test_a_handout_link_works_only_in_its_own_session(signed_in_client):
    topic = doc("type-2-diabetes", "Type 2 diabetes", "Condition", text="Plain words.")
    first = signed_in_client(FakeServer(education=[topic]))
    (path,) = re.findall(r'href="(/learn/[^"]+)"', first.get("/learn").text)
    assert "diabetes" not in path
    assert first.get(path).status_code == 200
    other = signed_in_client(FakeServer(education=[topic]))  # another session, same topic
    assert other.get(path).status_code == 404
    assert other.get("/learn/" + "x" * 40).status_code == 404


@pytest.mark.parametrize("content_type", [
    "application/pdf", "image/png", "image/jpeg", "text/plain", "image/gif", "text/html"])
@pytest.mark.parametrize("data", [
    b"%PDF-1.7 x", b"\x89PNG\r\n\x1a\n....", b"\xff\xd8\xff\xe0..", b"plain words",
    "caf\u00e9".encode(), b"\xff\xfe not utf-8 \x80", b"", b"GIF89a"])
def test_the_portal_checks_a_file_as_the_gateway_does(content_type, data):
    """The portal may not import the gateway's rule, so it keeps its own copy: the same answer
    for every declared type and content (else it would refuse what the server takes, or send
    what it refuses)."""
    from mappings.portal import messaging

    assert th.content_matches(content_type, data) == messaging.content_matches(content_type,
                                                                              data)
