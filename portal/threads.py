"""Secure messages as the pages show them, and the checks a message passes before it is sent.

Pure functions on FHIR R4 JSON (no I/O, no Flask). A thread is a header Communication with the
`topic`; its messages are `partOf` it, answer a message by `inResponseTo`, and are read when
they carry `received`. The checks here are the server's own rules for `Communication/$send`
(text and topic lengths, recipients on the care team, attachment types, size and content), so
bad input never reaches the server.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime

from portal.records import local_time

MAX_TEXT = 10_000
MAX_TOPIC = 200
_INACTIVE_TEAMS = frozenset({"inactive", "entered-in-error"})
#: The file name ending a download gets for each attachment type the portal serves.
EXTENSIONS = {"application/pdf": ".pdf", "image/png": ".png", "image/jpeg": ".jpg",
              "text/plain": ".txt"}
#: What each type is called in the pages' words.
TYPE_NAMES = {"application/pdf": "PDF", "image/png": "PNG", "image/jpeg": "JPEG",
              "text/plain": "TXT"}
_PNG = b"\x89PNG\r\n\x1a\n"
_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


class InputError(ValueError):
    """Input the server would refuse: `field` is the form field, `key` and `values` the
    catalogue message."""

    def __init__(self, field: str, key: str, **values: object) -> None:
        super().__init__(key)
        self.field, self.key, self.values = field, key, values


def ref(reference: dict | None) -> str:
    """`Type/id` of a Reference ('' when it has none)."""
    text = (reference or {}).get("reference") or ""
    parts = text.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else ""


def thread_of(message: dict) -> str:
    """The id of the thread header a message is part of ('' for a header)."""
    for part in message.get("partOf") or []:
        kind, _, rid = ref(part).partition("/")
        if kind == "Communication" and rid:
            return rid
    return ""


def when(value: str | None) -> datetime:
    """A FHIR dateTime (or date) as an aware datetime, for ordering; the distant past if none."""
    if not value:
        return _EPOCH
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _EPOCH
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def shown_time(value: str | None) -> str:
    """When a message was sent, in the portal's time zone (`records.local_time`)."""
    return local_time(value)


def addressed_to(message: dict, who: str) -> bool:
    return any(ref(r) == who for r in message.get("recipient") or [])


def is_unread(message: dict, patient: str) -> bool:
    """A message to the patient without its read receipt."""
    return bool(thread_of(message)) and not message.get("received") \
        and addressed_to(message, patient)


def care_team(care_teams: list[dict]) -> dict[str, str]:
    """Who the patient may write to: `Type/id` -> name, members of the active care teams."""
    members: dict[str, str] = {}
    for team in care_teams:
        if team.get("resourceType") != "CareTeam" or team.get("status") in _INACTIVE_TEAMS:
            continue
        for participant in team.get("participant") or []:
            member = participant.get("member") or {}
            who = ref(member)
            if who and who not in members:
                members[who] = member.get("display") or ""
    return members


def other_party(header: dict, patient: str) -> str:
    """`Type/id` of whom the patient talks with in a thread: the header's sender when someone
    else started it, else its first recipient."""
    sender = ref(header.get("sender"))
    if sender and sender != patient:
        return sender
    return next((ref(r) for r in header.get("recipient") or [] if ref(r) != patient), "")


def names_of(communications: list[dict], team: dict[str, str]) -> dict[str, str]:
    """`Type/id` -> name, from the care team, else from the references' own display."""
    names: dict[str, str] = {}
    for comm in communications:
        for reference in [comm.get("sender"), *(comm.get("recipient") or [])]:
            who = ref(reference)
            if who and (reference or {}).get("display") and who not in names:
                names[who] = reference["display"]
    names.update({who: name for who, name in team.items() if name})
    return names


@dataclass(frozen=True)
class Thread:
    id: str
    topic: str
    with_: str  # `Type/id`
    last: str  # dateTime of the newest message
    unread: int
    count: int


def threads(communications: list[dict], patient: str) -> list[Thread]:
    """The patient's threads, newest message first."""
    comms = [c for c in communications if c.get("resourceType") == "Communication"]
    headers = {c["id"]: c for c in comms if c.get("id") and not thread_of(c)}
    messages: dict[str, list[dict]] = {}
    for comm in comms:
        if thread_of(comm):
            messages.setdefault(thread_of(comm), []).append(comm)
    out = []
    for tid, header in headers.items():
        mine = messages.get(tid, [])
        last = max([header, *mine], key=lambda c: when(c.get("sent"))).get("sent") or ""
        out.append(Thread(tid, (header.get("topic") or {}).get("text") or "",
                          other_party(header, patient), last,
                          sum(is_unread(m, patient) for m in mine), len(mine)))
    out.sort(key=lambda th: (when(th.last), th.id), reverse=True)
    return out


@dataclass(frozen=True)
class Attachment:
    index: int  # position in the message's payload
    title: str
    content_type: str
    size: int | None


@dataclass(frozen=True)
class Message:
    id: str
    sender: str  # `Type/id`
    sent: str
    texts: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    unread: bool = False


def messages(communications: list[dict], thread_id: str, patient: str) -> list[Message]:
    """The messages of one thread, oldest first (`unread`: not yet read by the patient)."""
    out = []
    for comm in communications:
        if comm.get("resourceType") != "Communication" or thread_of(comm) != thread_id:
            continue
        texts, files = [], []
        for n, part in enumerate(comm.get("payload") or []):
            if "contentString" in part:
                texts.append(part["contentString"])
            elif "contentAttachment" in part:
                a = part["contentAttachment"]
                files.append(Attachment(n, a.get("title") or "", a.get("contentType") or "",
                                        a.get("size")))
        out.append(Message(comm.get("id", ""), ref(comm.get("sender")), comm.get("sent") or "",
                           texts, files, is_unread(comm, patient)))
    out.sort(key=lambda m: (when(m.sent), m.id))
    return out


def answered(thread: list[Message], patient: str) -> str:
    """The message a reply answers: the newest one someone else sent ('' when none)."""
    return next((m.id for m in reversed(thread) if m.sender != patient), "")


# --- checks before sending --------------------------------------------------------------------

def clean_text(raw: str, field_name: str = "text", limit: int = MAX_TEXT) -> str:
    """Required text, trimmed, browsers' CRLF line ends made LF, at most `limit` characters."""
    text = raw.replace("\r\n", "\n").strip()
    if not text:
        raise InputError(field_name, f"msg.err_{field_name}_empty")
    if len(text) > limit:
        raise InputError(field_name, f"msg.err_{field_name}_long", length=len(text), max=limit)
    return text


def clean_recipient(raw: str, team: dict[str, str]) -> str:
    if not raw:
        raise InputError("recipient", "msg.err_recipient_empty")
    if raw not in team:
        raise InputError("recipient", "msg.err_recipient_unknown")
    return raw


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
    return False


def type_names(allowed: tuple[str, ...]) -> str:
    return ", ".join(TYPE_NAMES.get(t, t) for t in allowed)


def size_words(size: int) -> str:
    """A byte count in plain words: `5 MB`, `120 KB`, `80 bytes`."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.3g} MB"
    if size >= 1024:
        return f"{size / 1024:.3g} KB"
    return f"{size} bytes"


def clean_upload(filename: str, content_type: str, data: bytes, allowed: tuple[str, ...],
                 max_bytes: int) -> dict:
    """The Attachment to send for an uploaded file (contentType, data, title), or InputError."""
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if declared not in allowed:
        raise InputError("attachment", "msg.err_file_type", types=type_names(allowed))
    if len(data) > max_bytes:
        raise InputError("attachment", "msg.err_file_big", max=size_words(max_bytes))
    if not data:
        raise InputError("attachment", "msg.err_file_empty")
    if not content_matches(declared, data):
        raise InputError("attachment", "msg.err_file_content",
                         type=TYPE_NAMES.get(declared, declared))
    title = safe_filename(filename, declared)
    return {"contentType": declared, "data": base64.b64encode(data).decode("ascii"),
            "title": title}


def safe_filename(title: str, content_type: str) -> str:
    """A download name with no path, no control or quote characters, at most 100 characters,
    ending in the extension of its type."""
    name = unicodedata.normalize("NFKC", title or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r'[\x00-\x1f\x7f"<>:|?*;]+', "", name).strip(" .")
    ext = EXTENSIONS.get(content_type, "")
    stem = name[: -len(ext)] if ext and name.lower().endswith(ext) else name
    stem = stem[: 100 - len(ext)].strip(" .") or "attachment"
    return stem + ext


def download(attachment: dict, allowed: tuple[str, ...]) -> tuple[bytes, str, str] | None:
    """(bytes, type to serve, file name) of a stored attachment; None when it carries no data.
    A declared type the portal does not serve is sent as application/octet-stream."""
    data = attachment.get("data")
    if not isinstance(data, str) or not data:
        return None
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    declared = (attachment.get("contentType") or "").split(";", 1)[0].strip().lower()
    served = declared if declared in allowed else "application/octet-stream"
    return raw, served, safe_filename(attachment.get("title") or "", served)
