"""A secure-message thread between a patient and their primary care practitioner.

The thread is a header Communication (the topic, who started it, when) and 2-4 messages, each
`partOf` the header and `inResponseTo` the message it answers. Messages that were read carry
`received`; the newest one, always from the practitioner, is still unread (no `received`).
"""

from __future__ import annotations

import datetime as dt

from ._common import at, iso, ref
from ._context import PatientContext


def _script(ctx: PatientContext, length: int) -> tuple[str, list[tuple[bool, str]]]:
    """(topic, [(sent by the patient?, text)]) for a thread of `length` messages; the last
    message is always the practitioner's."""
    doctor = ctx.pcp
    if length == 3:
        last = ctx.in_person()[-1]
        key = "hba1c" if "hba1c" in last.results else "ldl"
        label, unit = ("HbA1c", "%") if key == "hba1c" else ("LDL cholesterol", "mg/dL")
        return "Your recent lab results", [
            (False, f"Hi {ctx.given}, your lab results from {last.start.date().isoformat()} are "
                    f"in the portal. Your {label} was {last.results[key]} {unit}; the details "
                    "are in the report."),
            (True, "Thank you for the update! Do I need to change anything?"),
            (False, "No changes for now. Keep taking your medicines as prescribed and we will "
                    "recheck at your next visit."),
        ]
    if length == 4:
        med = next((m.drug.text for m in ctx.meds
                    if m.status == "active" and not m.drug.controlled), "my new medicine")
        return f"Question about {med}", [
            (True, f"Hello Dr. {doctor.family}, since starting {med} I sometimes feel a little "
                   "dizzy when I stand up quickly. Is that something to worry about?"),
            (False, f"Hi {ctx.given}, thanks for letting me know. Mild dizziness on standing can "
                    "happen. Please stand up slowly and drink enough water. How often does it "
                    "happen?"),
            (True, "Two or three times a week, usually in the morning."),
            (False, "Thanks. Please note your symptoms for two weeks and bring the notes to your "
                    "next visit. Call us right away if you faint or have chest pain."),
        ]
    return "Preparing for my next visit", [
        (True, "Hi, do I need to fast before my next appointment?"),
        (False, f"Hi {ctx.given}, yes please: no food for 8 hours before the visit so we can "
                "draw fasting labs. Water and your usual medicines are fine."),
    ]


def thread(ctx: PatientContext) -> list[dict]:
    rng = ctx.rng
    topic, lines = _script(ctx, rng.choice((2, 3, 4)))
    patient = ctx.patient_ref()
    doctor = ref("Practitioner", ctx.pcp.id, ctx.pcp.display)
    header_id = f"comm-{ctx.n}-01"
    sent = at(ctx.today - dt.timedelta(days=rng.randint(4, 20)), rng.randint(8, 11),
              rng.choice((0, 10, 25, 40, 55)))
    first_from_patient = lines[0][0]
    out = [{
        "resourceType": "Communication", "id": header_id, "status": "completed",
        "subject": patient,
        "topic": {"text": topic},
        "sent": iso(sent),
        "recipient": [doctor if first_from_patient else patient],
        "sender": patient if first_from_patient else doctor,
    }]
    previous = None
    for i, (from_patient, text) in enumerate(lines, start=1):
        msg = {"resourceType": "Communication", "id": f"{header_id}-{i:02d}",
               "partOf": [ref("Communication", header_id)]}
        if previous:
            msg["inResponseTo"] = [ref("Communication", previous)]
        msg.update({"status": "completed", "subject": patient, "topic": {"text": topic},
                    "sent": iso(sent)})
        if i < len(lines):
            msg["received"] = iso(sent + dt.timedelta(minutes=rng.randint(5, 240)))
        msg.update({"recipient": [doctor if from_patient else patient],
                    "sender": patient if from_patient else doctor,
                    "payload": [{"contentString": text}]})
        out.append(msg)
        previous = msg["id"]
        sent += dt.timedelta(hours=rng.randint(3, 8), minutes=rng.randint(0, 59))
        if sent.hour >= 20 or sent.hour < 7:  # replies come the next morning
            morning = sent.date() + dt.timedelta(days=1 if sent.hour >= 20 else 0)
            sent = at(morning, rng.randint(7, 9), rng.randint(0, 59))
    return out
