"""Messages: the patient's threads with the care team, reading one, writing a new one, replying.

On the server's messaging operations: `Communication/$send` (a new thread or a reply, with an
optional attachment), `Communication/{id}/$mark-read` (when the patient opens a thread) and
plain Communication and CareTeam searches with the patient's token. Everything a patient types
is checked here first (`portal.threads`, the operation's own rules), so bad input never reaches
the server; a refusal the server still makes is shown next to the field it names. URLs carry
opaque Communication ids only; the recipient and the text go in POST bodies.
"""

from __future__ import annotations

import io
import logging

from flask import abort, redirect, render_template, request, send_file, session, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from portal import threads as th
from portal.blueprint import api, bp, busy_page, current, patient_id, signed_in, state, t
from portal.fhir_api import GatewayError, valid_id
from portal.forms import new_form_id, use_form_id
from portal.messages import EN

log = logging.getLogger("portal.messages")
FIELDS = ("recipient", "topic", "text", "attachment")


def _me() -> str:
    return f"Patient/{patient_id()}"


def _team() -> dict[str, str]:
    return th.care_team(api().search("CareTeam", {"patient": patient_id()}))


def _rules() -> dict:
    settings = state().settings
    return {"types": th.type_names(settings.attachment_types),
            "max": th.size_words(settings.max_attachment_bytes),
            "max_text": th.MAX_TEXT, "max_topic": th.MAX_TOPIC,
            "accept": ",".join(settings.attachment_types)}


def _checked(errors: dict[str, str], check, *args):
    """`check(*args)`, or None with its message added to `errors` under its field."""
    try:
        return check(*args)
    except th.InputError as exc:
        errors[exc.field] = t(exc.key, **exc.values)
        return None


def _refusal(exc: GatewayError) -> dict[str, str]:
    """The server's refusal next to the field its OperationOutcome names, in the patient's
    language where the portal knows the rule, else in the server's words."""
    name = exc.expression.split(",")[0].split(".")[0]
    key = f"msg.refused.{name}"
    text = t(key) if key in EN else t("msg.err_refused", reason=exc.text)
    return {name if name in FIELDS else "_page": text}


def _upload() -> dict | None:
    """The attachment of the submitted form (None when no file was chosen)."""
    upload = request.files.get("attachment")
    if upload is None or not upload.filename:
        return None
    settings = state().settings
    data = upload.stream.read(settings.max_attachment_bytes + 1)
    return th.clean_upload(upload.filename, upload.mimetype, data, settings.attachment_types,
                           settings.max_attachment_bytes)


def _send(parameters: list[dict]) -> tuple[int, dict]:
    status, body = api().post_operation("Communication/$send", parameters)
    log.info("message sent: %s", status)
    return status, body


def _parameters(text: str, attachment: dict | None, **refs: str) -> list[dict]:
    params = [{"name": name.replace("_", "-"), "valueReference": {"reference": value}}
              for name, value in refs.items() if value]
    params.append({"name": "text", "valueString": text})
    if attachment:
        params.append({"name": "attachment", "valueAttachment": attachment})
    return params


def _after_send(status: int, body: dict):
    """To the thread (a 201 names it in partOf); a queued message (202) to the list."""
    tid = th.thread_of(body) if status == 201 else ""
    session["msg_notice"] = "msg.sent" if tid else "msg.queued"
    if tid and valid_id(tid):
        return redirect(url_for("portal.thread", tid=tid), code=303)
    return redirect(url_for("portal.messages"), code=303)


# --- the list ---------------------------------------------------------------------------------

@bp.get("/messages")
@signed_in
def messages():
    found = api().search("Communication", {"patient": patient_id(), "_count": "200"})
    names = th.names_of(found, _team())
    return render_template("messages.html", threads=th.threads(found, _me()), names=names,
                           th=th, notice=session.pop("msg_notice", None))


# --- a new message ----------------------------------------------------------------------------

def _compose(errors: dict[str, str] | None = None, values: dict[str, str] | None = None,
             status: int = 200, team: dict[str, str] | None = None):
    team = _team() if team is None else team
    return render_template("compose.html", team=team, errors=errors or {}, values=values or {},
                           form_id=new_form_id(), rules=_rules()), status


@bp.get("/messages/new")
@signed_in
def compose():
    return _compose()


@bp.post("/messages/new")
@signed_in
def send_new():
    values = {k: request.form.get(k, "") for k in ("recipient", "topic", "text")}
    if not use_form_id(request.form.get("form_id", "")):
        return _compose({"_page": t("msg.err_twice")}, values, 409)
    team = _team()
    errors: dict[str, str] = {}
    recipient = _checked(errors, th.clean_recipient, values["recipient"], team)
    topic = _checked(errors, th.clean_text, values["topic"], "topic", th.MAX_TOPIC)
    text = _checked(errors, th.clean_text, values["text"])
    attachment = _checked(errors, _upload)
    if errors:
        return _compose(errors, values, 400, team)
    params = [{"name": "topic", "valueString": topic},
              *_parameters(text, attachment, recipient=recipient)]
    try:
        status, body = _send(params)
    except GatewayError as exc:
        if exc.status in (400, 409, 413, 422):
            return _compose(_refusal(exc), values, 422, team)
        if exc.status == 503:
            return busy_page(lambda: _compose({"_page": t("msg.err_busy")}, values, 503, team),
                             exc)
        raise
    return _after_send(status, body)


# --- one thread -------------------------------------------------------------------------------

def _header(tid: str) -> dict:
    """The thread's header Communication, or 404 (unknown, another patient's, or a message)."""
    header = api().read_or_none("Communication", tid)
    if header is None or th.thread_of(header):
        abort(404)
    return header


def _thread_messages(tid: str) -> list[dict]:
    return api().search("Communication", {"part-of": f"Communication/{tid}", "_count": "200"})


def _thread_page(tid: str, errors: dict[str, str] | None = None,
                 values: dict[str, str] | None = None, status: int = 200,
                 mark_read: bool = False):
    header = _header(tid)
    found = _thread_messages(tid)
    me = _me()
    shown = th.messages(found, tid, me)
    if mark_read:
        for message in shown:
            if message.unread:
                try:
                    api().post_operation(f"Communication/{message.id}/$mark-read", [])
                except GatewayError as exc:  # still shown; it stays unread at the server
                    log.warning("mark-read failed: %s", exc.status)
    team = _team()
    other = th.other_party(header, me)
    return render_template(
        "thread.html", tid=tid, topic=(header.get("topic") or {}).get("text") or "",
        shown=shown, me=me, other=other, can_reply=other in team,
        names=th.names_of([header, *found], team), th=th, errors=errors or {},
        values=values or {}, form_id=new_form_id(), rules=_rules(),
        notice=session.pop("msg_notice", None)), status


@bp.get("/messages/<tid>")
@signed_in
def thread(tid: str):
    """A thread's messages in order; opening it marks the patient's unread ones read."""
    return _thread_page(tid, mark_read=True)


@bp.post("/messages/<tid>/reply")
@signed_in
def reply(tid: str):
    header = _header(tid)
    values = {"text": request.form.get("text", "")}
    if not use_form_id(request.form.get("form_id", "")):
        return _thread_page(tid, {"_page": t("msg.err_twice")}, values, 409)
    me = _me()
    other = th.other_party(header, me)
    errors: dict[str, str] = {} if other in _team() else {"_page": t("msg.err_left_team")}
    text = _checked(errors, th.clean_text, values["text"])
    attachment = _checked(errors, _upload)
    if errors:
        return _thread_page(tid, errors, values, 400)
    answered = th.answered(th.messages(_thread_messages(tid), tid, me), me)
    params = _parameters(text, attachment, thread=f"Communication/{tid}", recipient=other,
                         in_response_to=f"Communication/{answered}" if answered else "")
    try:
        status, body = _send(params)
    except GatewayError as exc:
        if exc.status in (400, 409, 413, 422):
            return _thread_page(tid, _refusal(exc), values, 422)
        if exc.status == 503:
            return busy_page(lambda: _thread_page(tid, {"_page": t("msg.err_busy")}, values,
                                                  503), exc)
        raise
    return _after_send(status, body)


@bp.get("/messages/<tid>/<mid>/file/<int:n>")
@signed_in
def attachment(tid: str, mid: str, n: int):
    """One attachment, fetched from the server with the patient's token and served as a
    download of its declared type (a type the portal does not serve as octet-stream)."""
    message = api().read_or_none("Communication", mid) if valid_id(tid) else None
    if message is None:
        abort(404)
    payload = message.get("payload") or []
    if th.thread_of(message) != tid or not 0 <= n < len(payload):
        abort(404)
    found = th.download(payload[n].get("contentAttachment") or {},
                        state().settings.attachment_types)
    if found is None:
        abort(404)
    data, content_type, name = found
    resp = send_file(io.BytesIO(data), mimetype=content_type, as_attachment=True,
                     download_name=name, max_age=0)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.app_errorhandler(RequestEntityTooLarge)
def _too_large(exc: RequestEntityTooLarge):
    """A file over the limit: the form again with the message next to the file field (what
    was typed cannot be kept: the body was not read)."""
    error = {"attachment": t("msg.err_file_big", max=_rules()["max"])}
    if current() is not None and request.endpoint == "portal.send_new":
        return _compose(error, status=413)
    if current() is not None and request.endpoint == "portal.reply":
        return _thread_page((request.view_args or {}).get("tid", ""), error, status=413)
    return render_template("error.html", message=t("msg.err_body_big")), 413
