"""Visits of one patient: Appointments (past fulfilled, future booked on a Slot), Encounters,
vital-sign series, laboratory results grouped by DiagnosticReports, and progress notes.

Vital signs follow a story: weight drifts slowly, and a hypertensive patient's blood pressure
falls towards goal after lisinopril is started at the second visit. Lab values of treated
conditions (HbA1c, LDL, TSH) move from their first to their last draw; the rest stay near a
personal baseline with an occasional out-of-range value. Interpretations (L/N/H) are computed
from the value and the reference range.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import random

from mappings import terminology as term

from ._common import at, coding, concept, iso, num, ref, ucum
from ._context import PatientContext, Visit
from .clinic import (
    MAIN_LOCATION,
    ORG_ID,
    ORG_NAME,
    VIRTUAL_LOCATION,
    service_type,
    specialty_concept,
)

# Typical values of healthy adults where the reference range starts at 0 or is wide.
TYPICAL = {"cholesterol": (150, 195), "ldl": (65, 98), "hdl": (45, 70),
           "triglycerides": (70, 145), "blood-glucose": (85, 130), "glucose": (75, 95)}
ABNORMAL_CHANCE = 0.04


# --- Planning --------------------------------------------------------------------------------

def plan(ctx: PatientContext) -> None:
    """Measured values of every in-person visit (vital signs, lab panels and results)."""
    _plan_vitals(ctx)
    _plan_labs(ctx)


def _plan_vitals(ctx: PatientContext) -> None:
    rng = ctx.rng
    height = min(198.0, max(150.0, rng.gauss(176 if not ctx.female else 163, 6.5)))
    obese = ctx.has("obesity")
    bmi = rng.uniform(30.5, 36) if obese else rng.uniform(21, 29.5)
    weight0 = bmi * (height / 100) ** 2
    drift = rng.uniform(-0.6, -0.15) if obese else rng.uniform(-0.3, 0.3)  # kg per 30 days
    heart_rate = rng.uniform(62, 84)
    treated = ctx.has("hypertension")
    goal = (rng.uniform(122, 132), rng.uniform(76, 84)) if treated else \
        (rng.uniform(110, 126), rng.uniform(68, 80))
    high = (rng.uniform(144, 158), rng.uniform(90, 98)) if treated else goal
    first, switch = ctx.visits[0].start, ctx.visits[1].start
    visits = ctx.in_person()
    for v in visits:
        days = (v.start - first).days
        if treated and v.start > switch:
            k = math.exp(-(v.start - switch).days / 50)
            sys, dia = (g + (h - g) * k for g, h in zip(goal, high, strict=True))
        else:
            sys, dia = high
        weight = round(weight0 + drift * days / 30 + rng.gauss(0, 0.3), 1)
        v.vitals = {
            "systolic": round(sys + rng.gauss(0, 3.5)),
            "diastolic": round(dia + rng.gauss(0, 2.5)),
            "heart-rate": round(heart_rate + rng.gauss(0, 4)),
            "weight": weight,
            "bmi": round(weight / (height / 100) ** 2, 1),
            "temperature": round(rng.uniform(36.5, 37.1), 1),
            "respiratory-rate": rng.randint(12, 18),
            "spo2": rng.randint(94 if ctx.has("asthma") else 95, 99),
        }
        if v is visits[0] or v is visits[-1]:
            v.vitals["height"] = round(height + rng.gauss(0, 0.3), 1)


def _ref_range(test: term.LabTest, female: bool) -> tuple[float, float]:
    return test.female_range if female and test.female_range else (test.low, test.high)


def _lab_profile(ctx: PatientContext) -> tuple[dict[str, tuple[float, float]], set[str]]:
    """(first draw, last draw) expected value of each test for this patient, and the tests
    that their conditions drive (which get no random out-of-range values)."""
    rng = ctx.rng
    u = rng.uniform
    profile: dict[str, tuple[float, float]] = {}
    for key, test in term.LAB_TESTS.items():
        low, high = _ref_range(test, ctx.female)
        lo, hi = TYPICAL.get(key, (low + 0.2 * (high - low), high - 0.2 * (high - low)))
        base = u(lo, hi)
        profile[key] = (base, base)
    baseline = dict(profile)
    diabetes = ctx.problem("diabetes-type-2")
    if diabetes:
        a1c = (u(8.1, 9.2), u(6.8, 7.3)) if diabetes.new else (u(6.9, 7.6),) * 2
        glucose = (u(150, 190), u(112, 130)) if diabetes.new else (u(120, 145),) * 2
        profile["hba1c"], profile["glucose"] = a1c, glucose
        profile["blood-glucose"] = (glucose[0] + 10, glucose[1] + 10)
    lipids = ctx.problem("hyperlipidemia")
    if lipids:
        if lipids.new:
            profile.update(cholesterol=(u(225, 265), u(175, 198)), ldl=(u(150, 185), u(88, 110)),
                           triglycerides=(u(160, 240), u(120, 160)), hdl=(u(35, 45), u(38, 48)))
        else:
            profile.update(cholesterol=(u(185, 215),) * 2, ldl=(u(100, 130),) * 2,
                           triglycerides=(u(140, 190),) * 2, hdl=(u(38, 50),) * 2)
    if ctx.has("hypothyroidism"):
        profile["tsh"] = (u(4.5, 7.5), u(1.2, 3.2))
    driven = {key for key, value in profile.items() if value != baseline[key]}
    return profile, driven


def _plan_labs(ctx: PatientContext) -> None:
    rng = ctx.rng
    visits = ctx.in_person()
    first, mid, last = visits[0], visits[len(visits) // 2], visits[-1]
    extra = (["hba1c"] if ctx.has("diabetes-type-2") else []) + \
        (["tsh"] if ctx.has("hypothyroidism") else [])
    first.panels = ["cmp", "lipid", "cbc"] + extra
    mid.panels = (["hba1c"] if ctx.has("diabetes-type-2") else []) + \
        (["lipid"] if ctx.has("hyperlipidemia") else [])
    last.panels = ["cmp", "lipid"] + extra
    profile, driven = _lab_profile(ctx)
    span = max(1, (last.start - first.start).days)
    for v in visits:
        progress = (v.start - first.start).days / span
        keys = [t for p in v.panels for t in term.LAB_PANELS[p].tests]
        if ctx.has("diabetes-type-2"):
            keys.append("blood-glucose")
        for key in keys:
            test = term.LAB_TESTS[key]
            low, high = _ref_range(test, ctx.female)
            start, end = profile[key]
            value = (start + (end - start) * progress) * (1 + rng.gauss(0, 0.03))
            if key not in driven and rng.random() < ABNORMAL_CHANCE:
                value = high * rng.uniform(1.03, 1.2) if low == 0 or rng.random() < 0.6 \
                    else low * rng.uniform(0.8, 0.97)
            v.results[key] = num(value, test.decimals)


# --- Past visits -----------------------------------------------------------------------------

def _participants(ctx: PatientContext, v_staff, location: str) -> list[dict]:
    return [
        {"actor": ctx.patient_ref(), "required": "required", "status": "accepted"},
        {"actor": ref("Practitioner", v_staff.id, v_staff.display), "required": "required",
         "status": "accepted"},
        {"actor": ref("Location", location), "required": "required", "status": "accepted"},
    ]


def _location(virtual: bool) -> str:
    return VIRTUAL_LOCATION if virtual else MAIN_LOCATION


def _visit_label(virtual: bool) -> str:
    return term.TELEHEALTH_SERVICE_TEXT if virtual else term.OFFICE_VISIT_SERVICE_TEXT


def past_appointment(ctx: PatientContext, v: Visit) -> dict:
    out = {
        "resourceType": "Appointment", "id": f"appt-{ctx.n}-{v.tag}", "status": "fulfilled",
        "serviceType": [service_type(v.virtual)],
        "specialty": [specialty_concept(v.staff.specialty)],
        "appointmentType": concept(term.APPOINTMENT_CHECKUP if v.num == 1
                                   else term.APPOINTMENT_FOLLOWUP),
    }
    if v.reason:
        out["reasonReference"] = [ref("Condition", v.reason.id, v.reason.code.text)]
    out.update({
        "description": f"{_visit_label(v.virtual)} with {v.staff.display}",
        "start": iso(v.start), "end": iso(v.end),
        "minutesDuration": int((v.end - v.start).total_seconds() // 60),
        "created": iso(at(v.start.date() - dt.timedelta(days=14), 10)),
        "participant": _participants(ctx, v.staff, _location(v.virtual)),
    })
    return out


def encounter(ctx: PatientContext, v: Visit) -> dict:
    if v.virtual:
        kind = term.TELEHEALTH_SERVICE_TYPE
    else:
        kind = term.ENCOUNTER_CHECKUP if v.num == 1 else term.ENCOUNTER_FOLLOW_UP
    out = {
        "resourceType": "Encounter", "id": f"enc-{ctx.n}-{v.tag}", "status": "finished",
        "class": coding(term.ENCOUNTER_CLASS_VIRTUAL if v.virtual
                        else term.ENCOUNTER_CLASS_AMBULATORY),
        "type": [concept(kind, text=_visit_label(v.virtual))],
        "serviceType": service_type(v.virtual),
        "subject": ctx.patient_ref(),
        "participant": [{"type": [concept(term.PRIMARY_PERFORMER)],
                         "period": {"start": iso(v.start), "end": iso(v.end)},
                         "individual": ref("Practitioner", v.staff.id, v.staff.display)}],
        "appointment": [ref("Appointment", f"appt-{ctx.n}-{v.tag}")],
        "period": {"start": iso(v.start), "end": iso(v.end)},
    }
    if v.reason:
        out["reasonReference"] = [ref("Condition", v.reason.id, v.reason.code.text)]
    out["location"] = [{"location": ref("Location", _location(v.virtual)),
                        "status": "completed"}]
    out["serviceProvider"] = ref("Organization", ORG_ID, ORG_NAME)
    return out


def _observation(ctx: PatientContext, v: Visit, oid: str, category: term.Code, codings: list,
                 text: str, when: dt.datetime, issued: dt.datetime) -> dict:
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "category": [concept(category)],
        "code": {"coding": codings, "text": text},
        "subject": ctx.patient_ref(),
        "encounter": ref("Encounter", f"enc-{ctx.n}-{v.tag}"),
        "effectiveDateTime": iso(when),
        "issued": iso(issued),
        "performer": [ref("Practitioner", v.staff.id, v.staff.display)],
    }


def _loinc(code: str, display: str) -> dict:
    return {"system": term.LOINC, "code": code, "display": display}


def vital_signs(ctx: PatientContext, v: Visit) -> list[dict]:
    when = v.start + dt.timedelta(minutes=5)
    signs = term.VITAL_SIGNS
    bp = signs["bp"]
    out = []
    panel = _observation(ctx, v, f"obs-{ctx.n}-bp-{v.tag}", term.CATEGORY_VITAL_SIGNS,
                         [_loinc(bp.loinc, bp.display)], "Blood pressure", when, when)
    panel["component"] = [
        {"code": {"coding": [_loinc(signs[k].loinc, signs[k].display)],
                  "text": signs[k].display},
         "valueQuantity": ucum(v.vitals[k], signs[k].unit, signs[k].unit_display)}
        for k in ("systolic", "diastolic")]
    out.append(panel)
    for key in ("heart-rate", "weight", "height", "bmi", "temperature", "respiratory-rate",
                "spo2"):
        if key not in v.vitals:
            continue
        sign = signs[key]
        codings = [_loinc(sign.loinc, sign.display)] + [_loinc(c, d) for c, d in sign.extra_loinc]
        obs = _observation(ctx, v, f"obs-{ctx.n}-{key}-{v.tag}", term.CATEGORY_VITAL_SIGNS,
                           codings, sign.display, when, when)
        obs["valueQuantity"] = ucum(v.vitals[key], sign.unit, sign.unit_display)
        out.append(obs)
    return out


def _lab_observation(ctx: PatientContext, v: Visit, key: str, when: dt.datetime,
                     issued: dt.datetime) -> dict:
    test = term.LAB_TESTS[key]
    low, high = _ref_range(test, ctx.female)
    value = v.results[key]
    obs = _observation(ctx, v, f"obs-{ctx.n}-{key}-{v.tag}", term.CATEGORY_LABORATORY,
                       [_loinc(test.loinc, test.display)], test.display, when, issued)
    obs["valueQuantity"] = ucum(value, test.unit)
    obs["interpretation"] = [concept(term.INTERPRETATION[term.interpretation(value, low, high)])]
    obs["referenceRange"] = [{"low": ucum(num(low, test.decimals), test.unit),
                              "high": ucum(num(high, test.decimals), test.unit)}]
    return obs


def lab_results(ctx: PatientContext, v: Visit) -> list[dict]:
    when = v.start + dt.timedelta(minutes=10)
    issued = at(v.start.date() + dt.timedelta(days=1), 7, 30)
    out = []
    for panel_key in v.panels:
        panel = term.LAB_PANELS[panel_key]
        results = [_lab_observation(ctx, v, key, when, issued) for key in panel.tests]
        out.extend(results)
        flagged = [r["code"]["text"] for r in results
                   if r["interpretation"][0]["coding"][0]["code"] != "N"]
        out.append({
            "resourceType": "DiagnosticReport", "id": f"dr-{ctx.n}-{panel_key}-{v.tag}",
            "status": "final",
            "category": [concept(term.DR_CATEGORY_LAB)],
            "code": {"coding": [_loinc(panel.loinc, panel.display)], "text": panel.display},
            "subject": ctx.patient_ref(),
            "encounter": ref("Encounter", f"enc-{ctx.n}-{v.tag}"),
            "effectiveDateTime": iso(when),
            "issued": iso(issued),
            "performer": [ref("Organization", ORG_ID, ORG_NAME)],
            "resultsInterpreter": [ref("Practitioner", v.staff.id, v.staff.display)],
            "result": [ref("Observation", r["id"]) for r in results],
            "conclusion": ("Outside the reference range: " + "; ".join(flagged) + "."
                           if flagged else "All results within the reference ranges."),
        })
    if "blood-glucose" in v.results:
        out.append(_lab_observation(ctx, v, "blood-glucose", when, when))
    return out


def visit_resources(ctx: PatientContext, v: Visit) -> list[dict]:
    out = [past_appointment(ctx, v), encounter(ctx, v)]
    if not v.virtual:
        out.extend(vital_signs(ctx, v))
        out.extend(lab_results(ctx, v))
    return out


# --- Future visits ---------------------------------------------------------------------------

def future_appointments(ctx: PatientContext) -> list[dict]:
    """1-2 booked visits on free slots of the care team (the telehealth practitioner's when
    they are on it); the slots become busy."""
    rng = ctx.rng
    # Free slots depend on earlier patients and on `today`: pick them from a separate stream so
    # that the rest of this patient's story does not.
    picker = random.Random(rng.getrandbits(64))
    wanted = [ctx.pcp]
    tele = next((s for s in ctx.team if s.telehealth), None)
    specialists = [s for s in ctx.team if not s.primary_care and not s.telehealth]
    if tele:
        wanted.append(tele)
    elif specialists and rng.random() < 0.5:
        wanted.append(rng.choice(specialists))
    chronic = [p for p in ctx.problems if p.code.chronic]
    out = []
    for k, staff in enumerate(wanted, start=1):
        slot = ctx.clinic.book(staff.id, picker)
        if slot is None:
            continue
        reason = next((p for p in chronic if p.code.specialty == staff.specialty),
                      chronic[0] if chronic else None)
        appt = {
            "resourceType": "Appointment", "id": f"appt-{ctx.n}-f{k:02d}", "status": "booked",
            "serviceType": [service_type(staff.telehealth)],
            "specialty": [specialty_concept(staff.specialty)],
            "appointmentType": concept(term.APPOINTMENT_ROUTINE),
        }
        if reason:
            appt["reasonReference"] = [ref("Condition", reason.id, reason.code.text)]
        appt.update({
            "description": f"{_visit_label(staff.telehealth)} with {staff.display}",
            "start": slot["start"], "end": slot["end"],
            "minutesDuration": 30,
            "slot": [ref("Slot", slot["id"])],
            "created": iso(at(ctx.today - dt.timedelta(days=rng.randint(1, 12)), 10, 5)),
            "patientInstruction": ("Join the video visit from the patient portal 10 minutes "
                                   "early." if staff.telehealth else
                                   "Please arrive 15 minutes early and bring your medicines."),
            "participant": _participants(ctx, staff, _location(staff.telehealth)),
        })
        out.append(appt)
    return out


# --- Notes -----------------------------------------------------------------------------------

def _note_text(ctx: PatientContext, v: Visit) -> str:
    lines = [f"Progress note - {v.start.date().isoformat()}",
             f"Patient: {ctx.name} ({ctx.mrn})",
             f"Visit: {_visit_label(v.virtual)} with {v.staff.display}"]
    if v.vitals:
        vit = v.vitals
        lines.append(f"Vitals: BP {vit['systolic']}/{vit['diastolic']} mmHg, "
                     f"HR {vit['heart-rate']}/min, weight {vit['weight']} kg, "
                     f"BMI {vit['bmi']} kg/m2, SpO2 {vit['spo2']}%")
    day = v.start.date()
    lines.append("Problems: " + "; ".join(p.code.text for p in ctx.problems if p.onset <= day
                                          and (p.resolved is None or p.resolved > day)))
    meds = dict.fromkeys(m.drug.text for m in ctx.meds if m.authored.date() <= day
                         and (m.ended is None or m.ended > day))
    if meds:
        lines.append("Medications: " + "; ".join(meds))
    if v.reason and not v.reason.code.chronic:
        plan = (f"{v.reason.code.text}: supportive care, fluids and rest. Return if fever "
                "persists beyond 3 days.")
    else:
        plan = "Stable. Continue current medications. Follow up in 3 months."
    lines.append(f"Assessment and plan: {plan}")
    return "\n".join(lines) + "\n"


def documents(ctx: PatientContext) -> list[dict]:
    """Progress notes of the telehealth visit and of the latest office visit."""
    chosen = [v for v in ctx.visits if v.virtual] + [ctx.in_person()[-1]]
    out = []
    for v in sorted(chosen, key=lambda x: x.num):
        text = _note_text(ctx, v)
        written = v.end + dt.timedelta(hours=2)
        out.append({
            "resourceType": "DocumentReference", "id": f"doc-{ctx.n}-{v.tag}",
            "status": "current", "docStatus": "final",
            "type": concept(term.PROGRESS_NOTE, text="Progress note"),
            "category": [concept(term.DOCREF_CLINICAL_NOTE)],
            "subject": ctx.patient_ref(),
            "date": iso(written),
            "author": [ref("Practitioner", v.staff.id, v.staff.display)],
            "custodian": ref("Organization", ORG_ID, ORG_NAME),
            "description": f"Progress note, {_visit_label(v.virtual).lower()} of "
                           f"{v.start.date().isoformat()}",
            "content": [{"attachment": {
                "contentType": "text/plain", "language": "en-US",
                "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
                "title": f"Progress note {v.start.date().isoformat()}",
                "creation": iso(written),
            }}],
            "context": {"encounter": [ref("Encounter", f"enc-{ctx.n}-{v.tag}")],
                        "period": {"start": iso(v.start), "end": iso(v.end)}},
        })
    return out
