"""Learn: plain-language handouts for the patient's health problems, medicines and results.

On the server's `Patient/{id}/$education` (DocumentReferences built from its catalogue, not
stored): the list groups them by what they are about (`DocumentReference.category`, a FHIR
resource type code), and each handout is read here, its text/plain (or text/html, reduced to
its text) attachment turned into headings, paragraphs and lists that the template escapes.
Catalogue ids are readable ("type-2-diabetes"), so the URL carries a key made from the id and
the session instead (`handout_key`): neither the condition nor a key that works in another
session ends up in browser history or logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from flask import abort, current_app, render_template, session

from portal.blueprint import api, bp, language, patient_id, signed_in
from portal.fhir_api import valid_id

RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
#: The groups in the order the page shows them: (category code, catalogue key).
GROUPS = (("Condition", "learn.group.conditions"), ("Medication", "learn.group.medicines"),
          ("MedicationRequest", "learn.group.medicines"),
          ("Observation", "learn.group.results"))
OTHER = "learn.group.other"
_SENTENCE_END = (".", "!", "?", ":", ";", ",")


@dataclass(frozen=True)
class Handout:
    id: str
    title: str

    @property
    def key(self) -> str:
        return handout_key(self.id)


def handout_key(doc_id: str) -> str:
    """The URL key of a handout in this session: an HMAC of its id under the app's secret and
    the session id, so it names no condition and is worthless elsewhere."""
    message = f"{session.get('sid', '')}\0{doc_id}".encode()
    digest = hmac.new(current_app.config["SECRET_KEY"].encode(), message, hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:16]).rstrip(b"=").decode()


def about(doc: dict) -> str:
    """The catalogue key of the group a handout belongs to (by its category)."""
    codes = {c.get("code") for cat in doc.get("category") or [] for c in cat.get("coding") or []
             if c.get("system") == RESOURCE_TYPES}
    return next((key for code, key in GROUPS if code in codes), OTHER)


def title_of(doc: dict) -> str:
    attachment = _attachment(doc)
    return doc.get("description") or attachment.get("title") or doc.get("id", "")


def grouped(docs: list[dict]) -> list[tuple[str, list[Handout]]]:
    """The handouts by group (groups in GROUPS order, then "other"), each in server order."""
    groups: dict[str, list[Handout]] = {}
    for doc in docs:
        if doc.get("resourceType") != "DocumentReference" or not valid_id(doc.get("id", "")):
            continue
        groups.setdefault(about(doc), []).append(Handout(doc["id"], title_of(doc)))
    order = list(dict.fromkeys([key for _, key in GROUPS] + [OTHER]))
    return [(key, groups[key]) for key in order if key in groups]


def _attachment(doc: dict) -> dict:
    return next((c.get("attachment") or {} for c in doc.get("content") or []
                 if (c.get("attachment") or {}).get("data")), {})


class _Text(HTMLParser):
    """The words of an HTML handout, one line per block; list items as `- ` lines. Nothing of
    the markup survives (no tags, attributes, links or scripts)."""

    BLOCKS = frozenset({"p", "div", "br", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6",
                        "section", "article", "table", "tr"})
    SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping = 0
        self.after_heading = False

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCKS:
            if not self.after_heading:
                self.out.append("\n\n" if tag in {"p", "ul", "ol", "h1", "h2", "h3"} else "\n")
        elif tag == "li":
            self.out.append("\n- ")
        self.after_heading = False

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
            self.out.append("\n")
            self.after_heading = True  # its text follows on the next line, as in plain text

    def handle_data(self, data: str) -> None:
        if not self.skipping and data.strip():
            self.out.append(re.sub(r"\s+", " ", data))


def text_of(doc: dict) -> tuple[str, str]:
    """(plain text, language) of a handout's attachment; ('', '') when it has none readable."""
    attachment = _attachment(doc)
    try:
        raw = base64.b64decode(attachment.get("data") or "", validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return "", ""
    kind = (attachment.get("contentType") or "").split(";", 1)[0].strip().lower()
    if kind == "text/html":
        parser = _Text()
        parser.feed(text)
        parser.close()
        text = "".join(parser.out)
    elif kind not in ("text/plain", ""):
        return "", ""
    return text, attachment.get("language") or ""


def blocks(text: str, title: str = "") -> list[tuple[str, object]]:
    """A handout's text as ("h", heading), ("p", paragraph) and ("ul", [items]) blocks.

    A blank line starts a block; a `- ` line is a list item; a short line with no sentence
    ending followed by more lines is a heading; a first line that repeats the title is
    dropped."""
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    if lines and title and lines[0] == title.strip():
        lines.pop(0)
    out: list[tuple[str, object]] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append(("p", " ".join(para)))
            para.clear()

    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if not line:
            flush()
        elif line.startswith("- "):
            flush()
            if out and out[-1][0] == "ul" and lines[i - 1]:
                out[-1][1].append(line[2:].strip())
            else:
                out.append(("ul", [line[2:].strip()]))
        elif (not para and following and len(line) <= 80
              and not line.endswith(_SENTENCE_END)):
            out.append(("h", line))
        else:
            para.append(line)
    flush()
    return out


def _handouts() -> list[dict]:
    return api().bundle_entries(f"Patient/{patient_id()}/$education")


@bp.get("/learn")
@signed_in
def learn():
    return render_template("learn.html", groups=grouped(_handouts()))


@bp.get("/learn/<key>")
@signed_in
def handout(key: str):
    """One handout of the patient's own list, by its key in this session (`handout_key`);
    anything else is not found."""
    if len(key) > 32:
        abort(404)
    doc = next((d for d in _handouts() if d.get("resourceType") == "DocumentReference"
                and valid_id(d.get("id")) and hmac.compare_digest(handout_key(d["id"]), key)),
               None)
    if doc is None:
        abort(404)
    title = title_of(doc)
    text, lang = text_of(doc)
    return render_template("handout.html", title=title, blocks=blocks(text, title),
                           doc_lang=lang or language(), group=about(doc),
                           other_language=bool(lang) and lang.split("-")[0] != language())
