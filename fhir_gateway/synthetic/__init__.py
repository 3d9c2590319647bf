"""Deterministic synthetic data: a small primary-care clinic and its patients as FHIR R4 JSON.

`generate(patients, seed, today)` returns plain dicts (no model library, so it is fast) that
validate as FHIR R4, with readable ids and only relative references (`Type/id`) to resources in
the same output; referenced resources come first. The same arguments give byte-identical
output: randomness comes from `random.Random` seeded by `seed` (one stream per patient), and
every date is relative to `today` (past records before it, free and booked slots after it).

What is in it
- The clinic: Organization `org-01`; Locations `loc-01` (main clinic) and `loc-02` (virtual
  care, physicalType `vi`); five Practitioners `prac-01..05` with NPIs (two primary care, a
  cardiologist, an endocrinologist and a telehealth family physician, `prac-05`), a
  PractitionerRole `role-NN` and a Schedule `sched-NN` each; Slots
  `slot-NN-YYYYMMDD-HHMM` (30 minutes, weekdays, the 30 days after `today`); a formulary
  Medication `med-<rxnorm>` per drug of `mappings.terminology.DRUGS`.
- Per patient NNNN: Patient `pat-NNNN`, CareTeam `careteam-NNNN` (who the patient may message),
  Account `acct-NNNN`, Conditions `cond-NNNN-KK`, AllergyIntolerances `allergy-NNNN-KK`,
  Immunizations `imm-NNNN-KK`, past visits VVV as Appointment `appt-NNNN-VVV` (fulfilled) and
  Encounter `enc-NNNN-VVV` (class AMB; one telehealth visit has class VR), vital signs and lab
  results `obs-NNNN-<key>-VVV` (e.g. `obs-0001-bp-003`, `obs-0001-ldl-001`), DiagnosticReports
  `dr-NNNN-<panel>-VVV`, MedicationRequests `mr-NNNN-KK`, a refill Task `task-NNNN-01`, booked
  Appointments `appt-NNNN-fKK` on (now busy) Slots, a message thread `comm-NNNN-01` with its
  messages `comm-NNNN-01-KK`, progress notes `doc-NNNN-VVV` and Invoices `inv-NNNN-KK`.

Telehealth: the Schedule, Slots and Appointments of the telehealth practitioner carry
`serviceType` = SNOMED CT 448337001 "Telemedicine consultation with patient (procedure)" with
text "Telehealth visit" (`mappings.terminology.TELEHEALTH_SERVICE_TYPE`); in-person ones carry
SNOMED CT 11429006 "Consultation (procedure)" with text "Office visit". Slot.comment repeats it
in words. Telehealth Encounters have class v3-ActCode VR and location `loc-02`.

Account balance: R4 Account has no balance, so it is the R5 cross-version extension
`http://hl7.org/fhir/5.0/StructureDefinition/extension-Account.balance` with sub-extensions
`aggregate` (valueCodeableConcept, `http://hl7.org/fhir/account-aggregate#patient`),
`estimate` (valueBoolean false) and `amount` (valueMoney, USD) = the sum of the totalGross of
the patient's `issued` Invoices (`balanced` ones are paid).
"""

from __future__ import annotations

import datetime as dt

from .clinic import build_clinic
from .patients import build_patient

__all__ = ["generate"]


def generate(patients: int, seed: int, today: dt.date | None = None) -> list[dict]:
    """Return every resource of a synthetic clinic with `patients` patients, as FHIR R4 JSON
    dicts with ids."""
    if patients < 0:
        raise ValueError("patients must be zero or more")
    day = today or dt.date.today()
    clinic = build_clinic(day)
    patient_resources: list[dict] = []
    for index in range(1, patients + 1):
        patient_resources.extend(build_patient(index, seed, clinic))
    return clinic.resources + patient_resources
