"""The planned facts about one synthetic patient, shared by the modules that turn them into
resources (so that visits, orders, messages and bills tell one consistent story)."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

from mappings import terminology as term

from ._common import ref
from .clinic import Clinic, Staff


@dataclass
class Problem:
    id: str
    code: term.ConditionCode
    onset: dt.date
    new: bool = False  # diagnosed (and treated) from the first visit of the past year
    resolved: dt.date | None = None


@dataclass
class Visit:
    num: int  # 1-based, in time order
    start: dt.datetime
    end: dt.datetime
    virtual: bool
    staff: Staff | None = None
    reason: Problem | None = None
    panels: list[str] = field(default_factory=list)  # lab panels drawn at this visit
    vitals: dict[str, float] = field(default_factory=dict)  # key of term.VITAL_SIGNS -> value
    results: dict[str, float] = field(default_factory=dict)  # key of term.LAB_TESTS -> value

    @property
    def tag(self) -> str:
        return f"{self.num:03d}"


@dataclass
class MedPlan:
    drug: term.Drug
    status: str
    authored: dt.datetime
    validity_end: dt.date
    repeats: int
    prescriber: Staff
    problem: Problem | None = None
    visit: Visit | None = None
    status_reason: str | None = None
    ended: dt.date | None = None  # when a stopped/completed order stopped being taken
    acute: bool = False
    id: str = ""
    by_reference: bool = False


@dataclass
class PatientContext:
    index: int
    rng: random.Random
    clinic: Clinic
    gender: str = ""
    given: str = ""
    family: str = ""
    birth_date: dt.date = dt.date(1970, 1, 1)
    mrn: str = ""
    problems: list[Problem] = field(default_factory=list)
    pcp: Staff | None = None
    team: list[Staff] = field(default_factory=list)
    visits: list[Visit] = field(default_factory=list)
    meds: list[MedPlan] = field(default_factory=list)

    @property
    def n(self) -> str:
        return f"{self.index:04d}"

    @property
    def pid(self) -> str:
        return f"pat-{self.n}"

    @property
    def today(self) -> dt.date:
        return self.clinic.today

    @property
    def name(self) -> str:
        return f"{self.given} {self.family}"

    @property
    def female(self) -> bool:
        return self.gender == "female"

    def patient_ref(self) -> dict:
        return ref("Patient", self.pid, self.name)

    def has(self, key: str) -> bool:
        return any(p.code.key == key for p in self.problems)

    def problem(self, key: str) -> Problem | None:
        return next((p for p in self.problems if p.code.key == key), None)

    def in_person(self) -> list[Visit]:
        return [v for v in self.visits if not v.virtual]

    def telehealth(self) -> bool:
        return any(s.telehealth for s in self.team)
