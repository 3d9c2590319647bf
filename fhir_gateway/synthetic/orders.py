"""Prescriptions of one patient (MedicationRequest) and a completed refill request (Task).

The story per condition: a long-standing medicine has last year's order `completed` and this
year's renewal `active`; a medicine started at the first visit of the year has that original
order `completed` and a renewal `active`; a hypertensive patient's amlodipine was `stopped`
(ankle swelling) and replaced by lisinopril at the second visit. Some patients get a short
course of oxycodone (controlled: no refills, acute course). The first request of a patient, and
every controlled one, names its drug through medicationReference to the formulary Medication;
the others carry a medicationCodeableConcept.
"""

from __future__ import annotations

import datetime as dt

from mappings import terminology as term

from ._common import at, concept, iso, ref, ucum
from ._context import MedPlan, PatientContext

YEAR = dt.timedelta(days=365)


def _prescriber(ctx: PatientContext, specialty: str | None):
    return next((s for s in ctx.team if specialty and s.specialty == specialty), ctx.pcp)


def plan(ctx: PatientContext) -> None:
    rng = ctx.rng
    visits = ctx.in_person()
    switch, latest = ctx.visits[1], visits[-1]
    meds: list[MedPlan] = []
    prior_shown = False
    for p in ctx.problems:
        if not p.code.chronic or not p.code.drugs or p.code.key == "osteoarthritis-knee":
            continue
        doctor = _prescriber(ctx, p.code.specialty)
        if p.code.key == "hypertension":
            old = switch.start - dt.timedelta(days=rng.randint(200, 500))
            meds.append(MedPlan(term.DRUGS["amlodipine-5"], "stopped", old,
                                (old + YEAR).date(), 5, doctor, p,
                                status_reason="Ankle swelling; changed to lisinopril.",
                                ended=switch.start.date()))
            meds.append(MedPlan(term.DRUGS["lisinopril-10"], "active",
                                switch.start + dt.timedelta(minutes=20),
                                (switch.start + YEAR).date(), 0, switch.staff, p, switch))
            continue
        drug = term.DRUGS[p.code.drugs[0]]
        renewal = latest.start + dt.timedelta(minutes=20)
        if p.new:
            first = ctx.visits[0]
            meds.append(MedPlan(drug, "completed", first.start + dt.timedelta(minutes=20),
                                renewal.date(), 3, doctor, p, first, ended=renewal.date()))
        elif not prior_shown:
            prior = at((renewal - YEAR).date(), 10)
            meds.append(MedPlan(drug, "completed", prior, renewal.date(), 11, doctor, p,
                                ended=renewal.date()))
        prior_shown = True
        meds.append(MedPlan(drug, "active", renewal, (renewal + YEAR).date(), 0, doctor, p,
                            latest if latest.staff is doctor else None))
    pain = ctx.problem("osteoarthritis-knee")
    if pain:
        start = latest.start + dt.timedelta(minutes=25)
        meds.append(MedPlan(term.DRUGS["oxycodone-5"], "active", start,
                            (start + dt.timedelta(days=30)).date(), 0, ctx.pcp, pain,
                            latest if latest.staff is ctx.pcp else None, acute=True))
    _refills(ctx, meds)
    for k, m in enumerate(meds, start=1):
        m.id = f"mr-{ctx.n}-{k:02d}"
        m.by_reference = k == 1 or m.drug.controlled
    ctx.meds = meds


def _refills(ctx: PatientContext, meds: list[MedPlan]) -> None:
    """The first active order has refills left; later ones may have none (and for odd-numbered
    patients the last one has none); controlled ones never have any."""
    rng = ctx.rng
    active = [m for m in meds if m.status == "active" and not m.drug.controlled]
    for i, m in enumerate(active):
        m.repeats = rng.choice((1, 2, 3, 5, 11)) if i == 0 else rng.choice((0, 1, 2, 3, 5))
    if len(active) > 1 and ctx.index % 2 == 1:
        active[-1].repeats = 0


def _dosage(m: MedPlan) -> dict:
    out: dict = {"sequence": 1, "text": m.drug.sig}
    if m.drug.per_day:
        out["timing"] = {"repeat": {"frequency": int(m.drug.per_day), "period": 1,
                                    "periodUnit": "d"}}
    else:
        out["asNeededBoolean"] = True
    if m.drug.unit == "{tbl}":
        out["route"] = concept(term.ROUTE_ORAL)
    return out


def _dispense(m: MedPlan) -> dict:
    if m.drug.controlled:
        amount, days = 20, 5
    elif m.drug.per_day:
        amount, days = int(m.drug.per_day * 30), 30
    else:
        amount, days = 1, 30
    unit_display = "tablet" if m.drug.unit == "{tbl}" else "inhaler"
    return {
        "validityPeriod": {"start": m.authored.date().isoformat(),
                           "end": m.validity_end.isoformat()},
        "numberOfRepeatsAllowed": m.repeats,
        "quantity": ucum(amount, m.drug.unit, unit_display),
        "expectedSupplyDuration": ucum(days, "d", "days"),
    }


def medication_request(ctx: PatientContext, m: MedPlan) -> dict:
    out: dict = {"resourceType": "MedicationRequest", "id": m.id, "status": m.status}
    if m.status_reason:
        out["statusReason"] = {"text": m.status_reason}
    out["intent"] = "order"
    if m.by_reference:
        out["medicationReference"] = ref("Medication", f"med-{m.drug.rxnorm}", m.drug.text)
    else:
        out["medicationCodeableConcept"] = {
            "coding": [{"system": term.RXNORM, "code": m.drug.rxnorm, "display": m.drug.display}],
            "text": m.drug.text}
    out["subject"] = ctx.patient_ref()
    if m.visit:
        out["encounter"] = ref("Encounter", f"enc-{ctx.n}-{m.visit.tag}")
    out["authoredOn"] = iso(m.authored)
    out["requester"] = ref("Practitioner", m.prescriber.id, m.prescriber.display)
    if m.problem:
        out["reasonReference"] = [ref("Condition", m.problem.id, m.problem.code.text)]
    out["courseOfTherapyType"] = concept(term.COURSE_ACUTE if m.acute else term.COURSE_CONTINUOUS)
    if m.drug.controlled:
        out["note"] = [{"text": f"Schedule {m.drug.dea_schedule[1:]} controlled substance: no "
                                "refills; a new prescription is needed."}]
    out["dosageInstruction"] = [_dosage(m)]
    out["dispenseRequest"] = _dispense(m)
    return out


def medication_requests(ctx: PatientContext) -> list[dict]:
    return [medication_request(ctx, m) for m in ctx.meds]


def tasks(ctx: PatientContext) -> list[dict]:
    """A completed refill request, sent by the patient, for their first active medicine with
    refills left."""
    target = next((m for m in ctx.meds if m.status == "active" and m.repeats > 0
                   and not m.drug.controlled), None)
    if target is None:
        return []
    asked_on = target.authored.date() + (ctx.today - target.authored.date()) / 2
    asked = at(asked_on, 20, 15)
    done = at(asked_on + dt.timedelta(days=1), 9, 40)
    return [{
        "resourceType": "Task", "id": f"task-{ctx.n}-01",
        "status": "completed",
        "businessStatus": {"text": "Refill sent to pharmacy"},
        "intent": "order",
        "priority": "routine",
        "code": concept(term.TASK_FULFILL),
        "description": f"Refill request: {target.drug.text}",
        "focus": ref("MedicationRequest", target.id, target.drug.text),
        "for": ctx.patient_ref(),
        "executionPeriod": {"start": iso(asked), "end": iso(done)},
        "authoredOn": iso(asked),
        "lastModified": iso(done),
        "requester": ctx.patient_ref(),
        "owner": ref("Practitioner", target.prescriber.id, target.prescriber.display),
    }]
