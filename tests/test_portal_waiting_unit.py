"""Home's "Waiting for the clinic" lines from the gateway's outbox Tasks (`portal.waiting`):
which entries show, in what order, named how, and with which of the EHR's words."""

from __future__ import annotations

import datetime as dt

from portal import waiting
from portal.messages import EN, translate
from portal.records import local_time

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def task(status: str, code: str, authored: str, modified: str | None = None,
         patient: str = "pat-0001", **extra) -> dict:
    return {"resourceType": "Task", "id": f"t-{authored}", "status": status, "intent": "order",
            "code": {"text": code}, "for": {"reference": f"Patient/{patient}"},
            "authoredOn": authored, "lastModified": modified or authored, **extra}


def refusal(words: str, marked: bool = True) -> dict:
    """A failed entry's outcome as the gateway keeps it: its own sentence, and the EHR's own
    words in `details.text` when the EHR refused (marked `ehr-refused`)."""
    details = {"coding": [{"system": "urn:fhir-gateway:issue", "code": "ehr-refused"}],
               "text": words} if marked else {"text": words}
    return {"resourceType": "OperationOutcome", "id": "outcome",
            "issue": [{"severity": "error", "code": "invalid", "details": details,
                       "diagnostics": f"The EHR refused the create of a Task (400): {words}"}]}


def test_waiting_entries_oldest_first_then_recent_unsent_ones_newest_first():
    tasks = [
        task("requested", "create Communication", "2026-12-03T10:00:00.000Z"),
        task("completed", "create Task", "2026-12-03T09:00:00.000Z"),  # stored: shown elsewhere
        task("in-progress", "create Task", "2026-12-03T08:00:00.000Z"),
        task("requested", "create Task", "2026-12-03T07:00:00.000Z", patient="pat-0002"),
        task("cancelled", "create Communication", "2026-12-02T09:00:00.000Z"),
        task("cancelled", "create Communication", "2026-10-02T09:00:00.000Z"),  # too old
        task("failed", "create Observation", "2026-11-01T08:00:00.000Z",
             "2026-11-01T08:00:01.000Z", contained=[refusal("too old to show")]),
        task("failed", "update Patient/pat-0001", "2026-12-01T08:00:00.000Z",
             contained=[refusal("Patient.birthDate is in the future")]),
        task("failed", "create Communication", "2026-12-02T08:00:00.000Z",
             statusReason={"text": "Gave up after 50 attempts: the EHR timed out"}),
        # the gateway's own refusal during a replay is not the EHR's: not quoted
        task("failed", "create Task", "2026-12-01T07:00:00.000Z",
             contained=[refusal("If-None-Exist has no search criteria", marked=False)]),
    ]
    lines = waiting.lines(tasks, "pat-0001", NOW)
    assert [(x.key, x.what, x.when) for x in lines] == [
        ("waiting.line_waiting", "waiting.refill", local_time("2026-12-03T08:00:00.000Z")),
        ("waiting.line_waiting", "waiting.message", local_time("2026-12-03T10:00:00.000Z")),
        ("waiting.line_dropped", "waiting.message", local_time("2026-12-02T09:00:00.000Z")),
        ("waiting.line_refused_plain", "waiting.message",
         local_time("2026-12-02T08:00:00.000Z")),
        ("waiting.line_refused", "waiting.change", local_time("2026-12-01T08:00:00.000Z")),
        ("waiting.line_refused_plain", "waiting.refill",
         local_time("2026-12-01T07:00:00.000Z")),
    ]
    # the EHR's own words only: the gateway's notes (attempts, its own sentence) are not
    assert [x.reason for x in lines[2:]] == ["", "", "Patient.birthDate is in the future", ""]
    # another patient's entry is never shown, whatever the server listed
    assert [x.what for x in waiting.lines(tasks, "pat-0002", NOW)] == ["waiting.refill"]


def test_a_refusal_without_words_and_a_long_one():
    plain = task("failed", "create Task", "2026-12-03T08:00:00.000Z")
    long = task("failed", "create Task", "2026-12-03T09:00:00.000Z",
                contained=[refusal("word\n" * 100)])
    lines = waiting.lines([plain, long], "pat-0001", NOW)
    assert [x.key for x in lines] == ["waiting.line_refused", "waiting.line_refused_plain"]
    assert len(lines[0].reason) == waiting.REASON_CHARS and lines[0].reason.endswith("\u2026")
    assert "\n" not in lines[0].reason and lines[1].reason == ""


def test_each_line_reads_in_both_languages():
    lines = waiting.lines([task("requested", "create Observation", "2026-12-03T08:00:00.000Z"),
                           task("failed", "create Task", "2026-12-03T09:00:00.000Z",
                                contained=[refusal("no such order")])], "pat-0001", NOW)
    for lang in ("en", "es"):
        shown = [translate(lang, x.key, what=translate(lang, x.what), when=x.when)
                 for x in lines]
        assert all("{" not in s and x.when in s for s, x in zip(shown, lines, strict=True)), shown
    assert lines[1].reason == "no such order"
    first = translate("en", lines[0].key, what=EN[lines[0].what], when=lines[0].when)
    assert first == (f"Your health reading from {lines[0].when} is waiting to be sent to the "
                     "clinic. We will send it as soon as their system answers.")


def test_entries_made_in_the_same_moment_keep_one_order():
    same = "2026-12-03T08:00:00.000Z"
    a = task("failed", "create Task", same, "2026-12-03T08:00:01.000Z")
    b = task("cancelled", "create Communication", same, "2026-12-03T08:00:02.000Z")
    assert [x.key for x in waiting.lines([a, b], "pat-0001", NOW)] == \
        [x.key for x in waiting.lines([b, a], "pat-0001", NOW)] == \
        ["waiting.line_dropped", "waiting.line_refused_plain"]

