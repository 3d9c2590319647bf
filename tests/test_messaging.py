"""Secure messaging over HTTP with real patient tokens: `$send` starts and continues threads
(only to the care team; attachments checked by type, size and bytes), `$mark-read` sets the
read receipt once, `$unread` counts; every refusal names its parameter and changes nothing."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhirclient.models.fhirelementfactory import FHIRElementFactory

from mappings.portal import messaging as msgs

JSON = {"Content-Type": "application/fhir+json"}
PDF = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16


def both_validate(resource: dict) -> None:
    rtype = resource["resourceType"]
    get_fhir_model_class(rtype).model_validate(resource)
    FHIRElementFactory.instantiate(rtype, resource)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def send_params(recipient: str | None = "Practitioner/prac-01", **kw) -> dict:
    """A $send Parameters body; references and attachments get their value[x] types."""
    out = []
    if recipient is not None:
        out.append({"name": "recipient", "valueReference": {"reference": recipient}})
    for name, value in kw.items():
        name = name.replace("_", "-")
        if name in ("thread", "in-response-to"):
            out.append({"name": name, "valueReference": {"reference": value}})
        elif name == "attachment":
            out.append({"name": name, "valueAttachment": value})
        else:
            out.append({"name": name, "valueString": value})
    return {"resourceType": "Parameters", "parameter": out}


@pytest.fixture(scope="module")
def ann(smart_env):
    return smart_env.patient_token("app-public", "ann")["access_token"]


def _recent(instant: str) -> bool:
    return abs(datetime.now(UTC) - datetime.fromisoformat(instant)) < timedelta(minutes=1)


def test_send_starts_a_new_thread(smart_env, ann):
    store = smart_env.live.adapter
    with smart_env.fhir(ann) as client:
        resp = client.post("Communication/$send", headers=JSON, json=send_params(
            "Practitioner/prac-03", topic="Question about my statin",
            text="Can I take atorvastatin in the morning?"))
    assert resp.status_code == 201, resp.text
    message = resp.json()
    assert store.read("Communication", message["id"]) == message
    header_ref = message["partOf"][0]["reference"]
    assert header_ref.startswith("Communication/")
    header = store.read("Communication", header_ref.split("/")[1])
    assert header["topic"] == {"text": "Question about my statin"} == message["topic"]
    assert "partOf" not in header and header["sender"]["reference"] == "Patient/pat-0001"
    assert message["status"] == "completed" and _recent(message["sent"])
    assert message["sender"] == message["subject"] == {"reference": "Patient/pat-0001"}
    assert message["recipient"] == [{"reference": "Practitioner/prac-03"}]
    assert message["payload"] == [{"contentString": "Can I take atorvastatin in the morning?"}]
    assert "inResponseTo" not in message and "received" not in message
    both_validate(header)
    both_validate(message)


def test_send_replies_in_a_thread_with_an_attachment(smart_env, ann):
    store = smart_env.live.adapter
    with smart_env.fhir(ann) as client:
        resp = client.post("Communication/$send", headers=JSON, json=send_params(
            thread="Communication/comm-0001-01", in_response_to="Communication/comm-0001-01-02",
            text="Here is my food diary.",
            attachment={"contentType": "application/pdf", "data": b64(PDF),
                        "title": "Food diary"}))
    assert resp.status_code == 201, resp.text
    message = store.read("Communication", resp.json()["id"])
    assert message["partOf"] == [{"reference": "Communication/comm-0001-01"}]
    assert message["inResponseTo"] == [{"reference": "Communication/comm-0001-01-02"}]
    assert message["topic"] == {"text": "Preparing for my next visit"}
    attachment = message["payload"][1]["contentAttachment"]
    assert base64.b64decode(attachment["data"]) == PDF
    assert attachment["size"] == len(PDF) and attachment["title"] == "Food diary"
    assert attachment["hash"] == b64(hashlib.sha1(PDF).digest())
    both_validate(message)


@pytest.mark.parametrize(("content_type", "data"), [
    ("image/png", PNG), ("image/jpeg", JPEG), ("text/plain", "Grüße".encode())])
def test_send_accepts_each_allowed_type_alone(smart_env, ann, content_type, data):
    with smart_env.fhir(ann) as client:
        resp = client.post("Communication/$send", headers=JSON, json=send_params(
            thread="Communication/comm-0001-01",
            attachment={"contentType": content_type, "data": b64(data)}))
    assert resp.status_code == 201, resp.text
    stored = smart_env.live.adapter.read("Communication", resp.json()["id"])
    assert [list(p) for p in stored["payload"]] == [["contentAttachment"]]


def _refused(smart_env, token, body, status, expression, path="Communication/$send"):
    mark = smart_env.live.fingerprint()
    with smart_env.fhir(token) as client:
        resp = client.post(path, headers=JSON, json=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["resourceType"] == "OperationOutcome"
    assert resp.json()["issue"][0]["expression"] == [expression], resp.text
    assert smart_env.live.fingerprint() == mark
    return resp.json()["issue"][0]["diagnostics"]


THREAD = "Communication/comm-0001-01"


@pytest.mark.parametrize(("body", "status", "expression"), [
    (send_params("Practitioner/prac-02", thread=THREAD, text="hi"), 422, "recipient"),
    (send_params("Patient/pat-0002", thread=THREAD, text="hi"), 422, "recipient"),
    (send_params(None, thread=THREAD, text="hi"), 400, "recipient"),
    (send_params("prac-01", thread=THREAD, text="hi"), 400, "recipient"),
    (send_params(text="hi"), 400, "topic"),
    (send_params(thread=THREAD), 400, "text"),
    (send_params(thread=THREAD, text="   "), 400, "text"),
    (send_params(thread=THREAD, text="x" * 10_001), 400, "text"),
    (send_params(thread=THREAD, text="hi", topic="Another topic"), 400, "topic"),
    (send_params(thread="Communication/comm-0001-01-02", text="hi"), 422, "thread"),
    (send_params(thread="Patient/pat-0001", text="hi"), 400, "thread"),
    (send_params(topic="New", text="hi", in_response_to="Communication/comm-0001-01-02"),
     422, "in-response-to"),
    (send_params(thread=THREAD, text="hi", in_response_to="Communication/comm-0003-01-01"),
     404, "Communication"),
    (send_params(thread="Communication/comm-0002-01", text="hi"), 404, "Communication"),
    (send_params(thread=THREAD, attachment={"contentType": "image/gif",
                                            "data": b64(b"GIF89a....")}), 422, "attachment"),
    (send_params(thread=THREAD, attachment={"contentType": "image/png", "data": b64(PDF)}),
     422, "attachment"),
    (send_params(thread=THREAD, attachment={"contentType": "application/pdf",
                                            "data": b64(PNG)}), 422, "attachment"),
    (send_params(thread=THREAD, attachment={"contentType": "image/jpeg", "data": b64(PNG)}),
     422, "attachment"),
    (send_params(thread=THREAD, attachment={"contentType": "text/plain",
                                            "data": b64(b"\xff\xfe bad")}), 422, "attachment"),
    (send_params(thread=THREAD, attachment={"contentType": "application/pdf",
                                            "data": "not base64!"}), 400, "attachment"),
    (send_params(thread=THREAD, attachment={"data": b64(PDF)}), 400, "attachment"),
    (send_params(thread=THREAD, attachment={"contentType": "application/pdf",
                                            "data": b64(PDF), "size": 3}), 422, "attachment"),
])
def test_send_refusals(smart_env, ann, body, status, expression):
    _refused(smart_env, ann, body, status, expression)


def test_send_refuses_an_oversized_attachment_with_413(smart_env, ann):
    limit = smart_env.live.config.portal.max_attachment_bytes
    for size in (limit + 1, limit + 4096):
        body = send_params(thread=THREAD, attachment={
            "contentType": "application/pdf", "data": b64(b"%PDF" + b"\x00" * (size - 4))})
        assert "larger than" in _refused(smart_env, ann, body, 413, "attachment")


def _unread(smart_env, token, **query) -> dict:
    with smart_env.fhir(token) as client:
        resp = client.get("Communication/$unread", params=query)
    assert resp.status_code == 200, resp.text
    both_validate(resp.json())
    return resp.json()


def _expected_unread(store) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in store.iter_all():
        if r["resourceType"] == "Communication" and r.get("partOf") \
                and not r.get("received") and {"reference": "Patient/pat-0001"} in [
                    {"reference": x["reference"]} for x in r.get("recipient", [])]:
            key = r["partOf"][0]["reference"]
            out[key] = out.get(key, 0) + 1
    return out


def test_unread_then_mark_read_is_a_receipt_once(smart_env, ann):
    store = smart_env.live.adapter
    expected = _expected_unread(store)
    assert expected == {THREAD: 1}
    before = _unread(smart_env, ann)
    assert before["parameter"][0] == {"name": "count", "valueInteger": 1}
    thread = before["parameter"][1]
    assert {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
            for p in thread["part"]} == {"thread": {"reference": THREAD}, "count": 1,
                                         "topic": "Preparing for my next visit"}
    assert _unread(smart_env, ann, patient="pat-0001") == before

    with smart_env.fhir(ann) as client:
        resp = client.post("Communication/comm-0001-01-02/$mark-read")
        assert resp.status_code == 200, resp.text
        read = resp.json()
        assert _recent(read["received"])
        before_read = store.read("Communication", "comm-0001-01-02")
        assert before_read == read
        assert len(store.history("Communication", "comm-0001-01-02", 10).entries) == 2
        both_validate(read)
        mark = smart_env.live.fingerprint()
        again = client.post("Communication/comm-0001-01-02/$mark-read")
        assert again.status_code == 200 and again.json() == read
        assert smart_env.live.fingerprint() == mark
    after = _unread(smart_env, ann)
    assert after == {"resourceType": "Parameters",
                     "parameter": [{"name": "count", "valueInteger": 0}]}


@pytest.mark.parametrize(("path", "status", "expression"), [
    ("Communication/comm-0001-01-01/$mark-read", 422, "Communication.recipient"),
    ("Communication/comm-0002-01-04/$mark-read", 404, "Communication"),
    ("Communication/nope/$mark-read", 404, "Communication"),
])
def test_mark_read_refusals(smart_env, ann, path, status, expression):
    _refused(smart_env, ann, None, status, expression, path=path)


def test_unread_of_another_patient_is_not_found(smart_env, ann):
    mark = smart_env.live.fingerprint()
    with smart_env.fhir(ann) as client:
        resp = client.get("Communication/$unread", params={"patient": "pat-0002"})
        sent_as_other = client.post("Communication/$send", headers=JSON, json={
            **send_params(thread=THREAD, text="hi"),
            "parameter": [*send_params(thread=THREAD, text="hi")["parameter"],
                          {"name": "patient", "valueString": "pat-0002"}]})
    assert resp.status_code == 404 and resp.json()["issue"][0]["expression"] == ["patient"]
    assert sent_as_other.status_code == 400
    assert sent_as_other.json()["issue"][0]["expression"] == ["patient"]
    assert smart_env.live.fingerprint() == mark


# -- the pure builders -----------------------------------------------------------------------

def test_content_sniffing():
    assert msgs.content_matches("application/pdf", PDF)
    assert msgs.content_matches("image/png", PNG)
    assert msgs.content_matches("image/jpeg", JPEG)
    assert msgs.content_matches("text/plain", "ok ✓".encode())
    assert not msgs.content_matches("text/plain", b"\xc3\x28")
    assert not msgs.content_matches("image/gif", b"GIF89a")


def test_care_team_members_skip_inactive_teams():
    teams = [{"status": "active", "participant": [{"member": {"reference": "Practitioner/a"}}]},
             {"status": "inactive", "participant": [{"member": {"reference": "Practitioner/b"}}]}]
    assert msgs.care_team_members(teams) == {"Practitioner/a"}


def test_built_resources_validate():
    now = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)
    header = msgs.build_thread_header("Patient/p", "Practitioner/d", "Topic", now)
    attachment = msgs.clean_attachment({"contentType": "image/png", "data": b64(PNG),
                                        "title": "Rash"}, ["image/png"], 1000)
    message = msgs.build_message("Patient/p", "Practitioner/d", "Communication/h", now,
                                 topic="Topic", text="Look", attachment=attachment,
                                 in_response_to="Communication/m1")
    unread = msgs.unread_parameters(msgs.unread_summary([message], "Practitioner/d"))
    assert unread["parameter"][0]["valueInteger"] == 1
    for resource in (header, message, msgs.mark_read(message, now), unread):
        both_validate(resource)
    with pytest.raises(msgs.MessageInputError):
        msgs.build_message("Patient/p", "Practitioner/d", "Communication/h", now)
