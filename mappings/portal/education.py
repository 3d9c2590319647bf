"""Patient education: a small catalogue of plain-language topics, matched to a patient's codes.

Each topic is written for older patients (short sentences, no jargon): what it is, what to do,
and when to call the clinic or 911. Topics are keyed by real codes: SNOMED CT and ICD-10-CM for
conditions, RxNorm for medicines (the clinical drug and its ingredient), LOINC for test results.
A code finds a topic by system and code; an ICD-10-CM code also finds the topic of any code that
is its prefix (E11.65 finds the E11 topic), the way ICD-10-CM nests its codes.

Topics are served as R4 DocumentReferences built on the fly (not stored), in the spirit of an
HL7 Infobutton knowledge response: type LOINC 34895-3 "Education note", a base64 `text/plain`
attachment. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from mappings.terminology import ICD10CM, LOINC, RXNORM, SNOMED

EDUCATION_NOTE = {"system": LOINC, "code": "34895-3", "display": "Education note"}
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
# What a topic is about, by the code system of its codes: DocumentReference.category names the
# kind of record it explains (FHIR resource type codes), so an app can group the handouts.
ABOUT: dict[str, tuple[str, str]] = {
    SNOMED: ("Condition", "A health problem"),
    ICD10CM: ("Condition", "A health problem"),
    RXNORM: ("Medication", "A medicine"),
    LOINC: ("Observation", "A test result"),
}

# Infobutton (HL7 context-aware knowledge retrieval) names code systems by OID.
CODE_SYSTEMS: dict[str, str] = {
    "2.16.840.1.113883.6.96": SNOMED,
    "2.16.840.1.113883.6.90": ICD10CM,
    "2.16.840.1.113883.6.88": RXNORM,
    "2.16.840.1.113883.6.1": LOINC,
}


@dataclass(frozen=True)
class Topic:
    id: str  # FHIR-id-safe slug, also the DocumentReference id
    title: str
    text: str
    codes: tuple[tuple[str, str], ...]  # (system URI, code)
    language: str = "en"


def code_system(value: str) -> str | None:
    """The FHIR URI of a code system given as an OID (bare or `urn:oid:`) or a URI; None if
    the catalogue does not use that system."""
    text = value.strip()
    text = text[len("urn:oid:"):] if text.startswith("urn:oid:") else text
    if text in CODE_SYSTEMS:
        return CODE_SYSTEMS[text]
    return text if text in CODE_SYSTEMS.values() else None


def _icd_key(code: str) -> str:
    return code.strip().upper().replace(".", "")


def _lookup_keys(system: str, code: str) -> list[tuple[str, str]]:
    """The index keys a code matches: itself, and for ICD-10-CM every prefix of 3+ characters."""
    if system == ICD10CM:
        key = _icd_key(code)
        return [(system, key[:n]) for n in range(len(key), 2, -1)]
    return [(system, code.strip())]


def topics_for(codes: Iterable[tuple[str, str]]) -> list[Topic]:
    """The topics for some (system, code) pairs, in catalogue order, each once."""
    found: set[str] = set()
    for system, code in codes:
        if not isinstance(system, str) or not isinstance(code, str):
            continue
        for key in _lookup_keys(system, code):
            found.update(_INDEX.get(key, ()))
    return [t for t in TOPICS if t.id in found]


def topic_by_id(topic_id: str) -> Topic | None:
    return _BY_ID.get(topic_id)


def about(topic: Topic) -> dict:
    """DocumentReference.category of a topic: the kind of record it explains."""
    code, text = ABOUT[topic.codes[0][0]]
    return {"coding": [{"system": RESOURCE_TYPES, "code": code, "display": code}], "text": text}


def as_document_reference(topic: Topic, base: str, patient_id: str | None) -> dict:
    """An R4 DocumentReference carrying the topic as a plain-text attachment (not stored).

    `identifier` names the topic within this gateway's catalogue (`{base}/patient-education`);
    `subject` is the patient the topic was chosen for, when there is one."""
    data = f"{topic.title}\n\n{topic.text}\n".encode()
    doc: dict = {
        "resourceType": "DocumentReference",
        "id": topic.id,
        "identifier": [{"system": f"{base.rstrip('/')}/patient-education", "value": topic.id}],
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [dict(EDUCATION_NOTE)], "text": "Patient education"},
        "category": [about(topic)],
    }
    if patient_id is not None:
        doc["subject"] = {"reference": f"Patient/{patient_id}"}
    doc["description"] = topic.title
    doc["content"] = [{"attachment": {
        "contentType": "text/plain; charset=utf-8",
        "language": topic.language,
        "data": base64.b64encode(data).decode("ascii"),
        "size": len(data),
        "hash": base64.b64encode(hashlib.sha1(data).digest()).decode("ascii"),
        "title": topic.title,
    }}]
    return doc


def _t(topic_id: str, title: str, text: str, *, snomed: tuple[str, ...] = (),
       icd10: tuple[str, ...] = (), rxnorm: tuple[str, ...] = (),
       loinc: tuple[str, ...] = ()) -> Topic:
    codes = ([(SNOMED, c) for c in snomed] + [(ICD10CM, c) for c in icd10]
             + [(RXNORM, c) for c in rxnorm] + [(LOINC, c) for c in loinc])
    return Topic(topic_id, title, _reflow(text), tuple(codes))


HEADINGS = frozenset({"What it is", "What it means", "What you can do", "How to take it",
                      "How to use it", "When to get help"})


def _reflow(text: str) -> str:
    """The source's wrapped lines joined: a heading or a `- ` item starts a line, a blank line
    starts a paragraph, so an app can wrap the text to any screen."""
    lines: list[str] = []
    for raw in text.strip().splitlines():
        line = raw.strip()
        if not line:
            lines.append("")
        elif (not lines or not lines[-1] or line.startswith("- ") or line in HEADINGS
              or lines[-1] in HEADINGS):
            lines.append(line)
        else:
            lines[-1] += " " + line
    return "\n".join(lines)


# --- The catalogue -----------------------------------------------------------------------------
# Conditions first, then medicines, then test results: `topics_for` keeps this order.

TOPICS: tuple[Topic, ...] = (
    # --- Conditions (SNOMED CT, ICD-10-CM) ---
    _t("high-blood-pressure", "High blood pressure", """
What it is
Blood pressure is the force of blood pushing on the walls of your blood vessels. When it stays
high, your heart works too hard. Over time this can cause a stroke, a heart attack or kidney
damage. Most people with high blood pressure feel fine. That is why checks matter.

What you can do
- Take your blood pressure medicine every day, even when you feel well.
- Use less salt. Read food labels. Canned soups and deli meats have a lot of salt.
- Walk or stay active for 30 minutes on most days, if your doctor agrees.
- Limit alcohol. Do not smoke.
- If you have a home monitor, sit quietly for 5 minutes before you check. Write down your numbers
  and bring them to your visit.

When to get help
Call the clinic if your top number is often over 140, or if you feel dizzy after starting a new
medicine. Call 911 if your reading is 180 or higher and you have chest pain, shortness of
breath, a very bad headache, weakness on one side, trouble speaking or changes in vision.
""", snomed=("38341003", "59621000"), icd10=("I10",)),
    _t("type-2-diabetes", "Type 2 diabetes", """
What it is
Diabetes means there is too much sugar in your blood. In type 2 diabetes, your body does not use
insulin well. Insulin is what moves sugar from the blood into your cells. High sugar over many
years can harm your eyes, kidneys, nerves, feet and heart.

What you can do
- Take your diabetes medicine as your doctor told you.
- Eat regular meals. Fill half your plate with vegetables. Choose water instead of soda or juice.
- Walk or stay active most days. Even 10 minutes after a meal helps.
- Check your feet every day for cuts or sores.
- Get your A1C blood test, a yearly eye exam and a kidney test.
- If you check your sugar at home, write the numbers down and bring them to your visit.

When to get help
Call the clinic if your sugar is often over 250, or under 70. Also call if you have a sore on
your foot that does not heal. Call 911 if you are confused, very sleepy, cannot keep fluids down,
or pass out. If your sugar is low, eat or drink something sweet right away, such as half a cup
of juice.
""", snomed=("44054006",), icd10=("E11",)),
    _t("high-cholesterol", "High cholesterol", """
What it is
Cholesterol is a fat in your blood. Your body needs some of it. Too much of the "bad" kind, called
LDL, builds up in your blood vessels. This buildup can lead to a heart attack or a stroke. High
cholesterol has no symptoms. A blood test is the only way to know.

What you can do
- Take your cholesterol medicine every day, if you have one.
- Eat more vegetables, fruit, beans, oats and whole grains.
- Choose fish, chicken or beans more often than red meat.
- Cook with olive oil or canola oil instead of butter.
- Eat fewer fried foods, cookies and pastries.
- Walk or stay active most days, and do not smoke.
- Keep your appointments for blood tests, so your doctor can see how you are doing.

When to get help
Call the clinic if you have questions about your numbers or your medicine. Call 911 right away if
you have chest pain or pressure, pain in your arm, jaw or back, or sudden shortness of breath.
Also call 911 for a drooping face, weakness on one side, or trouble speaking. These can be signs
of a heart attack or a stroke.
""", snomed=("55822004", "13644009"), icd10=("E78",)),
    _t("asthma", "Asthma", """
What it is
Asthma makes the airways in your lungs swell and get narrow. This can cause wheezing, coughing,
chest tightness or shortness of breath. Asthma can flare up with colds, smoke, dust, pollen, pets,
cold air or exercise. With care, most people with asthma live active lives.

What you can do
- Know your two kinds of inhalers. A rescue inhaler works fast during a flare. A controller
  inhaler, if you have one, is used every day to prevent flares.
- Carry your rescue inhaler with you at all times.
- Stay away from smoke and other things that set off your asthma.
- Ask the clinic for a written asthma action plan, and keep it on your refrigerator.
- Get a flu shot every year.

When to get help
Call the clinic if you need your rescue inhaler more than two days a week, or if asthma wakes
you up at night. Call 911 if your rescue inhaler does not help, if you are too short of breath to
speak in full sentences, or if your lips or fingernails look blue or gray.
""", snomed=("195967001",), icd10=("J45",)),
    _t("hypothyroidism", "Underactive thyroid (hypothyroidism)", """
What it is
The thyroid is a small gland in the front of your neck. It makes a hormone that sets how fast
your body works. When it makes too little, you may feel tired, cold, slow or low in mood. You may
also gain weight, have dry skin or be constipated.

What you can do
- Take your thyroid pill every morning on an empty stomach, with a full glass of water.
- Wait 30 to 60 minutes before you eat breakfast or drink coffee.
- Take calcium, iron or antacids at least 4 hours apart from your thyroid pill.
- Take it at the same time every day. Do not stop it on your own.
- Get your thyroid blood test (TSH) when your doctor asks. Your dose may need to change.
- It can take several weeks to feel better after a dose change.

When to get help
Call the clinic if you feel more tired, shaky, or have trouble sleeping after a dose change.
Call the clinic if your heart races or pounds. Call 911 if you have chest pain, trouble breathing,
or you are very confused or hard to wake up.
""", snomed=("40930008",), icd10=("E03",)),
    _t("atrial-fibrillation", "Atrial fibrillation (AFib)", """
What it is
Atrial fibrillation, or AFib, is an uneven heartbeat. The top part of your heart quivers instead
of beating in a steady way. You may feel your heart flutter or race. You may feel tired, dizzy or
short of breath. Some people feel nothing at all. AFib can let blood clots form in the heart. A
clot can travel to the brain and cause a stroke.

What you can do
- Take your medicines every day. Many people with AFib take a blood thinner to prevent stroke.
- Limit alcohol and caffeine if they set off your symptoms.
- Tell every doctor and dentist that you have AFib and which medicines you take.
- Keep your blood pressure under control.
- Keep all your follow-up visits and blood tests.

When to get help
Call the clinic if your heart races often, or if you feel more tired or short of breath than
usual. Call 911 right away for chest pain, fainting, or signs of a stroke. Signs of a stroke
are a drooping face, weakness in an arm or leg, or trouble speaking. Note the time the signs
began.
""", snomed=("49436004",), icd10=("I48",)),
    _t("obesity", "Healthy weight", """
What it is
Carrying extra weight puts strain on your heart, joints and lungs. It raises the chance of
diabetes, high blood pressure and sleep problems. Your doctor may use your body mass index, or
BMI, to check your weight for your height. Small changes can make a big difference. Losing even
5 to 10 pounds can help your blood pressure and blood sugar.

What you can do
- Set one small goal at a time, such as a 10-minute walk after dinner.
- Eat slowly, and use a smaller plate.
- Fill half your plate with vegetables.
- Drink water instead of soda, juice or sweet tea.
- Keep healthy snacks at home, such as fruit or nuts.
- Try to sleep 7 to 8 hours a night.
- Ask the clinic about a dietitian or a weight program.

When to get help
Call the clinic if you gain or lose weight fast without trying, or if you snore loudly and feel
sleepy all day. Call 911 if you have chest pain, severe shortness of breath, or you faint.
""", snomed=("414916001",), icd10=("E66",), loinc=("39156-5",)),
    _t("acid-reflux", "Acid reflux (GERD)", """
What it is
GERD means stomach acid often flows back up into the tube that carries food to your stomach.
This can cause heartburn, a sour taste in your mouth, a cough or a hoarse voice. Symptoms are
often worse after big meals or when you lie down.

What you can do
- Eat smaller meals. Stop eating 3 hours before bed.
- Raise the head of your bed about 6 inches, or sleep on a wedge pillow.
- Cut down on foods that bother you, such as fried or fatty food, spicy food, tomato, chocolate,
  mint, coffee and alcohol.
- Do not smoke.
- Wear clothes that are loose around your waist.
- Take your reflux medicine as the label or your doctor says.

When to get help
Call the clinic if you have heartburn more than twice a week, trouble swallowing, or weight loss
without trying. Also call if you vomit often. Call 911 if you have chest pain, especially with
sweating or shortness of breath. Heart pain can feel like heartburn. Also call 911 if you vomit
blood or have black, tarry stools.
""", snomed=("235595009",), icd10=("K21",)),
    _t("anxiety", "Anxiety", """
What it is
Anxiety is a feeling of worry, fear or unease. Everyone feels anxious sometimes. An anxiety
disorder is when the worry is strong, lasts a long time, and gets in the way of daily life. You
may feel restless, tense or tired. Your heart may race. You may have trouble sleeping. Anxiety is
common and it can be treated.

What you can do
- Take your medicine as prescribed, if you have one. Do not stop it suddenly.
- Try slow breathing. Breathe in for 4 counts and out for 6 counts, for a few minutes.
- Walk or stay active most days.
- Cut back on caffeine and alcohol.
- Keep a regular sleep time.
- Talk with someone you trust. Ask the clinic about counseling. Talk therapy works well.

When to get help
Call the clinic if anxiety keeps you from doing daily tasks, or if your medicine is not helping.
Call 911 if you have chest pain or trouble breathing. If you have thoughts of hurting yourself,
call or text 988, the Suicide and Crisis Lifeline, or call 911.
""", snomed=("197480006",), icd10=("F41",)),
    _t("migraine", "Migraine headaches", """
What it is
A migraine is a strong, throbbing headache. It is often on one side of the head. It can come with
an upset stomach, vomiting, or being bothered by light and sound. Some people see flashing lights
or zigzag lines before the pain starts. A migraine can last a few hours or a few days.

What you can do
- Take your migraine medicine as soon as the headache starts. It works best early.
- Rest in a dark, quiet room. Put a cool cloth on your forehead.
- Keep a headache diary. Write down what you ate, how you slept and what you were doing.
- Common triggers are missed meals, poor sleep, stress, alcohol and strong smells.
- Do not take pain pills more than 2 or 3 days a week. Taking them too often can cause more
  headaches.
- Drink plenty of water.

When to get help
Call the clinic if your headaches get more frequent or your medicine stops working. Call 911 for
the worst headache of your life, a headache that starts suddenly like a thunderclap, or a
headache with fever and a stiff neck. Also call 911 for weakness, confusion or trouble speaking.
""", snomed=("37796009",), icd10=("G43",)),
    _t("osteoarthritis", "Osteoarthritis (wear-and-tear arthritis)", """
What it is
Osteoarthritis happens when the smooth cushion at the ends of your bones wears down over time.
It often affects the knees, hips and hands. Joints may be stiff, sore or swollen. Stiffness is
often worse in the morning or after sitting for a long time.

What you can do
- Keep moving. Gentle exercise like walking, swimming or a stationary bike helps your joints.
- Ask the clinic about physical therapy to make the muscles around the joint stronger.
- Use heat for stiffness, and ice for swelling, for 15 to 20 minutes at a time.
- Losing some weight takes stress off the knees and hips.
- Use a cane or walker if your doctor suggests one. It can prevent falls.
- Ask before you take pain pills every day. Some can upset your stomach, kidneys or blood
  pressure.

When to get help
Call the clinic if the pain keeps you from sleeping or walking, or if a joint is red, hot and
very swollen. Call 911 after a fall if you cannot get up, cannot put weight on your leg, or hit
your head.
""", snomed=("239873007", "396275006"), icd10=("M15", "M16", "M17", "M18", "M19")),
    _t("common-cold", "Colds and upper respiratory infections", """
What it is
A cold is an infection of the nose and throat. It is caused by a virus. You may have a runny or
stuffy nose, sore throat, sneezing, cough or a mild fever. Most colds get better in 7 to 10
days. Antibiotics do not work against viruses, so they will not help a cold.

What you can do
- Rest and drink plenty of fluids, such as water, broth or warm tea.
- Gargle with warm salt water for a sore throat.
- Use saline nose spray for a stuffy nose.
- Ask a pharmacist before you take cold medicine. Some raise blood pressure or cause confusion
  in older adults.
- Wash your hands often, and cover your cough, to protect others.
- Get your yearly flu shot.

When to get help
Call the clinic if your fever lasts more than 3 days, or if you feel better and then worse again.
Also call if you have ear pain or sinus pain that does not go away. Call 911 if you have trouble
breathing, chest pain, or confusion, or if your lips look blue.
""", snomed=("54150009", "82272006"), icd10=("J00", "J06")),
    _t("acute-bronchitis", "Acute bronchitis (chest cold)", """
What it is
Acute bronchitis is swelling of the airways that carry air to your lungs. It often follows a
cold. It is most often caused by a virus. The main sign is a cough. The cough may bring up mucus
and can last up to 3 weeks. You may also feel tired or have a mild fever. Antibiotics usually do
not help.

What you can do
- Rest and drink plenty of fluids.
- Use a humidifier, or breathe in steam from a warm shower.
- Honey in warm water or tea can soothe a cough.
- Do not smoke, and stay away from smoke.
- Ask a pharmacist before you use cough medicine.
- Wash your hands often to protect others.

When to get help
Call the clinic if your cough lasts more than 3 weeks, or if you have a fever over 101 degrees.
Also call if you cough up blood, or if you have heart or lung disease and feel worse. Call 911
if you are very short of breath, have chest pain, or your lips look blue.
""", snomed=("10509002",), icd10=("J20",)),
    _t("prediabetes", "Prediabetes", """
What it is
Prediabetes means your blood sugar is higher than normal, but not high enough to be diabetes.
It is a warning sign. Without changes, many people with prediabetes get type 2 diabetes within a
few years. The good news is that small steps can bring your blood sugar back to normal.

What you can do
- Walk or stay active for 30 minutes on 5 days a week.
- If you are overweight, losing 5 to 7 percent of your weight helps a lot. For a 200-pound
  person, that is 10 to 14 pounds.
- Drink water instead of soda, juice or sweet tea.
- Eat more vegetables, beans and whole grains. Eat fewer sweets and white bread.
- Ask the clinic about a diabetes prevention program.
- Get your blood sugar checked every year.

When to get help
Call the clinic if you are very thirsty, urinate often, have blurry vision or lose weight without
trying. These can be signs of diabetes. Call 911 if you are confused, very weak, or cannot keep
fluids down.
""", snomed=("714628002",), icd10=("R73.0",)),
    _t("chronic-kidney-disease", "Chronic kidney disease", """
What it is
Your kidneys clean waste and extra water from your blood. In chronic kidney disease, the kidneys
slowly lose some of their ability to do this. High blood pressure and diabetes are the most
common causes. Early on, most people feel nothing. Blood and urine tests show how well your
kidneys work.

What you can do
- Keep your blood pressure and blood sugar under control.
- Take your medicines as prescribed.
- Avoid pain pills like ibuprofen and naproxen unless your doctor says they are safe.
- Show every new medicine, vitamin or herb to your doctor or pharmacist first.
- Use less salt.
- Ask the clinic whether you should limit potassium or protein.
- Get your kidney blood and urine tests when asked.

When to get help
Call the clinic if your legs or ankles swell, you urinate much less than usual, or you feel very
tired or itchy. Call 911 if you have trouble breathing, chest pain, a very slow or uneven
heartbeat, or confusion.
""", snomed=("709044004",), icd10=("N18",)),
    _t("heart-failure", "Heart failure", """
What it is
Heart failure means your heart does not pump as well as it should. It does not mean your heart
has stopped. Fluid can build up in your lungs, legs and belly. You may feel short of breath or
tired. Your ankles may swell.

What you can do
- Weigh yourself every morning, after you use the toilet and before you eat. Write it down.
- Take your medicines every day, just as prescribed.
- Eat less salt. Aim for less than 2,000 mg of sodium a day.
- Ask how much fluid you should drink each day.
- Stay as active as your doctor says is safe.
- Sleep with extra pillows if you are short of breath lying flat.
- Do not smoke, and limit alcohol.

When to get help
Call the clinic if you gain 2 to 3 pounds in one day, or 5 pounds in one week. Also call if your
swelling gets worse, or you need more pillows to sleep. Call 911 if you are very short of breath
at rest, have chest pain, cough up pink foamy mucus, or faint.
""", snomed=("84114007",), icd10=("I50",)),
    _t("copd", "COPD", """
What it is
COPD stands for chronic obstructive pulmonary disease. It is a long-term lung disease that makes
it hard to breathe out. It includes emphysema and chronic bronchitis. Smoking is the most common
cause. You may cough, bring up mucus, wheeze or get short of breath with activity.

What you can do
- If you smoke, quitting is the best thing you can do. Ask the clinic for help.
- Use your inhalers every day as prescribed. Ask the clinic to check how you use them.
- Get a flu shot every year, and ask about pneumonia and other vaccines.
- Stay active. Ask about pulmonary rehab, a program of exercise and breathing training.
- Try pursed-lip breathing. Breathe in through your nose, then out slowly through pursed lips.
- Keep a written COPD action plan.

When to get help
Call the clinic if you are more short of breath than usual, or if your mucus changes color or
amount. Also call if you have a fever. Call 911 if you cannot catch your breath, have chest pain,
or are confused or very sleepy, or if your lips look blue.
""", snomed=("13645005",), icd10=("J44",)),
    _t("depression", "Depression", """
What it is
Depression is more than feeling sad for a day or two. It is a medical condition. It can make you
feel sad, empty or hopeless for weeks. You may lose interest in things you used to enjoy. You
may sleep too much or too little, or feel tired. It can be hard to think or make decisions.
Depression is common in older adults. It is not a normal part of aging, and it can be treated.

What you can do
- Take your medicine every day, if you have one. It can take 4 to 6 weeks to work. Do not stop it
  on your own.
- Ask the clinic about talk therapy.
- Stay in touch with family and friends. Try to go outside every day.
- Walk or move your body, even for a few minutes.
- Avoid alcohol. It can make depression worse.

When to get help
Call the clinic if you feel worse, or if your medicine is not helping after a few weeks. If you
have thoughts of hurting yourself or of suicide, get help right now. Call or text 988, the
Suicide and Crisis Lifeline, or call 911.
""", snomed=("35489007",), icd10=("F32", "F33")),
    _t("anemia", "Anemia (low red blood cells)", """
What it is
Anemia means you have fewer healthy red blood cells than normal. Red blood cells carry oxygen to
your body. With anemia you may feel tired, weak, cold or dizzy. You may look pale or get short of
breath. Common causes are low iron, low vitamin B12, blood loss and long-term illness.

What you can do
- Your doctor may order more blood tests to find the cause.
- If you take iron pills, take them with a little orange juice. Vitamin C helps your body use
  the iron. Iron can turn your stool dark and cause constipation.
- Take iron 2 hours apart from antacids, calcium and thyroid pills.
- Eat foods rich in iron, such as beans, lentils, lean meat, eggs, spinach and iron-fortified
  cereal.
- Stand up slowly to avoid dizziness.

When to get help
Call the clinic if you feel more tired or short of breath than usual, or if your stools are black
or bloody. Call 911 if you have chest pain, a racing heartbeat, trouble breathing, or you faint.
""", snomed=("271737000",), icd10=("D50", "D64.9")),
    _t("osteoporosis", "Osteoporosis (thin bones)", """
What it is
Osteoporosis means your bones have become thin and weak. Weak bones can break easily, even from
a small fall. Breaks of the hip, spine and wrist are most common. Osteoporosis has no symptoms
until a bone breaks. A bone density scan can find it early.

What you can do
- Get enough calcium and vitamin D. Milk, yogurt, cheese, canned salmon and leafy greens help.
  Ask the clinic if you need a supplement.
- Do weight-bearing exercise, such as walking, and exercises for balance.
- Make your home safe from falls. Remove loose rugs, add night lights, and use grab bars in the
  bathroom.
- Wear sturdy shoes with non-slip soles.
- Do not smoke, and limit alcohol.
- Take your bone medicine as directed. Some must be taken with water on an empty stomach, sitting
  upright.

When to get help
Call the clinic if you have new back pain, lose height, or your posture becomes stooped. Call
911 after a fall if you cannot get up, cannot move or put weight on a limb, or hit your head.
""", snomed=("64859006",), icd10=("M80", "M81")),
    _t("hyperthyroidism", "Overactive thyroid (hyperthyroidism)", """
What it is
The thyroid is a small gland in the front of your neck. It makes a hormone that controls how fast
your body works. When it makes too much, your body speeds up. You may feel nervous, shaky or hot.
Your heart may race. You may lose weight, sweat a lot, or have trouble sleeping.

What you can do
- Take your medicine exactly as prescribed. Do not stop it on your own.
- Get your thyroid blood tests when asked. Your dose may need to change.
- Cut back on caffeine. It can make a racing heart and shakiness worse.
- Ask before you take cold medicines, since some can speed up your heart.
- Eat regular meals to keep up your weight.
- Tell the clinic if your eyes feel gritty, or look red or bulging.

When to get help
Call the clinic if you have a fever or sore throat while on thyroid medicine. Some of these
medicines can lower your ability to fight infection. Call 911 if your heart is racing and will
not slow down, or if you have chest pain, trouble breathing, high fever or confusion.
""", snomed=("34486009",), icd10=("E05",)),

    # --- Medicines (RxNorm: the clinical drugs of the clinic and their ingredients) ---
    _t("lisinopril", "Lisinopril", """
What it is
Lisinopril is a medicine for high blood pressure. It is also used for heart failure and to
protect the kidneys in people with diabetes. It relaxes your blood vessels, so blood flows more
easily. It belongs to a group of medicines called ACE inhibitors.

How to take it
- Take it once a day, at the same time each day, with or without food.
- Keep taking it even when you feel well.
- Stand up slowly, especially in the first few days. It can make you dizzy.
- Do not use salt substitutes or potassium pills unless your doctor says so. Lisinopril can
  raise your potassium.
- You will need blood tests to check your kidneys and potassium.
- A dry, tickly cough is a common side effect. Tell the clinic if it bothers you.

When to get help
Call the clinic if you feel dizzy or faint, have a cough that will not go away, or are sick with
vomiting or diarrhea and cannot drink. Call 911 right away if your lips, tongue, face or throat
swell, or if you have trouble breathing or swallowing. This is a rare but serious reaction.
""", rxnorm=("314076", "29046")),
    _t("amlodipine", "Amlodipine", """
What it is
Amlodipine is a medicine for high blood pressure. It can also help prevent some kinds of chest
pain. It relaxes and widens your blood vessels, so your heart does not have to work as hard. It
belongs to a group called calcium channel blockers.

How to take it
- Take it once a day, at the same time each day, with or without food.
- Keep taking it even when you feel well. Do not stop it suddenly.
- Swelling of the ankles and feet is a common side effect. Putting your feet up can help.
- You may have a headache, flushing or feel dizzy at first. This often gets better in a week or
  two.
- Stand up slowly if you feel lightheaded.
- Check your blood pressure at home if you have a monitor, and bring the numbers to your visit.

When to get help
Call the clinic if your ankles swell a lot, you feel dizzy, or your heart beats fast or pounds.
Call 911 if you have chest pain that is new or worse, trouble breathing, or you faint.
""", rxnorm=("197361", "17767")),
    _t("hydrochlorothiazide", "Hydrochlorothiazide (water pill)", """
What it is
Hydrochlorothiazide is a water pill. It helps your body get rid of extra salt and water through
your urine. This lowers your blood pressure. It is often called HCTZ.

How to take it
- Take it in the morning, so you are not up at night to use the bathroom.
- You will urinate more often for a few hours after each dose.
- Keep taking it even when you feel well.
- Stand up slowly. It can make you dizzy, especially in hot weather.
- You will need blood tests. It can lower your potassium and sodium.
- Your skin may burn more easily in the sun. Use sunscreen and wear a hat.
- If you have diabetes or gout, it can raise your blood sugar or uric acid. Your doctor will
  check.

When to get help
Call the clinic if you have muscle cramps, weakness, or are very thirsty. Also call if you are
sick with vomiting or diarrhea and cannot drink. Call 911 if you faint, are confused, or have a
very fast or uneven heartbeat.
""", rxnorm=("310798", "5487")),
    _t("metformin", "Metformin", """
What it is
Metformin is a medicine for type 2 diabetes. It lowers your blood sugar. It helps your body use
insulin better and makes your liver release less sugar. It does not usually cause low blood sugar
when taken alone.

How to take it
- Take it with a meal. The long-acting (ER) kind is usually taken with the evening meal.
- Swallow ER tablets whole. Do not crush or chew them.
- Upset stomach, gas or loose stools are common at first. Taking it with food helps. These often
  get better in a few weeks.
- Limit alcohol.
- Tell the staff you take metformin before any scan with contrast dye, or before surgery.
- Your doctor will check your kidney function and vitamin B12 from time to time.

When to get help
Call the clinic if stomach problems do not go away, or if you are sick and cannot eat or drink.
Call 911 if you have severe weakness, trouble breathing, unusual muscle pain, a slow or uneven
heartbeat, or feel very cold and dizzy. These may be signs of a rare but serious problem called
lactic acidosis.
""", rxnorm=("860975", "6809")),
    _t("atorvastatin", "Atorvastatin", """
What it is
Atorvastatin is a medicine that lowers cholesterol. It belongs to a group called statins. It
lowers the "bad" cholesterol, called LDL. This helps prevent heart attacks and strokes.

How to take it
- Take it once a day, at the same time each day, with or without food.
- Keep taking it even when your numbers look good. The medicine is what keeps them good.
- Avoid drinking large amounts of grapefruit juice. It can raise the amount of the medicine in
  your blood.
- Tell your doctor and pharmacist about all your other medicines. Some can interact with it.
- Mild muscle aches can happen. Tell the clinic about them.
- You will have blood tests to check your cholesterol and sometimes your liver.
- Keep eating healthy foods and staying active. The medicine works best with them.

When to get help
Call the clinic if you have muscle pain, tenderness or weakness that you cannot explain. Also
call if you have dark urine, or your skin or eyes turn yellow. Call 911 if you have chest pain,
trouble breathing, or signs of a stroke.
""", rxnorm=("617310", "83367")),
    _t("albuterol-inhaler", "Albuterol inhaler (rescue inhaler)", """
What it is
Albuterol is a quick-relief medicine for wheezing and shortness of breath. It opens the airways
in your lungs within minutes. It is often called a rescue inhaler. It does not prevent flares.

How to use it
- Shake the inhaler well. Breathe out all the way.
- Put the mouthpiece in your mouth. Press down once as you start to breathe in slowly and deeply.
- Hold your breath for about 10 seconds. Wait one minute before a second puff.
- A spacer can help more medicine reach your lungs. Ask the clinic for one.
- Carry it with you. Keep track of how many puffs are left.
- You may feel shaky or notice your heart beating faster. This usually passes quickly.

When to get help
Call the clinic if you need your rescue inhaler more than two days a week, or more often than
usual. That means your breathing is not well controlled. Call 911 if the inhaler does not help,
you cannot speak in full sentences, you have chest pain, or your lips or fingernails look blue.
""", rxnorm=("745679", "435")),
    _t("levothyroxine", "Levothyroxine", """
What it is
Levothyroxine is a thyroid hormone pill. It replaces the hormone your thyroid gland does not
make enough of. It is used to treat an underactive thyroid. Most people take it for life.

How to take it
- Take it once a day in the morning, on an empty stomach, with a full glass of water.
- Wait 30 to 60 minutes before you eat breakfast or drink coffee.
- Take calcium, iron, antacids and some vitamins at least 4 hours apart from it.
- Take it the same way every day. Use the same brand if you can. Do not switch without asking.
- Do not stop it on your own, even if you feel well.
- You will need a blood test called TSH to check your dose, often 6 to 8 weeks after a change.

When to get help
Call the clinic if you feel shaky, nervous, hot or sweaty, or cannot sleep. These can be signs
your dose is too high. Also call if you still feel very tired, cold or slow. Call 911 if you
have chest pain, a racing or pounding heartbeat, or trouble breathing.
""", rxnorm=("966222", "10582")),
    _t("warfarin", "Warfarin (blood thinner)", """
What it is
Warfarin is a blood thinner. It helps prevent harmful blood clots. Clots can cause a stroke, or
block blood flow in the legs or lungs. Because warfarin slows clotting, you can bleed more easily.

How to take it
- Take it at the same time every day, usually in the evening. Follow the dose the clinic gives
  you. It may change.
- You need a regular blood test called INR. It tells the clinic if your dose is right.
- Keep the amount of green leafy vegetables you eat about the same each week. They contain
  vitamin K, which changes how warfarin works.
- Check with the clinic before you start or stop any medicine, vitamin, herb or supplement. Do
  not take aspirin or ibuprofen unless your doctor says so.
- Limit alcohol.
- Use a soft toothbrush and an electric razor. Tell your dentist you take warfarin.

When to get help
Call the clinic if you have bleeding gums, nosebleeds, easy bruising or pink urine. Call 911 if
you fall and hit your head, vomit blood, have black or bloody stools, bleeding that will not
stop, a very bad headache, or signs of a stroke.
""", rxnorm=("855332", "11289")),
    _t("oxycodone", "Oxycodone (opioid pain medicine)", """
What it is
Oxycodone is a strong pain medicine. It is an opioid. It is used for a short time for severe
pain. Opioids can cause drowsiness, constipation and dependence. Too much can slow or stop your
breathing.

How to take it
- Take it only as prescribed, and only when you need it for severe pain.
- Never take more than your doctor ordered.
- Do not drink alcohol. Do not take it with sleeping pills, anxiety pills or other opioids.
- Do not drive until you know how it affects you.
- Drink fluids and eat fiber to prevent constipation. Ask about a stool softener.
- Keep it locked up and away from children and visitors.
- Bring unused pills to a drug take-back site.
- Ask the clinic about naloxone (Narcan). It can reverse an overdose. Keep it at home and show
  your family how to use it.

When to get help
Call the clinic if your pain is not controlled, or if you are very constipated or sleepy. Call
911 if someone is very hard to wake up, breathing very slowly, or has blue lips. Give naloxone if
you have it, then call 911.
""", rxnorm=("1049621", "7804")),

    # --- Test results (LOINC) ---
    _t("blood-pressure-reading", "Your blood pressure reading", """
What it means
Blood pressure has two numbers. The top number is the pressure when your heart beats. The bottom
number is the pressure when your heart rests between beats. For most adults, a reading under 130
over 80 is a good goal. Your doctor may set a different goal for you. One high reading does not
always mean a problem. Pain, stress, coffee or rushing can raise it for a short time.

What you can do
- If you have a home monitor, sit quietly for 5 minutes first. Keep your feet flat and your arm
  resting at heart level.
- Check at the same times each day. Write the numbers down and bring them to your visit.
- Take your blood pressure medicine every day, if you have one.
- Use less salt, stay active and limit alcohol.
- Stand up slowly if a low reading makes you dizzy.

When to get help
Call the clinic if your readings are often over 140 on top or 90 on the bottom. Also call if
they are under 90 on top and you feel dizzy. Call 911 if your reading is 180 or higher with chest
pain, shortness of breath, a very bad headache, weakness or trouble speaking.
""", loinc=("85354-9", "55284-4", "8480-6", "8462-4")),
    _t("a1c-test", "Your A1C test", """
What it means
The A1C test shows your average blood sugar over the last 2 to 3 months. It is given as a
percent. Below 5.7 percent is normal. From 5.7 to 6.4 percent is prediabetes. A result of 6.5
percent or higher can mean diabetes. Many people with diabetes aim for below 7 percent. Your
doctor may set a different goal for you. A high A1C means your sugar has been high much of the
time.

What you can do
- Take your diabetes medicines as prescribed, if you have them.
- Eat regular meals. Choose vegetables, beans and whole grains. Cut back on sweets, white bread
  and sugary drinks.
- Walk or stay active most days.
- If you check your sugar at home, keep a log and bring it to your visit.
- Get the A1C test again when your doctor asks, often every 3 to 6 months.

When to get help
Call the clinic to talk about your result and your plan. Call sooner if you are very thirsty,
urinate often, or have blurry vision. Call 911 if you are confused, very sleepy, or cannot keep
fluids down.
""", loinc=("4548-4", "17856-6")),
    _t("blood-sugar-test", "Your blood sugar (glucose) test", """
What it means
Glucose is the sugar in your blood. It gives your body energy. A normal fasting level is 70 to 99.
Fasting means nothing to eat for 8 hours. A high result can be a sign of prediabetes or
diabetes. It can also happen if you ate before the test, were ill, or take steroid medicines. A
low result, under 70, can make you shaky, sweaty or confused.

What you can do
- Your doctor may repeat the test or order an A1C test.
- Eat regular meals. Do not skip meals if you take diabetes medicine.
- Choose water over soda and juice. Cut back on sweets and white bread.
- Stay active most days.
- If your sugar runs low, carry glucose tablets or a small juice box.

When to get help
Call the clinic if your home readings are often over 250, or if you have low sugar more than once
a week. If you feel the signs of low sugar, eat or drink something sweet right away, then
recheck. Call 911 if someone with low sugar is confused, passes out, or cannot swallow.
""", loinc=("2345-7", "2339-0", "1558-6")),
    _t("cholesterol-test", "Your cholesterol test", """
What it means
A cholesterol test, or lipid panel, measures fats in your blood. LDL is the "bad" cholesterol. It
builds up in blood vessels. HDL is the "good" cholesterol. It helps clear LDL away. Triglycerides
are another kind of fat. They rise with sweets, alcohol and extra weight. A high LDL or
triglyceride level, or a low HDL, raises the chance of a heart attack or stroke. Your goal depends
on your health.

What you can do
- Eat more vegetables, fruit, beans, oats and fish.
- Cut back on fried food, butter, fatty meat, sweets and alcohol.
- Walk or stay active most days.
- Do not smoke.
- Take your cholesterol medicine every day, if you have one.
- Your doctor may repeat the test in a few months.

When to get help
Call the clinic to talk about your results and whether you need medicine. Call 911 if you have
chest pain or pressure, pain in your arm or jaw, or sudden shortness of breath. Also call 911 for
a drooping face, weakness on one side, or trouble speaking.
""", loinc=("2093-3", "18262-6", "13457-7", "2089-1", "2085-9", "2571-8", "57698-3")),
    _t("kidney-function-test", "Your kidney function tests", """
What it means
Creatinine and BUN are waste products in your blood. Healthy kidneys remove them. A high level
can mean your kidneys are not working as well as they should. It can also happen if you are low
on fluids, or because of some medicines. Your doctor may use the creatinine to estimate your GFR.
GFR is a number for how well your kidneys filter.

What you can do
- Drink enough fluids, unless your doctor has told you to limit them.
- Avoid pain pills like ibuprofen and naproxen unless your doctor says they are safe.
- Keep your blood pressure and blood sugar under control.
- Bring all your medicines, vitamins and herbs to your next visit. Some doses may need to change.
- Your doctor may repeat the test or order a urine test.

When to get help
Call the clinic if you urinate much less than usual, or your legs or ankles swell. Also call if
you are sick with vomiting or diarrhea and cannot drink. Call 911 if you have trouble breathing,
chest pain, an uneven heartbeat, or confusion.
""", loinc=("2160-0", "3094-0", "33914-3", "62238-1")),
    _t("hemoglobin-test", "Your hemoglobin and hematocrit test", """
What it means
Hemoglobin carries oxygen in your red blood cells. Hematocrit is the share of your blood made up
of red blood cells. A low level is called anemia. It can make you tired, weak, dizzy or short of
breath. It can come from low iron, low vitamins, blood loss or other illness. A high level is
less common. It can happen if you are low on fluids, smoke, or have a lung or blood condition.

What you can do
- Your doctor may order more tests to find the cause.
- Eat foods rich in iron, such as beans, lean meat, eggs and leafy greens.
- Take iron or vitamin pills only as your doctor advises.
- Stand up slowly if you feel dizzy.
- Do not smoke.

When to get help
Call the clinic if you feel more tired or short of breath than usual. Also call if you notice
black or bloody stools, or heavy bleeding. Call 911 if you have chest pain, a racing heartbeat,
trouble breathing, or you faint.
""", loinc=("718-7", "4544-3")),
    _t("thyroid-test", "Your thyroid test (TSH)", """
What it means
TSH is a hormone that tells your thyroid gland how hard to work. When TSH is high, your thyroid
is usually making too little hormone. This can make you tired, cold or slow. When TSH is low,
your thyroid is usually making too much. This can make you shaky, hot or make your heart race.
If you take thyroid medicine, TSH shows if your dose is right.

What you can do
- Take your thyroid medicine the same way every day, if you have one.
- Do not change your dose on your own. Your doctor will tell you if it needs to change.
- Some supplements, like biotin, can change the test result. Tell the clinic what you take.
- Your doctor may repeat the test, often in 6 to 8 weeks.

When to get help
Call the clinic if you feel shaky, nervous or cannot sleep, or if you feel very tired, cold or
slow. Call 911 if you have chest pain, a very fast or pounding heartbeat, trouble breathing, or
confusion.
""", loinc=("3016-3", "3024-7")),
    _t("potassium-test", "Your potassium test", """
What it means
Potassium is a mineral that helps your nerves, muscles and heart work. Too much or too little can
affect your heartbeat. A high level can come from kidney problems or some blood pressure
medicines. A low level can come from water pills, vomiting or diarrhea. Sometimes the result is
off because of how the blood was drawn. Your doctor may repeat the test.

What you can do
- Keep taking your medicines unless the clinic tells you to change them.
- If your level is high, do not use salt substitutes. Many contain potassium. Ask before you eat
  a lot of bananas, oranges, potatoes or tomatoes.
- If your level is low, your doctor may suggest potassium-rich foods or a potassium pill.
- Do not take potassium pills unless your doctor tells you to.

When to get help
Call the clinic if you have muscle weakness or cramps, or are sick with vomiting or diarrhea.
Call 911 if you have an uneven, very slow or very fast heartbeat, chest pain, or sudden severe
weakness.
""", loinc=("2823-3",)),
    _t("sodium-test", "Your sodium test", """
What it means
Sodium is a salt that helps keep the right amount of water in your body. It also helps your
nerves and muscles work. A low level can come from water pills, some other medicines, heart or
kidney problems, or drinking a lot of water. A high level often means you are low on fluids.
Mild changes may cause no symptoms. Larger changes can cause headache, tiredness, confusion or
falls.

What you can do
- Your doctor may repeat the test, and may change a medicine.
- Do not stop a medicine on your own.
- If your level is high, drink fluids as your doctor advises, especially in hot weather.
- If your level is low, ask the clinic how much fluid you should drink each day.
- Tell the clinic about any vomiting, diarrhea or new medicines.

When to get help
Call the clinic if you feel more tired, have a headache, nausea or muscle cramps, or feel
unsteady. Call 911 if you are confused, have a seizure, are very hard to wake up, or have a bad
fall.
""", loinc=("2951-2",)),
    _t("chloride-bicarbonate-test", "Your chloride and carbon dioxide tests", """
What it means
Chloride and carbon dioxide, also called bicarbonate, are part of a basic blood chemistry panel.
They help keep your body's fluids and acid balance steady. A result slightly out of range is
common and often not serious. Results can change with vomiting, diarrhea, low fluids, lung
problems, kidney problems or some medicines. Your doctor reads them together with your other
results.

What you can do
- Drink enough fluids, unless your doctor has told you to limit them.
- Tell the clinic if you have had vomiting, diarrhea or a new medicine.
- Your doctor may repeat the test.
- Keep taking your medicines unless the clinic tells you to change them.

When to get help
Call the clinic if you feel weak, very tired or short of breath, or cannot keep fluids down. Call
911 if you have trouble breathing, chest pain, confusion, or you faint. Fast, deep breathing that
you cannot control is also a reason to call 911.
""", loinc=("2075-0", "2028-9")),
    _t("calcium-test", "Your calcium test", """
What it means
Calcium keeps your bones strong. It also helps your muscles, nerves and heart work. A high level
can come from too many calcium or vitamin D pills, some water pills, or a problem with small
glands in the neck. A low level can come from low vitamin D, low protein in the blood, or kidney
problems. Your doctor may check your albumin and vitamin D along with calcium.

What you can do
- Bring all your vitamins and supplements to your visit, so the clinic can review them.
- Do not start or stop calcium or vitamin D pills on your own.
- If your level is high, drink plenty of water, unless you were told to limit fluids.
- Your doctor may repeat the test.

When to get help
Call the clinic if you are very thirsty, constipated, confused, or have belly pain or kidney
stones. Also call if you have tingling around your mouth or in your fingers, or muscle cramps.
Call 911 for a seizure, an uneven heartbeat, or severe muscle spasms.
""", loinc=("17861-6",)),
    _t("liver-tests", "Your liver tests", """
What it means
Liver tests look at how your liver is doing. ALT, AST and alkaline phosphatase are enzymes.
Bilirubin is a yellow substance made when old blood cells break down. Albumin and total protein
are proteins your liver makes. A result out of range can come from medicines, alcohol, a fatty
liver, a virus or other causes. Mild changes are common and often go back to normal.

What you can do
- Your doctor may repeat the test or order more tests.
- Limit alcohol, or stop drinking if your doctor advises.
- Do not take more acetaminophen (Tylenol) than the label says. Ask how much is safe for you.
- Tell the clinic about all your medicines, herbs and supplements.
- If you are overweight, losing weight can help a fatty liver.

When to get help
Call the clinic if you have dark urine, pale stools, itching, belly pain or swelling, or if your
skin or the whites of your eyes turn yellow. Call 911 if you vomit blood, have black stools, or
are very confused or hard to wake up.
""", loinc=("1742-6", "1920-8", "6768-6", "1975-2", "1751-7", "2885-2")),
    _t("white-blood-cell-test", "Your white blood cell count", """
What it means
White blood cells fight infection. A high count often means your body is fighting an infection
or inflammation. Stress, smoking or steroid medicines can also raise it. A low count can come
from a virus, some medicines, or a problem in the bone marrow. With a low count it is harder to
fight germs.

What you can do
- Your doctor may repeat the test or order more tests.
- Wash your hands often, especially before eating.
- If your count is low, stay away from people who are sick, and cook meat and eggs well.
- Keep up with your vaccines, such as the flu shot.
- Tell the clinic about all your medicines.

When to get help
Call the clinic if you have a fever of 100.4 degrees or more, chills, a new cough, burning when
you urinate, or a wound that looks red or swollen. Call 911 if you have a high fever with
confusion, trouble breathing, a very fast heartbeat, or you feel faint. These can be signs of a
serious infection.
""", loinc=("6690-2",)),
    _t("platelet-test", "Your platelet count", """
What it means
Platelets are tiny blood cells that help your blood clot and stop bleeding. A low count can make
you bruise or bleed more easily. It can come from a virus, some medicines, heavy drinking, or
liver or bone marrow problems. A high count can follow an infection, inflammation, low iron or
surgery. Rarely, it comes from a bone marrow condition.

What you can do
- Your doctor may repeat the test or order more tests.
- If your count is low, use a soft toothbrush and an electric razor. Avoid contact sports.
- Do not take aspirin or ibuprofen unless your doctor says they are safe.
- Limit alcohol.
- Tell the clinic about all your medicines and supplements.

When to get help
Call the clinic if you bruise easily, have nosebleeds or bleeding gums, or see tiny red spots on
your skin. Call 911 if you have bleeding that will not stop, vomit blood, or have black or bloody
stools. Also call 911 for a very bad headache, or signs of a clot, such as a swollen painful leg
with sudden shortness of breath.
""", loinc=("777-3",)),
)

_BY_ID: dict[str, Topic] = {t.id: t for t in TOPICS}
_INDEX: dict[tuple[str, str], tuple[str, ...]] = {}
for _topic in TOPICS:
    for _system, _code in _topic.codes:
        _key = (_system, _icd_key(_code) if _system == ICD10CM else _code)
        _INDEX[_key] = (*_INDEX.get(_key, ()), _topic.id)
del _topic, _system, _code, _key
