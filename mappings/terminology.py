"""Code systems and small tables of real clinical codes (LOINC, SNOMED CT, RxNorm, CVX, ICD-10-CM).

Pure data used by the synthetic clinic generator and by gateway code that needs to recognise a
code (a vital sign, a controlled substance, a telehealth slot). Only codes that exist in the
named code systems are listed; the displays are the systems' own terms (or close to them).
"""

from __future__ import annotations

from dataclasses import dataclass

# --- Code system and identifier system URIs ---------------------------------------------------

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
NUCC = "http://nucc.org/provider-taxonomy"
NPI = "http://hl7.org/fhir/sid/us-npi"
BCP47 = "urn:ietf:bcp:47"

_THO = "http://terminology.hl7.org/CodeSystem/"
OBSERVATION_CATEGORY = _THO + "observation-category"
OBSERVATION_INTERPRETATION = _THO + "v3-ObservationInterpretation"
CONDITION_CLINICAL = _THO + "condition-clinical"
CONDITION_VERIFICATION = _THO + "condition-ver-status"
CONDITION_CATEGORY = _THO + "condition-category"
ALLERGY_CLINICAL = _THO + "allergyintolerance-clinical"
ALLERGY_VERIFICATION = _THO + "allergyintolerance-verification"
ACT_CODE = _THO + "v3-ActCode"  # encounter class (AMB, VR, ...) and account type
PARTICIPATION_TYPE = _THO + "v3-ParticipationType"
DIAGNOSTIC_SERVICE_SECTION = _THO + "v2-0074"
APPOINTMENT_REASON = _THO + "v2-0276"  # Appointment/Slot.appointmentType
IDENTIFIER_TYPE = _THO + "v2-0203"
ORGANIZATION_TYPE = _THO + "organization-type"
LOCATION_PHYSICAL_TYPE = _THO + "location-physical-type"
PRACTITIONER_ROLE = _THO + "practitioner-role"
MEDREQ_COURSE_OF_THERAPY = _THO + "medicationrequest-course-of-therapy"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
US_CORE_DOCREF_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
ACCOUNT_AGGREGATE = "http://hl7.org/fhir/account-aggregate"  # R5 code system (balance extension)
ACCOUNT_BALANCE_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Account.balance"

# Systems of this (fictional) clinic.
CLINIC_MRN_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"
CHARGE_SYSTEM = "https://example.org/fhir/CodeSystem/charge"


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    display: str


# --- Small fixed codes -------------------------------------------------------------------------

CATEGORY_VITAL_SIGNS = Code(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")
CATEGORY_LABORATORY = Code(OBSERVATION_CATEGORY, "laboratory", "Laboratory")
CATEGORY_PROBLEM_LIST = Code(CONDITION_CATEGORY, "problem-list-item", "Problem List Item")
DR_CATEGORY_LAB = Code(DIAGNOSTIC_SERVICE_SECTION, "LAB", "Laboratory")

INTERPRETATION = {
    "N": Code(OBSERVATION_INTERPRETATION, "N", "Normal"),
    "H": Code(OBSERVATION_INTERPRETATION, "H", "High"),
    "L": Code(OBSERVATION_INTERPRETATION, "L", "Low"),
}

ENCOUNTER_CLASS_AMBULATORY = Code(ACT_CODE, "AMB", "ambulatory")
ENCOUNTER_CLASS_VIRTUAL = Code(ACT_CODE, "VR", "virtual")
ACCOUNT_TYPE_PATIENT_BILLING = Code(ACT_CODE, "PBILLACCT", "patient billing account")
PRIMARY_PERFORMER = Code(PARTICIPATION_TYPE, "PPRF", "primary performer")

ENCOUNTER_CHECKUP = Code(SNOMED, "185349003", "Encounter for check up (procedure)")
ENCOUNTER_FOLLOW_UP = Code(SNOMED, "390906007", "Follow-up encounter (procedure)")

# Slot/Appointment/Schedule.serviceType. A slot, appointment or schedule is a telehealth one
# exactly when its serviceType carries TELEHEALTH_SERVICE_TYPE (its text is "Telehealth visit").
TELEHEALTH_SERVICE_TYPE = Code(SNOMED, "448337001",
                               "Telemedicine consultation with patient (procedure)")
TELEHEALTH_SERVICE_TEXT = "Telehealth visit"
OFFICE_VISIT_SERVICE_TYPE = Code(SNOMED, "11429006", "Consultation (procedure)")
OFFICE_VISIT_SERVICE_TEXT = "Office visit"

APPOINTMENT_ROUTINE = Code(APPOINTMENT_REASON, "ROUTINE",
                           "Routine appointment - default if not valued")
APPOINTMENT_FOLLOWUP = Code(APPOINTMENT_REASON, "FOLLOWUP",
                            "A follow up visit from a previous appointment")
APPOINTMENT_CHECKUP = Code(APPOINTMENT_REASON, "CHECKUP", "A routine check-up, such as an annual "
                           "physical")

TASK_FULFILL = Code(TASK_CODE, "fulfill", "Fulfill the focal request")
DOCREF_CLINICAL_NOTE = Code(US_CORE_DOCREF_CATEGORY, "clinical-note", "Clinical Note")
PROGRESS_NOTE = Code(LOINC, "11506-3", "Progress note")
ROUTE_ORAL = Code(SNOMED, "26643006", "Oral route")
MRN_TYPE = Code(IDENTIFIER_TYPE, "MR", "Medical record number")
PROVIDER_ORGANIZATION = Code(ORGANIZATION_TYPE, "prov", "Healthcare Provider")
PHYSICAL_BUILDING = Code(LOCATION_PHYSICAL_TYPE, "bu", "Building")
PHYSICAL_VIRTUAL = Code(LOCATION_PHYSICAL_TYPE, "vi", "Virtual")
ROLE_DOCTOR = Code(PRACTITIONER_ROLE, "doctor", "Doctor")
CARE_TEAM_PCP = Code(SNOMED, "446050000", "Primary care physician (occupation)")
CARE_TEAM_PHYSICIAN = Code(SNOMED, "309343006", "Physician (occupation)")
CARE_TEAM_LONGITUDINAL = Code(LOINC, "LA28865-6", "Longitudinal care-coordination focused care "
                              "team")
COURSE_CONTINUOUS = Code(MEDREQ_COURSE_OF_THERAPY, "continuous", "Continuous long term therapy")
COURSE_ACUTE = Code(MEDREQ_COURSE_OF_THERAPY, "acute", "Short course (acute) therapy")


# --- Practice specialties ----------------------------------------------------------------------

@dataclass(frozen=True)
class Specialty:
    key: str
    snomed: str
    snomed_display: str
    nucc: str
    nucc_display: str


SPECIALTIES: dict[str, Specialty] = {s.key: s for s in (
    Specialty("family-medicine", "419772000", "Family practice", "207Q00000X", "Family Medicine"),
    Specialty("internal-medicine", "419192003", "Internal medicine", "207R00000X",
              "Internal Medicine"),
    Specialty("cardiology", "394579002", "Cardiology", "207RC0000X", "Cardiovascular Disease"),
    Specialty("endocrinology", "394583002", "Endocrinology", "207RE0101X",
              "Endocrinology, Diabetes & Metabolism"),
)}


# --- Vital signs (category vital-signs) ---------------------------------------------------------

@dataclass(frozen=True)
class VitalSign:
    key: str
    loinc: str
    display: str
    unit: str  # UCUM code
    unit_display: str
    extra_loinc: tuple[tuple[str, str], ...] = ()  # further codings of the same measurement


VITAL_SIGNS: dict[str, VitalSign] = {v.key: v for v in (
    VitalSign("bp", "85354-9", "Blood pressure panel with all children optional", "mm[Hg]",
              "mmHg"),
    VitalSign("systolic", "8480-6", "Systolic blood pressure", "mm[Hg]", "mmHg"),
    VitalSign("diastolic", "8462-4", "Diastolic blood pressure", "mm[Hg]", "mmHg"),
    VitalSign("heart-rate", "8867-4", "Heart rate", "/min", "beats/minute"),
    VitalSign("weight", "29463-7", "Body weight", "kg", "kg"),
    VitalSign("height", "8302-2", "Body height", "cm", "cm"),
    VitalSign("bmi", "39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", "kg/m2"),
    VitalSign("temperature", "8310-5", "Body temperature", "Cel", "C"),
    VitalSign("respiratory-rate", "9279-1", "Respiratory rate", "/min", "breaths/minute"),
    VitalSign("spo2", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%",
              "%", (("2708-6", "Oxygen saturation in Arterial blood"),)),
)}

VITAL_SIGN_LOINC: frozenset[str] = frozenset(
    [v.loinc for v in VITAL_SIGNS.values()]
    + [code for v in VITAL_SIGNS.values() for code, _ in v.extra_loinc])


# --- Laboratory tests with reference ranges (category laboratory) -------------------------------

@dataclass(frozen=True)
class LabTest:
    key: str
    loinc: str
    display: str
    unit: str  # UCUM code
    low: float
    high: float
    decimals: int = 0
    female_range: tuple[float, float] | None = None  # when the range differs by sex


LAB_TESTS: dict[str, LabTest] = {t.key: t for t in (
    LabTest("glucose", "2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 99),
    # Whole-blood (point-of-care meter) glucose, taken at visits of patients with diabetes.
    LabTest("blood-glucose", "2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 70, 140),
    LabTest("bun", "3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 7, 20),
    LabTest("creatinine", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL",
            0.7, 1.3, 2, (0.5, 1.1)),
    LabTest("sodium", "2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 135, 145),
    LabTest("potassium", "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L",
            3.5, 5.1, 1),
    LabTest("chloride", "2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 98, 107),
    LabTest("co2", "2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", "mmol/L",
            22, 29),
    LabTest("calcium", "17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL",
            8.6, 10.3, 1),
    LabTest("albumin", "1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL", 3.5, 5.0, 1),
    LabTest("protein", "2885-2", "Protein [Mass/volume] in Serum or Plasma", "g/dL", 6.0, 8.3, 1),
    LabTest("alt", "1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or "
            "Plasma", "U/L", 7, 56),
    LabTest("ast", "1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or "
            "Plasma", "U/L", 10, 40),
    LabTest("alp", "6768-6", "Alkaline phosphatase [Enzymatic activity/volume] in Serum or "
            "Plasma", "U/L", 44, 147),
    LabTest("bilirubin", "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL",
            0.1, 1.2, 1),
    LabTest("cholesterol", "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL",
            100, 199),
    LabTest("ldl", "18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct "
            "assay", "mg/dL", 0, 99),
    LabTest("hdl", "2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL",
            40, 100),
    LabTest("triglycerides", "2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL",
            0, 149),
    LabTest("hba1c", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 5.6, 1),
    LabTest("hemoglobin", "718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 13.5, 17.5, 1,
            (12.0, 15.5)),
    LabTest("hematocrit", "4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count",
            "%", 41, 53, 1, (36, 46)),
    LabTest("wbc", "6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL",
            4.5, 11.0, 1),
    LabTest("platelets", "777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL",
            150, 400),
    LabTest("tsh", "3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L",
            0.4, 4.0, 2),
)}


@dataclass(frozen=True)
class LabPanel:
    key: str
    loinc: str
    display: str
    tests: tuple[str, ...]  # keys of LAB_TESTS


LAB_PANELS: dict[str, LabPanel] = {p.key: p for p in (
    LabPanel("cmp", "24323-8", "Comprehensive metabolic 2000 panel - Serum or Plasma",
             ("glucose", "bun", "creatinine", "sodium", "potassium", "chloride", "co2", "calcium",
              "albumin", "protein", "alt", "ast", "alp", "bilirubin")),
    LabPanel("lipid", "57698-3", "Lipid panel with direct LDL - Serum or Plasma",
             ("cholesterol", "ldl", "hdl", "triglycerides")),
    LabPanel("cbc", "58410-2", "CBC panel - Blood by Automated count",
             ("wbc", "hemoglobin", "hematocrit", "platelets")),
    LabPanel("hba1c", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", ("hba1c",)),
    LabPanel("tsh", "3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", ("tsh",)),
)}


def interpretation(value: float, low: float, high: float) -> str:
    """The v3-ObservationInterpretation code (L, N or H) of a value against a reference range."""
    if value < low:
        return "L"
    if value > high:
        return "H"
    return "N"


# --- Conditions (SNOMED CT with the ICD-10-CM code used for billing) ---------------------------

@dataclass(frozen=True)
class ConditionCode:
    key: str
    text: str
    snomed: str
    snomed_display: str
    icd10: str
    icd10_display: str
    chronic: bool = True
    drugs: tuple[str, ...] = ()  # keys of DRUGS commonly prescribed for it, first line first
    specialty: str | None = None  # key of SPECIALTIES that co-manages it


CONDITIONS: dict[str, ConditionCode] = {c.key: c for c in (
    ConditionCode("hypertension", "Hypertension", "38341003",
                  "Hypertensive disorder, systemic arterial (disorder)", "I10",
                  "Essential (primary) hypertension", drugs=("lisinopril-10", "amlodipine-5"),
                  specialty="cardiology"),
    ConditionCode("diabetes-type-2", "Type 2 diabetes mellitus", "44054006",
                  "Diabetes mellitus type 2 (disorder)", "E11.9",
                  "Type 2 diabetes mellitus without complications", drugs=("metformin-500",),
                  specialty="endocrinology"),
    ConditionCode("hyperlipidemia", "Hyperlipidemia", "55822004", "Hyperlipidemia (disorder)",
                  "E78.5", "Hyperlipidemia, unspecified", drugs=("atorvastatin-20",),
                  specialty="cardiology"),
    ConditionCode("asthma", "Asthma", "195967001", "Asthma (disorder)", "J45.909",
                  "Unspecified asthma, uncomplicated", drugs=("albuterol-inhaler",)),
    ConditionCode("hypothyroidism", "Hypothyroidism", "40930008", "Hypothyroidism (disorder)",
                  "E03.9", "Hypothyroidism, unspecified", drugs=("levothyroxine-50",),
                  specialty="endocrinology"),
    ConditionCode("atrial-fibrillation", "Atrial fibrillation", "49436004",
                  "Atrial fibrillation (disorder)", "I48.91", "Unspecified atrial fibrillation",
                  drugs=("warfarin-5",), specialty="cardiology"),
    ConditionCode("obesity", "Obesity", "414916001", "Obesity (disorder)", "E66.9",
                  "Obesity, unspecified"),
    ConditionCode("gerd", "Gastroesophageal reflux disease", "235595009",
                  "Gastroesophageal reflux disease (disorder)", "K21.9",
                  "Gastro-esophageal reflux disease without esophagitis"),
    ConditionCode("anxiety", "Anxiety disorder", "197480006", "Anxiety disorder (disorder)",
                  "F41.9", "Anxiety disorder, unspecified"),
    ConditionCode("migraine", "Migraine", "37796009", "Migraine (disorder)", "G43.909",
                  "Migraine, unspecified, not intractable, without status migrainosus"),
    ConditionCode("osteoarthritis-knee", "Osteoarthritis of knee", "239873007",
                  "Osteoarthritis of knee (disorder)", "M17.9",
                  "Osteoarthritis of knee, unspecified"),
    ConditionCode("uri", "Upper respiratory infection", "54150009",
                  "Upper respiratory infection (disorder)", "J06.9",
                  "Acute upper respiratory infection, unspecified", chronic=False),
    ConditionCode("acute-bronchitis", "Acute bronchitis", "10509002",
                  "Acute bronchitis (disorder)", "J20.9", "Acute bronchitis, unspecified",
                  chronic=False),
)}


# --- Medications (RxNorm semantic clinical drugs) ----------------------------------------------

@dataclass(frozen=True)
class Drug:
    key: str
    rxnorm: str
    display: str  # the RxNorm SCD name
    text: str  # how a patient portal shows it
    sig: str  # dosage instruction text
    per_day: float  # units taken per day (for quantities); 0 for as-needed
    unit: str  # dispense unit (UCUM annotation)
    controlled: bool = False
    dea_schedule: str | None = None


DRUGS: dict[str, Drug] = {d.key: d for d in (
    Drug("lisinopril-10", "314076", "lisinopril 10 MG Oral Tablet", "Lisinopril 10 mg tablet",
         "Take 1 tablet by mouth once daily.", 1, "{tbl}"),
    Drug("amlodipine-5", "197361", "amlodipine 5 MG Oral Tablet", "Amlodipine 5 mg tablet",
         "Take 1 tablet by mouth once daily.", 1, "{tbl}"),
    Drug("hydrochlorothiazide-25", "310798", "hydrochlorothiazide 25 MG Oral Tablet",
         "Hydrochlorothiazide 25 mg tablet", "Take 1 tablet by mouth every morning.", 1, "{tbl}"),
    Drug("metformin-500", "860975",
         "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
         "Metformin ER 500 mg tablet", "Take 1 tablet by mouth once daily with the evening meal.",
         1, "{tbl}"),
    Drug("atorvastatin-20", "617310", "atorvastatin 20 MG Oral Tablet",
         "Atorvastatin 20 mg tablet", "Take 1 tablet by mouth once daily at bedtime.", 1,
         "{tbl}"),
    Drug("albuterol-inhaler", "745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
         "Albuterol HFA inhaler 90 mcg/actuation",
         "Inhale 2 puffs by mouth every 4 to 6 hours as needed for wheezing or shortness of "
         "breath.", 0, "{inhaler}"),
    Drug("levothyroxine-50", "966222", "levothyroxine sodium 0.05 MG Oral Tablet",
         "Levothyroxine 50 mcg tablet",
         "Take 1 tablet by mouth every morning on an empty stomach.", 1, "{tbl}"),
    Drug("warfarin-5", "855332", "warfarin sodium 5 MG Oral Tablet", "Warfarin 5 mg tablet",
         "Take 1 tablet by mouth once daily in the evening, or as directed by the clinic.", 1,
         "{tbl}"),
    Drug("oxycodone-5", "1049621", "oxycodone hydrochloride 5 MG Oral Tablet",
         "Oxycodone 5 mg tablet",
         "Take 1 tablet by mouth every 6 hours as needed for severe pain. Do not exceed 4 tablets "
         "a day.", 0, "{tbl}", controlled=True, dea_schedule="CII"),
)}

DRUGS_BY_RXNORM: dict[str, Drug] = {d.rxnorm: d for d in DRUGS.values()}
CONTROLLED_RXNORM: frozenset[str] = frozenset(d.rxnorm for d in DRUGS.values() if d.controlled)


def is_controlled(rxnorm_code: str) -> bool:
    """Whether an RxNorm code of the table is a controlled substance (no portal refills)."""
    return rxnorm_code in CONTROLLED_RXNORM


# --- Vaccines (CVX) ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Vaccine:
    key: str
    cvx: str
    display: str
    text: str


VACCINES: dict[str, Vaccine] = {v.key: v for v in (
    Vaccine("influenza", "140", "Influenza, seasonal, injectable, preservative free",
            "Influenza vaccine"),
    Vaccine("influenza-quadrivalent", "150", "Influenza, injectable, quadrivalent, preservative "
            "free", "Influenza vaccine (quadrivalent)"),
    Vaccine("covid-19-pfizer", "208", "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, "
            "preservative free, 30 mcg/0.3mL dose", "COVID-19 vaccine (Pfizer-BioNTech)"),
    Vaccine("tdap", "115", "Tdap", "Tdap (tetanus, diphtheria, pertussis)"),
    Vaccine("td", "113", "Td (adult), 5 Lf tetanus toxoid, preservative free, adsorbed",
            "Td (tetanus, diphtheria)"),
    Vaccine("pcv13", "133", "Pneumococcal conjugate PCV 13", "Pneumococcal conjugate (PCV13)"),
    Vaccine("ppsv23", "33", "pneumococcal polysaccharide PPV23", "Pneumococcal polysaccharide "
            "(PPSV23)"),
    Vaccine("hep-b-adult", "43", "Hep B, adult", "Hepatitis B vaccine"),
    Vaccine("hep-a-adult", "52", "Hep A, adult", "Hepatitis A vaccine"),
    Vaccine("zoster-recombinant", "187", "zoster recombinant", "Shingles vaccine (recombinant)"),
    Vaccine("hpv9", "165", "HPV9", "HPV vaccine (9-valent)"),
)}


# --- Allergies (SNOMED CT substances) and reactions --------------------------------------------

@dataclass(frozen=True)
class Allergen:
    key: str
    text: str
    snomed: str
    display: str
    category: str  # AllergyIntolerance.category: food | medication | environment | biologic
    reactions: tuple[str, ...]  # keys of REACTIONS
    allergy_finding: str | None = None  # SNOMED "Allergy to ..." finding, where one is used


ALLERGENS: dict[str, Allergen] = {a.key: a for a in (
    Allergen("penicillin", "Penicillin", "764146007", "Penicillin (substance)", "medication",
             ("urticaria", "skin-eruption", "anaphylaxis"), allergy_finding="91936005"),
    Allergen("aspirin", "Aspirin", "387458008", "Aspirin (substance)", "medication",
             ("urticaria", "dyspnea")),
    Allergen("ibuprofen", "Ibuprofen", "387207008", "Ibuprofen (substance)", "medication",
             ("skin-eruption", "nausea")),
    Allergen("peanut", "Peanut", "256349002", "Peanut - dietary (substance)", "food",
             ("urticaria", "anaphylaxis", "itching")),
    Allergen("shellfish", "Shellfish", "735029006", "Shellfish (substance)", "food",
             ("urticaria", "nausea")),
    Allergen("latex", "Latex", "111088007", "Latex (substance)", "environment",
             ("skin-eruption", "itching")),
    Allergen("bee-venom", "Bee venom", "288328004", "Bee venom (substance)", "environment",
             ("urticaria", "anaphylaxis")),
    Allergen("pollen", "Tree and grass pollen", "256259004", "Pollen (substance)", "environment",
             ("sneezing", "itching")),
    Allergen("dust-mite", "House dust mite", "260147004", "House dust mite (organism)",
             "environment", ("sneezing", "cough")),
    Allergen("animal-dander", "Animal dander", "264287008", "Animal dander (substance)",
             "environment", ("sneezing", "itching")),
)}

REACTIONS: dict[str, Code] = {
    "urticaria": Code(SNOMED, "126485001", "Urticaria (disorder)"),
    "skin-eruption": Code(SNOMED, "271807003", "Eruption of skin (disorder)"),
    "anaphylaxis": Code(SNOMED, "39579001", "Anaphylaxis (disorder)"),
    "itching": Code(SNOMED, "418290006", "Itching (finding)"),
    "dyspnea": Code(SNOMED, "267036007", "Dyspnea (finding)"),
    "nausea": Code(SNOMED, "422587007", "Nausea (finding)"),
    "sneezing": Code(SNOMED, "76067001", "Sneezing (finding)"),
    "cough": Code(SNOMED, "49727002", "Cough (finding)"),
}


# --- Charges of the clinic (patient share, USD) ------------------------------------------------

@dataclass(frozen=True)
class Charge:
    code: str
    display: str
    amount: float


CHARGES: dict[str, Charge] = {c.code: c for c in (
    Charge("office-visit-pcp", "Office visit, established patient (primary care copay)", 30.0),
    Charge("office-visit-specialist", "Office visit, established patient (specialist copay)",
           50.0),
    Charge("telehealth-visit", "Telehealth video visit (copay)", 20.0),
    Charge("lab-cmp", "Comprehensive metabolic panel (patient share)", 18.5),
    Charge("lab-lipid", "Lipid panel (patient share)", 15.0),
    Charge("lab-cbc", "Complete blood count (patient share)", 12.5),
    Charge("lab-hba1c", "Hemoglobin A1c (patient share)", 12.0),
    Charge("lab-tsh", "TSH (patient share)", 14.0),
)}
