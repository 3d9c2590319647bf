"""One synthetic patient: who they are, their problems, care team and visit plan, and the
administrative and history resources (Patient, CareTeam, Account, Condition, AllergyIntolerance,
Immunization, Invoice). Visits, orders and messages are built by the sibling modules from the
same PatientContext.

Each patient has their own random stream (seeded from the run's seed and the patient number),
so patient 7 is the same person whatever the number of patients; only slot bookings depend on
the patients before them.
"""

from __future__ import annotations

import datetime as dt
import random

from mappings import terminology as term

from . import encounters, messages, orders
from ._common import at, concept, iso, money, ref, weekday_on_or_before
from ._context import PatientContext, Problem, Visit
from .clinic import ORG_ID, ORG_NAME, Clinic

GIVEN_FEMALE = ("Mary", "Linda", "Susan", "Karen", "Nancy", "Lisa", "Emily", "Anna", "Laura",
                "Grace", "Julia", "Rachel", "Olivia", "Emma", "Sophia", "Hannah", "Carol",
                "Diane", "Helen", "Ruth")
GIVEN_MALE = ("James", "John", "Robert", "Michael", "William", "David", "Thomas", "Daniel",
              "Mark", "Paul", "Steven", "Andrew", "Kevin", "Brian", "Peter", "Henry", "George",
              "Frank", "Samuel", "Joseph")
FAMILY = ("Smith", "Johnson", "Brown", "Miller", "Davis", "Wilson", "Moore", "Taylor",
          "Anderson", "Thomas", "Jackson", "White", "Harris", "Martin", "Thompson", "Garcia",
          "Martinez", "Clark", "Lewis", "Walker", "Hall", "Allen", "Young", "King", "Wright",
          "Scott", "Green", "Baker", "Adams", "Nelson")
STREETS = ("Maple Street", "Oak Avenue", "Cedar Lane", "Pine Road", "Elm Street",
           "Birch Court", "Willow Way", "Lakeview Drive", "Meadow Lane", "Hillcrest Road")
CITIES = (("Springfield", "62704"), ("Chatham", "62629"), ("Rochester", "62563"),
          ("Sherman", "62684"), ("Riverton", "62561"))

# The first problem rotates so that even a handful of patients covers the main stories.
PRIMARY_ROTATION = ("hypertension", "diabetes-type-2", "hyperlipidemia", "asthma",
                    "hypothyroidism", "atrial-fibrillation")
EXTRA_PROBLEMS = ("hypertension", "diabetes-type-2", "hyperlipidemia", "obesity", "gerd",
                  "anxiety", "migraine", "hypothyroidism", "asthma")
MAX_PROBLEMS = 4


def build_patient(index: int, seed: int, clinic: Clinic) -> list[dict]:
    """Every resource of patient number `index` (1-based), referenced ones first."""
    ctx = PatientContext(index, random.Random(f"{seed}:patient:{index}"), clinic)
    _demographics(ctx)
    _plan_visits(ctx)
    _problems(ctx)
    _team(ctx)
    _assign_visits(ctx)
    encounters.plan(ctx)
    orders.plan(ctx)

    out: list[dict] = [patient(ctx), care_team(ctx)]
    acct = account(ctx)
    out.append(acct)
    out.extend(condition(ctx, p) for p in ctx.problems)
    out.extend(allergies(ctx))
    out.extend(immunizations(ctx))
    for visit in ctx.visits:
        out.extend(encounters.visit_resources(ctx, visit))
    out.extend(orders.medication_requests(ctx))
    out.extend(orders.tasks(ctx))
    out.extend(encounters.future_appointments(ctx))
    out.extend(messages.thread(ctx))
    out.extend(encounters.documents(ctx))
    bills = invoices(ctx)
    out.extend(bills)
    set_balance(acct, bills)
    return out


# --- Planning --------------------------------------------------------------------------------

def _demographics(ctx: PatientContext) -> None:
    rng = ctx.rng
    ctx.gender = "female" if rng.random() < 0.52 else "male"
    ctx.given = rng.choice(GIVEN_FEMALE if ctx.female else GIVEN_MALE)
    ctx.family = rng.choice(FAMILY)
    age = rng.randint(24, 84)
    ctx.birth_date = ctx.today - dt.timedelta(days=age * 365 + age // 4 + rng.randint(1, 360))
    ctx.mrn = f"MRN{100000 + ctx.index:06d}"


def _plan_visits(ctx: PatientContext) -> None:
    """7-9 past visits over the last year; one (not the first or last) is a telehealth visit."""
    rng = ctx.rng
    count = rng.randint(7, 9)
    first, last = rng.randint(330, 360), rng.randint(6, 25)
    step = (first - last) / (count - 1)
    virtual = rng.randint(2, count - 2)
    for i in range(count):
        days_ago = first - step * i + (rng.randint(-6, 6) if 0 < i < count - 1 else 0)
        day = weekday_on_or_before(ctx.today - dt.timedelta(days=round(days_ago)))
        start = at(day, rng.choice((8, 9, 10, 11, 13, 14, 15)), rng.choice((0, 15, 30, 45)))
        end = start + dt.timedelta(minutes=rng.choice((20, 30, 40)))
        ctx.visits.append(Visit(i + 1, start, end, virtual=(i == virtual)))


def _problems(ctx: PatientContext) -> None:
    rng = ctx.rng
    keys = [PRIMARY_ROTATION[(ctx.index - 1) % len(PRIMARY_ROTATION)]]
    if ctx.index == 1:  # the first patient shows the most: two treated chronic conditions
        keys.append("hyperlipidemia")
    opioid = ctx.index % 3 == 1 or rng.random() < 0.1
    acute = rng.choice(("uri", "acute-bronchitis")) if rng.random() < 0.5 else None
    room = MAX_PROBLEMS - len(keys) - int(opioid) - int(acute is not None)
    pool = [k for k in EXTRA_PROBLEMS if k not in keys]
    rng.shuffle(pool)
    keys += pool[:min(room, rng.choice((0, 1, 1, 2, 2, 3)))]
    if opioid:
        keys.append("osteoarthritis-knee")
    age = (ctx.today - ctx.birth_date).days // 365
    first_visit = ctx.visits[0].start.date()
    for key in keys:
        code = term.CONDITIONS[key]
        new = key in ("diabetes-type-2", "hyperlipidemia") and rng.random() < 0.5
        if new:
            onset = first_visit
        else:
            years = max(1, min(rng.randint(2, 12), age - 18))
            onset = ctx.today - dt.timedelta(days=years * 365 + rng.randint(0, 300))
        ctx.problems.append(Problem("", code, onset, new=new))
    if acute:
        seen = next(v for v in ctx.visits if v.virtual).start.date()
        ctx.problems.append(Problem("", term.CONDITIONS[acute], seen,
                                    resolved=seen + dt.timedelta(days=rng.randint(7, 14))))
    for i, p in enumerate(ctx.problems, start=1):
        p.id = f"cond-{ctx.n}-{i:02d}"


def _team(ctx: PatientContext) -> None:
    rng, clinic = ctx.rng, ctx.clinic
    ctx.pcp = rng.choice(clinic.primary_care())
    ctx.team = [ctx.pcp]
    for p in ctx.problems:
        spec = clinic.specialist(p.code.specialty) if p.code.specialty else None
        if spec and spec not in ctx.team and (p.code.key == "atrial-fibrillation"
                                              or rng.random() < 0.5):
            ctx.team.append(spec)
    if ctx.index % 2 == 1 or rng.random() < 0.3:
        ctx.team.append(clinic.telehealth())


def _assign_visits(ctx: PatientContext) -> None:
    """The PCP sees the first and last visits; specialists some in between; the telehealth
    visit is with the telehealth practitioner when they are on the team."""
    specialists = [s for s in ctx.team if not s.primary_care and not s.telehealth]
    chronic = [p for p in ctx.problems if p.code.chronic]
    tele = next((s for s in ctx.team if s.telehealth), ctx.pcp)
    middle = [v for v in ctx.visits[1:-1] if not v.virtual]
    for v in ctx.visits:
        v.staff = ctx.pcp
        v.reason = chronic[(v.num - 1) % len(chronic)] if chronic else None
    for v, spec in zip(middle[1:], specialists, strict=False):
        v.staff = spec
        v.reason = next((p for p in chronic if p.code.specialty == spec.specialty), v.reason)
    for v in ctx.visits:
        if v.virtual:
            v.staff = tele
            acute = next((p for p in ctx.problems if not p.code.chronic), None)
            v.reason = acute or v.reason


# --- Resources -------------------------------------------------------------------------------

def patient(ctx: PatientContext) -> dict:
    rng = ctx.rng
    city, postal = rng.choice(CITIES)
    spanish = rng.random() < 0.15
    language = ({"system": term.BCP47, "code": "es", "display": "Spanish"} if spanish else
                {"system": term.BCP47, "code": "en-US", "display": "English (United States)"})
    return {
        "resourceType": "Patient", "id": ctx.pid,
        "identifier": [{"use": "usual", "type": concept(term.MRN_TYPE),
                        "system": term.CLINIC_MRN_SYSTEM, "value": ctx.mrn}],
        "active": True,
        "name": [{"use": "official", "family": ctx.family, "given": [ctx.given]}],
        "telecom": [
            {"system": "phone", "value": f"(309) 555-01{ctx.index % 100:02d}", "use": "mobile"},
            {"system": "email", "value": f"{ctx.given.lower()}.{ctx.family.lower()}{ctx.index}"
                                         "@example.com", "use": "home"},
        ],
        "gender": ctx.gender,
        "birthDate": ctx.birth_date.isoformat(),
        "address": [{"use": "home", "line": [f"{rng.randint(10, 9899)} {rng.choice(STREETS)}"],
                     "city": city, "state": "IL", "postalCode": postal, "country": "US"}],
        "communication": [{"language": {"coding": [language], "text": language["display"]},
                           "preferred": True}],
        "generalPractitioner": [ref("Practitioner", ctx.pcp.id, ctx.pcp.display)],
        "managingOrganization": ref("Organization", ORG_ID, ORG_NAME),
    }


def care_team(ctx: PatientContext) -> dict:
    members = []
    for s in ctx.team:
        role = term.CARE_TEAM_PCP if s is ctx.pcp else term.CARE_TEAM_PHYSICIAN
        members.append({"role": [concept(role)],
                        "member": ref("Practitioner", s.id, s.display),
                        "onBehalfOf": ref("Organization", ORG_ID)})
    return {
        "resourceType": "CareTeam", "id": f"careteam-{ctx.n}", "status": "active",
        "category": [concept(term.CARE_TEAM_LONGITUDINAL)],
        "name": f"Care team of {ctx.name}",
        "subject": ctx.patient_ref(),
        "period": {"start": ctx.visits[0].start.date().isoformat()},
        "participant": members,
        "managingOrganization": [ref("Organization", ORG_ID)],
    }


def account(ctx: PatientContext) -> dict:
    """The patient's billing account; its balance is filled in by set_balance."""
    return {
        "resourceType": "Account", "id": f"acct-{ctx.n}", "status": "active",
        "type": concept(term.ACCOUNT_TYPE_PATIENT_BILLING),
        "name": "Patient account",
        "subject": [ctx.patient_ref()],
        "servicePeriod": {"start": ctx.visits[0].start.date().isoformat()},
        "owner": ref("Organization", ORG_ID, ORG_NAME),
        "description": f"Self-pay balance of {ctx.name}",
        "guarantor": [{"party": ctx.patient_ref()}],
    }


def set_balance(acct: dict, bills: list[dict]) -> None:
    """Record the balance due (the issued invoices' totalGross) as the R5 Account.balance
    cross-version extension: sub-extensions aggregate (patient), estimate and amount."""
    due = round(sum(b["totalGross"]["value"] for b in bills if b["status"] == "issued"), 2)
    acct["extension"] = [{
        "url": term.ACCOUNT_BALANCE_EXTENSION,
        "extension": [
            {"url": "aggregate", "valueCodeableConcept": {"coding": [{
                "system": term.ACCOUNT_AGGREGATE, "code": "patient", "display": "Patient"}]}},
            {"url": "estimate", "valueBoolean": False},
            {"url": "amount", "valueMoney": money(due)},
        ],
    }]


def condition(ctx: PatientContext, p: Problem) -> dict:
    c = p.code
    out = {
        "resourceType": "Condition", "id": p.id,
        "clinicalStatus": {"coding": [{"system": term.CONDITION_CLINICAL,
                                       "code": "resolved" if p.resolved else "active"}]},
        "verificationStatus": {"coding": [{"system": term.CONDITION_VERIFICATION,
                                           "code": "confirmed"}]},
        "category": [concept(term.CATEGORY_PROBLEM_LIST)],
        "code": {"coding": [{"system": term.SNOMED, "code": c.snomed, "display": c.snomed_display},
                            {"system": term.ICD10CM, "code": c.icd10, "display": c.icd10_display}],
                 "text": c.text},
        "subject": ctx.patient_ref(),
        "onsetDateTime": p.onset.isoformat(),
    }
    if p.resolved:
        out["abatementDateTime"] = p.resolved.isoformat()
    out["recordedDate"] = max(p.onset, ctx.visits[0].start.date()).isoformat()
    out["recorder"] = ref("Practitioner", ctx.pcp.id, ctx.pcp.display)
    return out


def allergies(ctx: PatientContext) -> list[dict]:
    rng = ctx.rng
    count = rng.choices((0, 1, 2), weights=(4, 4, 2))[0]
    if ctx.index % 4 == 1:
        count = max(count, 1)
    chosen = rng.sample(sorted(term.ALLERGENS), count)
    out = []
    for i, key in enumerate(chosen, start=1):
        a = term.ALLERGENS[key]
        reaction = term.REACTIONS[rng.choice(a.reactions)]
        severe = reaction.code == term.REACTIONS["anaphylaxis"].code
        onset = ctx.birth_date + dt.timedelta(days=rng.randint(3 * 365, 20 * 365))
        out.append({
            "resourceType": "AllergyIntolerance", "id": f"allergy-{ctx.n}-{i:02d}",
            "clinicalStatus": {"coding": [{"system": term.ALLERGY_CLINICAL, "code": "active",
                                           "display": "Active"}]},
            "verificationStatus": {"coding": [{"system": term.ALLERGY_VERIFICATION,
                                               "code": "confirmed", "display": "Confirmed"}]},
            "type": "allergy",
            "category": [a.category],
            "criticality": "high" if severe else "low",
            "code": {"coding": [{"system": term.SNOMED, "code": a.snomed,
                                 "display": a.display}], "text": a.text},
            "patient": ctx.patient_ref(),
            "onsetDateTime": min(onset, ctx.today - dt.timedelta(days=400)).isoformat(),
            "recordedDate": ctx.visits[0].start.date().isoformat(),
            "recorder": ref("Practitioner", ctx.pcp.id, ctx.pcp.display),
            "reaction": [{"manifestation": [concept(reaction)],
                          "severity": "severe" if severe else rng.choice(("mild", "moderate"))}],
        })
    return out


def _vaccine_plan(ctx: PatientContext) -> list[tuple[str, int]]:
    """(vaccine key, days ago): the last one or two flu seasons plus age-appropriate ones."""
    rng, today = ctx.rng, ctx.today
    age = (today - ctx.birth_date).days // 365
    season = today.year if today >= dt.date(today.year, 10, 20) else today.year - 1
    plan = []
    for back in range(rng.choice((1, 2))):
        shot = dt.date(season - back, 9, 20) + dt.timedelta(days=rng.randint(0, 28))
        plan.append(("influenza" if back == 0 else "influenza-quadrivalent",
                     (today - shot).days))
    if rng.random() < 0.8:
        plan.append(("covid-19-pfizer", rng.randint(800, 1400)))
    plan.append(("tdap", rng.randint(400, 3200)))
    if age >= 65:
        plan += [("pcv13", rng.randint(400, 1500)), ("ppsv23", rng.randint(1600, 2500))]
    elif age >= 50:
        plan.append(("zoster-recombinant", rng.randint(200, 1500)))
    elif age < 27:
        plan.append(("hpv9", rng.randint(1500, 2500)))
    else:
        plan.append(("hep-b-adult", rng.randint(2000, 4000)))
    return sorted(plan, key=lambda item: -item[1])


def immunizations(ctx: PatientContext) -> list[dict]:
    rng = ctx.rng
    out = []
    for i, (key, days_ago) in enumerate(_vaccine_plan(ctx), start=1):
        v = term.VACCINES[key]
        day = weekday_on_or_before(ctx.today - dt.timedelta(days=days_ago))
        out.append({
            "resourceType": "Immunization", "id": f"imm-{ctx.n}-{i:02d}",
            "status": "completed",
            "vaccineCode": {"coding": [{"system": term.CVX, "code": v.cvx, "display": v.display}],
                            "text": v.text},
            "patient": ctx.patient_ref(),
            "occurrenceDateTime": iso(at(day, rng.choice((9, 10, 11, 14, 15)), 0)),
            "primarySource": True,
            "location": ref("Location", "loc-01"),
            "lotNumber": f"{rng.choice('ABCDEFGHJK')}{rng.randint(10000, 99999)}",
            "performer": [{"actor": ref("Practitioner", ctx.pcp.id, ctx.pcp.display)}],
        })
    return out


def _visit_charges(visit: Visit) -> list[term.Charge]:
    if visit.virtual:
        first = term.CHARGES["telehealth-visit"]
    elif visit.staff.primary_care:
        first = term.CHARGES["office-visit-pcp"]
    else:
        first = term.CHARGES["office-visit-specialist"]
    return [first] + [term.CHARGES[f"lab-{panel}"] for panel in visit.panels]


def invoices(ctx: PatientContext) -> list[dict]:
    """Bills for the most recent 1-3 visits; the newest is unpaid (issued), older ones are
    mostly paid (balanced)."""
    rng = ctx.rng
    count = rng.randint(1, 3)
    out = []
    for i, visit in enumerate(reversed(ctx.visits[-count:]), start=1):
        charges = _visit_charges(visit)
        total = round(sum(c.amount for c in charges), 2)
        status = "issued" if i == 1 or rng.random() < 0.3 else "balanced"
        out.append({
            "resourceType": "Invoice", "id": f"inv-{ctx.n}-{i:02d}",
            "status": status,
            "subject": ctx.patient_ref(),
            "recipient": ctx.patient_ref(),
            "date": iso(at(visit.start.date() + dt.timedelta(days=3), 9)),
            "issuer": ref("Organization", ORG_ID, ORG_NAME),
            "account": ref("Account", f"acct-{ctx.n}"),
            "lineItem": [{
                "sequence": seq,
                "chargeItemCodeableConcept": {"coding": [{"system": term.CHARGE_SYSTEM,
                                                          "code": c.code,
                                                          "display": c.display}],
                                              "text": c.display},
                "priceComponent": [{"type": "base", "amount": money(c.amount)}],
            } for seq, c in enumerate(charges, start=1)],
            "totalNet": money(total),
            "totalGross": money(total),
            "paymentTerms": "Due within 30 days of the invoice date.",
            "note": [{"text": f"Services of {visit.start.date().isoformat()} "
                              f"with {visit.staff.display}."}],
        })
    return out
