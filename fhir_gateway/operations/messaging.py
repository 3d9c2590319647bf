"""Secure messaging: `Communication/$send`, `Communication/{id}/$mark-read`, `$unread`.

Threads follow the seed's pattern (header Communication with the `topic`; messages `partOf` it
and `inResponseTo` the message answered), built and checked by `mappings.portal.messaging`.
A patient writes only to members of their CareTeams; a new thread's header and first message
are stored in one transaction. A reply the EHR cannot take now is kept in the gateway's outbox
(202 and its status URL, as a plain create), unless a change to what its checks read (the
thread, the care team) still waits there: then it is refused (503) like a transaction. A read
receipt is `received`, set with optimistic concurrency and idempotent. Anything of another
patient looks missing (404).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from adapters.base import BundleEntryRequest
from adapters.errors import Invalid, PreconditionFailed, Unprocessable
from fhir_gateway.errors import PayloadTooLarge
from fhir_gateway.operations.common import patient_and_decision, search_all
from fhir_gateway.operations.registry import OperationContext, OperationSpec, ParamSpec
from fhir_gateway.request import FhirRequest, FhirResponse
from fhir_gateway.service import version_headers
from fhir_gateway.validation import validate_resource
from mappings.portal import messaging as msgs

_ERRORS = ((msgs.AttachmentTooLarge, PayloadTooLarge), (msgs.MessageRefused, Unprocessable),
           (msgs.MessageInputError, Invalid))


def _fail(exc: msgs.MessageInputError) -> Exception:
    cls = next(c for kind, c in _ERRORS if isinstance(exc, kind))
    return cls(exc.message, expression=exc.expression)


def _sender(ctx: OperationContext, decision) -> str:
    """The patient who sends: the token's patient, else the `patient` parameter."""
    if decision is not None and decision.patient is not None:
        if ctx.one("patient") not in (None, decision.patient, f"Patient/{decision.patient}"):
            raise Invalid("A patient token sends as its own patient", expression="patient")
        return decision.patient
    return patient_and_decision(ctx, "Communication")[0]


def _visible_comm(ctx: OperationContext, ref: str) -> dict:
    service = ctx.service
    rid = ref.split("/", 1)[1]
    read = FhirRequest("read", "Communication", rid, principal=ctx.request.principal)
    return service._visible(service.decide(read), "Communication", rid)


def send(ctx: OperationContext) -> FhirResponse:
    service, req = ctx.service, ctx.request
    portal = service.config.portal
    creating = FhirRequest("create", "Communication", principal=req.principal)
    create = service.decide(creating)
    pid = _sender(ctx, create)
    patient = f"Patient/{pid}"
    try:
        thread = ctx.one("thread")
        thread = None if thread is None else msgs.parse_reference(thread, "thread",
                                                                  ("Communication",))
        recipient = msgs.parse_reference(ctx.one("recipient", required=True), "recipient",
                                         ("Practitioner", "PractitionerRole", "Organization",
                                          "CareTeam", "RelatedPerson", "Patient"))
        answered = ctx.one("in-response-to")
        answered = None if answered is None else msgs.parse_reference(
            answered, "in-response-to", ("Communication",))
        topic = msgs.clean_topic(ctx.one("topic"))
        text = msgs.clean_text(ctx.one("text"))
        attachment = ctx.one("attachment")
        if attachment is not None:
            attachment = msgs.clean_attachment(attachment, portal.attachment_types.split(","),
                                               portal.max_attachment_bytes)
        if text is None and attachment is None:
            raise msgs.MessageInputError("text", "A message needs text or an attachment")
        if thread is None and topic is None:
            raise msgs.MessageInputError("topic", "A new thread needs a topic")
        if thread is None and answered is not None:
            raise msgs.MessageRefused("in-response-to", "in-response-to answers a message of "
                                      "an existing thread: give its thread too")
    except msgs.MessageInputError as exc:
        raise _fail(exc) from None
    if thread is not None:
        header = _visible_comm(ctx, thread)
        if msgs.thread_of(header) is not None:
            raise Unprocessable(f"{thread} is a message, not a thread; give the thread's "
                                f"header ({msgs.thread_of(header)})", expression="thread")
        header_topic = (header.get("topic") or {}).get("text")
        if topic is not None and topic != header_topic:
            raise Invalid("topic belongs to a new thread; this thread's topic is "
                          f"{header_topic!r}", expression="topic")
        topic = header_topic
        if answered is not None and msgs.thread_of(_visible_comm(ctx, answered)) != thread:
            raise Unprocessable(f"{answered} is not a message of {thread}",
                                expression="in-response-to")
    # what the reply's checks read: a change to one of them still waiting holds it back
    relied_on = {("Communication", ref.split("/", 1)[1]) for ref in (thread, answered) if ref}
    teams = search_all(ctx, "CareTeam", [("patient", patient)])
    relied_on |= {("CareTeam", team["id"]) for team in teams}
    if recipient not in msgs.care_team_members(teams):
        raise Unprocessable(f"{recipient} is not on your care team; you can write to the "
                            "members of your care team only", expression="recipient")
    now = datetime.now(UTC)
    entries = []
    if thread is None:
        thread = f"urn:uuid:{uuid.uuid4()}"
        header = validate_resource(msgs.build_thread_header(patient, recipient, topic, now),
                                   "Communication")
        service.check_write(create, header)
        entries.append(BundleEntryRequest("POST", "Communication", resource=header,
                                          full_url=thread))
    message = validate_resource(msgs.build_message(
        patient, recipient, thread, now, topic=topic, text=text, attachment=attachment,
        in_response_to=answered), "Communication")
    service.check_write(create, message)
    if entries:  # a new thread: its header and first message land together, or not at all
        entries.append(BundleEntryRequest("POST", "Communication", resource=message))
        result = service.transaction(entries, relied_on=relied_on)[-1]
    else:  # a reply: kept in the outbox (202) when the EHR cannot take it now
        result = service.create_checked(creating, ctx.base, create, message,
                                        relied_on=relied_on)
        if isinstance(result, FhirResponse):
            return result
    return service.write_response(result, req, ctx.base, 201)


def mark_read(ctx: OperationContext) -> FhirResponse:
    service, req = ctx.service, ctx.request
    rid = service.check_id(req.id)
    update = service.decide(FhirRequest("update", "Communication", rid, principal=req.principal))
    for _ in range(3):
        message = _visible_comm(ctx, f"Communication/{rid}")
        subject = (message.get("subject") or {}).get("reference", "")
        patient = f"Patient/{update.patient}" if update and update.patient else subject
        if not msgs.is_addressed_to(message, patient):
            raise Unprocessable(f"Communication/{rid} is not addressed to the patient, so it "
                                "cannot be marked read", expression="Communication.recipient")
        if message.get("received"):
            return FhirResponse(200, message, version_headers(message))
        body = {k: v for k, v in msgs.mark_read(message, datetime.now(UTC)).items()
                if k != "meta"}
        validate_resource(body, "Communication")
        service.check_write(update, body)
        service.clear_to_write([BundleEntryRequest("PUT", "Communication", id=rid, resource=body)])
        try:
            result = service.adapter.update(body, message["meta"]["versionId"])
        except PreconditionFailed:
            continue  # changed meanwhile: look again
        return service.write_response(result, req, ctx.base, 200)
    raise PreconditionFailed(f"Communication/{rid} keeps changing; try again",
                             expression="Communication")


def unread(ctx: OperationContext) -> FhirResponse:
    pid, decision = patient_and_decision(ctx, "Communication")
    patient = f"Patient/{pid}"
    found = search_all(ctx, "Communication", [("recipient", patient)], decision)
    out = validate_resource(msgs.unread_parameters(msgs.unread_summary(found, patient)),
                            "Parameters")
    return FhirResponse(200, out)


SEND = OperationSpec(
    name="send", resource_type="Communication", handler=send, instance=False, type_level=True,
    affects_state=True, title="Send a secure message to the care team",
    description="Stores a patient's message (a Communication partOf the thread header, "
                "inResponseTo the message answered). Without `thread` it starts a new thread "
                "with `topic`. Recipients must be on the patient's care team; attachments must "
                "be of an accepted type and size, and their bytes must match the declared type. "
                "A reply the EHR cannot take now is kept by the gateway: 202 with an "
                "OperationOutcome, and the status URL in Content-Location.",
    needs=(("Communication", "c"), ("CareTeam", "s")),
    parameters=(
        ParamSpec("thread", "Reference", documentation="The thread header; absent: new thread"),
        ParamSpec("topic", "string", documentation="Topic of a new thread"),
        ParamSpec("recipient", "Reference", min=1, documentation="A care team member"),
        ParamSpec("text", "string", documentation="The message"),
        ParamSpec("attachment", "Attachment", documentation="contentType, data, title"),
        ParamSpec("in-response-to", "Reference", documentation="The message answered"),
        ParamSpec("return", "Communication", min=1, use="out"),
    ),
)
MARK_READ = OperationSpec(
    name="mark-read", resource_type="Communication", handler=mark_read, instance=True,
    affects_state=True, title="Mark a message read",
    description="Sets `received` (the read receipt) on a message addressed to the patient; "
                "a message already read is returned unchanged.",
    needs=(("Communication", "r"), ("Communication", "u")),
    parameters=(ParamSpec("return", "Communication", min=1, use="out"),),
)
UNREAD = OperationSpec(
    name="unread", resource_type="Communication", handler=unread, instance=False,
    type_level=True, title="Count unread messages",
    description="`count`: messages to the patient without `received`; one `thread` part "
                "(thread, count, topic) per thread with unread messages.",
    needs=(("Communication", "s"),),
    parameters=(
        ParamSpec("patient", "string", documentation="The patient (implied by a patient token)"),
        ParamSpec("count", "integer", min=1, use="out",
                  documentation="Unread messages; then a `thread` parameter per thread with "
                                "parts thread (Reference), count (integer), topic (string)"),
    ),
)
SPECS = [SEND, MARK_READ, UNREAD]
