"""Secure messages between a patient and their care team as FHIR R4 Communications (pure).

Follows the thread pattern of the seed data: a thread is a header Communication carrying the
`topic`; each message is `partOf` the header and `inResponseTo` the message it answers; a
message is read when it carries `received` (the read receipt). This module checks what a
patient sends (recipient on their care team, text, attachments whose bytes match their
declared type) and builds the resources; the gateway fetches and stores.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from datetime import datetime

from mappings.references import reference_target

__all__ = [
    "MAX_TEXT",
    "MAX_TOPIC",
    "AttachmentTooLarge",
    "MessageInputError",
    "MessageRefused",
    "build_message",
    "build_thread_header",
    "care_team_members",
    "clean_attachment",
    "clean_text",
    "clean_topic",
    "content_matches",
    "is_addressed_to",
    "mark_read",
    "parse_reference",
    "thread_of",
    "unread_parameters",
    "unread_summary",
]

MAX_TEXT = 10_000
MAX_TOPIC = 200
_PNG = b"\x89PNG\r\n\x1a\n"
_INACTIVE_TEAMS = frozenset({"inactive", "entered-in-error"})


class MessageInputError(ValueError):
    """The request is malformed (HTTP 400); `expression` names the parameter."""

    def __init__(self, expression: str, message: str) -> None:
        super().__init__(message)
        self.expression = expression
        self.message = message


class MessageRefused(MessageInputError):
    """Well-formed, but a messaging rule refuses it (HTTP 422)."""


class AttachmentTooLarge(MessageInputError):
    """The attachment is larger than the clinic allows (HTTP 413)."""


def parse_reference(value: object, name: str, types: tuple[str, ...]) -> str:
    """A Reference parameter (valueReference, or a string) as `Type/id` of one of `types`."""
    text = value.get("reference") if isinstance(value, dict) else value
    target = reference_target(text) if isinstance(text, str) else None
    if target is None or target[0] not in types:
        raise MessageInputError(name, f"{name} must be a reference to a "
                                      f"{' or '.join(types)} (like {types[0]}/123)")
    return f"{target[0]}/{target[1]}"


def clean_text(value: object, name: str = "text", limit: int = MAX_TEXT) -> str | None:
    """Optional free text: a non-blank string of at most `limit` characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MessageInputError(name, f"{name} must be text (valueString)")
    text = value.strip()
    if not text:
        raise MessageInputError(name, f"{name} is empty")
    if len(text) > limit:
        raise MessageInputError(name, f"{name} is longer than {limit} characters")
    return text


def clean_topic(value: object) -> str | None:
    return clean_text(value, "topic", MAX_TOPIC)


def care_team_members(care_teams: Iterable[dict]) -> set[str]:
    """`Type/id` of every member of the patient's care teams that are not inactive."""
    members: set[str] = set()
    for team in care_teams:
        if team.get("status") in _INACTIVE_TEAMS:
            continue
        for participant in team.get("participant") or []:
            target = reference_target((participant.get("member") or {}).get("reference", ""))
            if target is not None:
                members.add(f"{target[0]}/{target[1]}")
    return members


def content_matches(content_type: str, data: bytes) -> bool:
    """Do the bytes look like their declared type (magic bytes; UTF-8 for text/plain)?"""
    if content_type == "application/pdf":
        return data.startswith(b"%PDF")
    if content_type == "image/png":
        return data.startswith(_PNG)
    if content_type == "image/jpeg":
        return data.startswith(b"\xff\xd8\xff")
    if content_type == "text/plain":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True
    return False  # a type we cannot check is not let through


def clean_attachment(value: object, allowed_types: Iterable[str], max_bytes: int) -> dict:
    """Check an Attachment parameter and return the Attachment to store (with size and the
    SHA-1 hash FHIR defines). Refuses unknown types, oversize data and bytes that do not match
    the declared type."""
    name = "attachment"
    if not isinstance(value, dict):
        raise MessageInputError(name, "attachment must be an Attachment (valueAttachment)")
    unknown = set(value) - {"contentType", "data", "title", "size", "hash", "language"}
    if unknown:
        raise MessageInputError(name, "attachment may carry contentType, data and title only "
                                      f"(not {', '.join(sorted(unknown))})")
    declared = value.get("contentType")
    if not isinstance(declared, str) or not declared.strip():
        raise MessageInputError(name, "attachment needs a contentType")
    content_type = declared.split(";", 1)[0].strip().lower()
    allowed = sorted(t.strip().lower() for t in allowed_types if t.strip())
    if content_type not in allowed:
        raise MessageRefused(name, f"Attachments of type {content_type} are not accepted; "
                                   f"send one of {', '.join(allowed)}")
    data = value.get("data")
    if not isinstance(data, str) or not data:
        raise MessageInputError(name, "attachment needs its content in data (base64)")
    if len(data) // 4 * 3 > max_bytes + 3:  # certainly too large: do not decode it
        raise AttachmentTooLarge(name, f"The attachment is larger than {max_bytes} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise MessageInputError(name, "attachment.data is not valid base64") from None
    if len(raw) > max_bytes:
        raise AttachmentTooLarge(name, f"The attachment is larger than {max_bytes} bytes")
    if not raw:
        raise MessageInputError(name, "The attachment is empty")
    if not content_matches(content_type, raw):
        kind = "UTF-8 text" if content_type == "text/plain" else f"a {content_type} file"
        raise MessageRefused(name, f"The attachment's content is not {kind} as declared")
    digest = base64.b64encode(hashlib.sha1(raw).digest()).decode()  # noqa: S324 - FHIR's hash
    if value.get("size") is not None and value.get("size") != len(raw):
        raise MessageRefused(name, f"attachment.size says {value.get('size')} but the data is "
                                   f"{len(raw)} bytes")
    if value.get("hash") is not None and value.get("hash") != digest:
        raise MessageRefused(name, "attachment.hash does not match the data")
    out = {"contentType": declared.strip(), "data": base64.b64encode(raw).decode(),
           "size": len(raw), "hash": digest}
    title = value.get("title")
    if title is not None:
        out["title"] = clean_text(title, name, MAX_TOPIC)
    if isinstance(value.get("language"), str):
        out["language"] = value["language"]
    return out


def _when(now: datetime) -> str:
    return now.isoformat(timespec="seconds")


def build_thread_header(patient: str, recipient: str, topic: str, now: datetime) -> dict:
    """The Communication that opens a thread: its topic, who started it and when."""
    return {
        "resourceType": "Communication", "status": "completed",
        "subject": {"reference": patient}, "topic": {"text": topic}, "sent": _when(now),
        "recipient": [{"reference": recipient}], "sender": {"reference": patient},
    }


def build_message(patient: str, recipient: str, thread: str, now: datetime, *,
                  topic: str | None = None, text: str | None = None,
                  attachment: dict | None = None, in_response_to: str | None = None) -> dict:
    """A patient's message in a thread (`thread` is the header's reference)."""
    payload = ([{"contentString": text}] if text else []) + \
        ([{"contentAttachment": attachment}] if attachment else [])
    if not payload:
        raise MessageInputError("text", "A message needs text or an attachment")
    msg: dict = {"resourceType": "Communication", "partOf": [{"reference": thread}]}
    if in_response_to:
        msg["inResponseTo"] = [{"reference": in_response_to}]
    msg.update({"status": "completed", "subject": {"reference": patient}})
    if topic:
        msg["topic"] = {"text": topic}
    msg.update({"sent": _when(now), "recipient": [{"reference": recipient}],
                "sender": {"reference": patient}, "payload": payload})
    return msg


def thread_of(message: dict) -> str | None:
    """`Communication/id` of the thread header a message is part of (None for a header)."""
    for part in message.get("partOf") or []:
        target = reference_target(part.get("reference", ""))
        if target and target[0] == "Communication":
            return f"{target[0]}/{target[1]}"
    return None


def is_addressed_to(message: dict, who: str) -> bool:
    """Is `who` (`Type/id`) among the message's recipients?"""
    for recipient in message.get("recipient") or []:
        target = reference_target(recipient.get("reference", ""))
        if target and f"{target[0]}/{target[1]}" == who:
            return True
    return False


def mark_read(message: dict, now: datetime) -> dict:
    """The message with its read receipt (`received`); unchanged when already read."""
    if message.get("received"):
        return message
    return dict(message, received=_when(now))


def unread_summary(messages: Iterable[dict], patient: str) -> dict[str, tuple[int, str | None]]:
    """Per thread (`Communication/id`): unread messages to the patient and the thread topic."""
    threads: dict[str, tuple[int, str | None]] = {}
    for msg in messages:
        thread = thread_of(msg)
        if thread is None or msg.get("received") or not is_addressed_to(msg, patient):
            continue
        count, topic = threads.get(thread, (0, None))
        threads[thread] = (count + 1, topic or (msg.get("topic") or {}).get("text"))
    return threads


def unread_parameters(threads: dict[str, tuple[int, str | None]]) -> dict:
    """The `$unread` answer: the total `count`, then one `thread` part per thread with any."""
    params: list[dict] = [{"name": "count", "valueInteger": sum(c for c, _ in threads.values())}]
    for ref in sorted(threads):
        count, topic = threads[ref]
        parts: list[dict] = [{"name": "thread", "valueReference": {"reference": ref}},
                             {"name": "count", "valueInteger": count}]
        if topic:
            parts.append({"name": "topic", "valueString": topic})
        params.append({"name": "thread", "part": parts})
    return {"resourceType": "Parameters", "parameter": params}
