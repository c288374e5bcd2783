"""A synthetic corpus written in MIMIC-CXR's exact file formats, with known ground truth.

Each study gets true labels drawn per observation, then a report whose sentences state
exactly those labels (positive, negated, uncertain, grouped negations, heart-size and
mediastinal phrasing), wrapped in MIMIC-style sections whose set and order vary (missing
FINDINGS or IMPRESSION, neither, WET READ, ADDENDUM, ``___`` de-identification, CRLF). A
share of reports is long (past 512 WordPiece tokens). The files written are
``mimic-cxr-reports.zip``, ``mimic-cxr-2.0.0-chexpert.csv.gz`` (silver: truth with label
noise, as a labeler's output would be), ``mimic-cxr-2.0.0-split.csv.gz`` (one row per image)
and ``mimic-cxr-2.1.0-test-set-labeled.csv`` (gold: truth for the test split and, unlike the real
file, for the validate split too, where simulated expert preferences are drawn without
touching the evaluation set).
"""

from __future__ import annotations

import random
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cxrlabel.io.labels import labels_schema, to_chexpert_csv_frame, write_chexpert_csv, write_csv
from cxrlabel.observations import NO_FINDING, OBSERVATIONS, apply_no_finding_rule

Labels = dict[str, int | None]

# Per observation: how a report names it when present, and how it names it in a negation
# ("no ___") or an uncertain statement ("cannot exclude ___").
POSITIVE: dict[str, list[str]] = {
    "Enlarged Cardiomediastinum": ["The cardiomediastinal silhouette is widened.", "Mediastinal widening is noted.", "The mediastinum is enlarged."],
    "Cardiomegaly": ["The heart is enlarged.", "Moderate cardiomegaly is present.", "There is mild cardiomegaly.", "Heart size is enlarged."],
    "Lung Lesion": ["A {side} upper lobe nodule measures 9 mm.", "There is a {side} hilar mass.", "A spiculated {side} lung mass is seen."],
    "Lung Opacity": ["There is a {side} basilar opacity.", "Patchy opacities are seen at the {side} base.", "Increased interstitial markings are noted.", "Streaky {side} basilar scarring is present."],
    "Edema": ["There is mild pulmonary edema.", "Moderate interstitial edema is present.", "Pulmonary vascular congestion and edema are seen."],
    "Consolidation": ["There is {side} lower lobe consolidation.", "A dense {side} consolidation is present."],
    "Pneumonia": ["Findings are consistent with {side} lower lobe pneumonia.", "There is a {side} pneumonia."],
    "Atelectasis": ["There is {side} basilar atelectasis.", "Mild bibasilar atelectasis is noted.", "Plate-like atelectasis is seen at the {side} base."],
    "Pneumothorax": ["There is a small {side} apical pneumothorax.", "A moderate {side} pneumothorax is present."],
    "Pleural Effusion": ["There is a small {side} pleural effusion.", "Moderate bilateral pleural effusions are present.", "A {side} effusion is layering."],
    "Pleural Other": ["There is {side} pleural thickening.", "Calcified pleural plaques are seen."],
    "Fracture": ["There is a healing {side} rib fracture.", "An acute fracture of the {side} clavicle is seen."],
    "Support Devices": ["An endotracheal tube terminates 4 cm above the carina.", "A right internal jugular central venous catheter ends in the SVC.", "A nasogastric tube courses below the diaphragm.", "A dual-lead pacemaker is in place."],
}
NEGATABLE: dict[str, list[str]] = {
    "Lung Lesion": ["pulmonary nodules", "lung mass"],
    "Lung Opacity": ["focal opacity", "airspace opacity"],
    "Edema": ["pulmonary edema", "edema"],
    "Consolidation": ["focal consolidation", "consolidation"],
    "Pneumonia": ["pneumonia"],
    "Atelectasis": ["atelectasis"],
    "Pneumothorax": ["pneumothorax"],
    "Pleural Effusion": ["pleural effusion", "effusion"],
    "Pleural Other": ["pleural thickening"],
    "Fracture": ["acute rib fracture", "fracture"],
    "Support Devices": ["lines or tubes"],
}
NEGATIVE_SOLO: dict[str, list[str]] = {
    "Enlarged Cardiomediastinum": ["The cardiomediastinal silhouette is normal.", "The mediastinal contours are within normal limits.", "Mediastinal contours are unremarkable."],
    "Cardiomegaly": ["Heart size is normal.", "The heart is not enlarged.", "There is no cardiomegaly."],
    "Pneumothorax": ["There is no pneumothorax.", "Pneumothorax is not seen."],
    "Pleural Effusion": ["No pleural effusion is seen.", "The costophrenic angles are sharp without effusion."],
    "Edema": ["There is no evidence of pulmonary edema.", "Previously seen edema has resolved."],
    "Consolidation": ["The lungs are clear without consolidation."],
}
UNCERTAIN: dict[str, list[str]] = {
    "Enlarged Cardiomediastinum": ["The mediastinum is possibly widened, which may be due to technique."],
    "Cardiomegaly": ["The heart is possibly mildly enlarged.", "Borderline cardiomegaly cannot be excluded."],
    "Lung Lesion": ["A possible {side} lung nodule is seen.", "An {side} upper lobe nodule cannot be excluded."],
    "Lung Opacity": ["A faint {side} basilar opacity is possibly present.", "Questionable {side} basilar opacity."],
    "Edema": ["Possible mild interstitial edema.", "Findings may represent mild pulmonary edema."],
    "Consolidation": ["Consolidation at the {side} base cannot be excluded."],
    "Pneumonia": ["Pneumonia cannot be excluded.", "Findings may represent early pneumonia.", "Possible {side} lower lobe pneumonia."],
    "Atelectasis": ["Possible {side} basilar atelectasis.", "Findings may reflect atelectasis."],
    "Pneumothorax": ["A tiny {side} apical pneumothorax cannot be excluded."],
    "Pleural Effusion": ["A small {side} pleural effusion is possible.", "Blunting of the {side} costophrenic angle may represent a small effusion."],
    "Pleural Other": ["Possible {side} pleural thickening."],
    "Fracture": ["A {side} rib fracture cannot be excluded.", "Possible nondisplaced {side} rib fracture."],
    "Support Devices": ["A possible catheter projects over the {side} chest."],
}
# Sentences that mention no observation: they lengthen reports and give labelers
# distractors (a pericardial effusion is not a pleural effusion).
NEUTRAL = [
    "The patient is rotated to the {side}.",
    "Lung volumes are low.",
    "Degenerative changes are seen in the thoracic spine.",
    "Comparison is made to the prior radiograph from ___.",
    "The hila are unremarkable.",
    "There is no pericardial effusion on the recent echocardiogram.",
    "Gas is seen in the stomach bubble.",
    "Surgical clips are seen in the right upper quadrant.",
    "The upper abdomen is unremarkable.",
    "Soft tissues are within normal limits.",
    "Visualized osseous structures show age-related changes.",
    "The study is limited by patient motion.",
    "The diaphragm is well visualized.",
]
INDICATIONS = ["___ year old man with cough and fever", "___ year old woman with shortness of breath", "History: ___ with chest pain", "___F s/p line placement, evaluate position", "Eval for acute cardiopulmonary process"]
EXAMINATIONS = ["CHEST (PA AND LAT)", "CHEST (PORTABLE AP)", "CHEST PA AND LATERAL"]
ADDENDA = ["Findings were discussed with Dr. ___ by telephone at ___ on ___.", "Recommend follow-up radiograph in ___ weeks."]
NORMAL_IMPRESSION = ["No acute cardiopulmonary process.", "No acute intrathoracic abnormality."]


@dataclass(frozen=True)
class DemoSpec:
    """How large the corpus is and how its labels are drawn."""

    n_studies: int = 1500
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.05, 0.15)  # train, validate, test
    p_positive: float = 0.1
    p_negative: float = 0.15
    p_uncertain: float = 0.04
    p_long: float = 0.06
    silver_noise: float = 0.03


def draw_labels(rng: random.Random, spec: DemoSpec) -> Labels:
    """True labels for one study; No Finding follows the CheXpert rule."""
    labels: Labels = {}
    for name in OBSERVATIONS[1:]:
        roll = rng.random()
        p_pos = spec.p_positive * (2.5 if name == "Support Devices" else 1.0)
        if roll < p_pos:
            labels[name] = 1
        elif roll < p_pos + spec.p_negative * (2.5 if name in NEGATIVE_SOLO else 1.0):
            labels[name] = 0
        elif roll < p_pos + spec.p_negative + spec.p_uncertain and name in UNCERTAIN:
            labels[name] = -1
        else:
            labels[name] = None
    return apply_no_finding_rule(labels)


def render_sentences(labels: Labels, rng: random.Random) -> list[str]:
    """One sentence per stated observation; negatives of several observations share "No A, B or C."."""
    def fill(template: str) -> str:
        return template.format(side=rng.choice(["right", "left"]))

    sentences = [fill(rng.choice(POSITIVE[name])) for name, value in labels.items() if value == 1 and name != NO_FINDING]
    sentences += [fill(rng.choice(UNCERTAIN[name])) for name, value in labels.items() if value == -1]
    negatives = [name for name, value in labels.items() if value == 0]
    rng.shuffle(negatives)
    grouped = [name for name in negatives if name in NEGATABLE and (name not in NEGATIVE_SOLO or rng.random() < 0.5)]
    for name in negatives:
        if name not in grouped:
            sentences.append(rng.choice(NEGATIVE_SOLO[name]))
    while grouped:
        group, grouped = grouped[: rng.randint(1, 3)], grouped[3:] if len(grouped) > 3 else []
        phrases = [rng.choice(NEGATABLE[name]) for name in group]
        listed = phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} or {phrases[-1]}"
        sentences.append(rng.choice(["No {}.", "There is no {}.", "No evidence of {}.", "No definite {} is seen."]).format(listed))
    rng.shuffle(sentences)
    return sentences


def render_report(labels: Labels, rng: random.Random, long: bool) -> str:
    """A full MIMIC-CXR-style report text stating exactly ``labels``."""
    side = lambda: rng.choice(["right", "left"])  # noqa: E731
    stated = render_sentences(labels, rng)
    n_neutral = rng.randint(70, 110) if long else rng.randint(0, 3)
    findings = stated + [rng.choice(NEUTRAL).format(side=side()) for _ in range(n_neutral)]
    rng.shuffle(findings)
    normal = labels.get(NO_FINDING) == 1
    if normal and not stated:
        findings.append(rng.choice(["The lungs are clear.", "Lungs are well expanded and clear."]))
    # The impression restates part of what the findings say (never something new).
    impression = [s for s in stated if rng.random() < 0.5]
    if normal and not impression:
        impression = [rng.choice(NORMAL_IMPRESSION)]
    layout = rng.choices(["both", "findings_only", "impression_only", "neither"], weights=[70, 12, 12, 6])[0]
    if layout == "impression_only":
        findings, impression = [], findings
    elif layout == "findings_only":
        impression = []

    def section(header: str, sentences: list[str]) -> str:
        wrapped = "\n".join(" " + line for line in textwrap.wrap(" ".join(sentences), 78))
        return f" {header}:\n \n{wrapped}\n" if header else f"{wrapped}\n"

    parts = []
    if rng.random() < 0.1:
        parts.append(f"WET READ: ___ ___ {rng.randint(1, 12)}:{rng.randint(10, 59)} PM\n  {rng.choice(NORMAL_IMPRESSION)}\n")
    parts.append("                                 FINAL REPORT")
    indication = rng.choice(INDICATIONS)
    if long:
        indication += " Patient with a long history of ___ and prior admissions for ___." * 4
    for header, body in (("EXAMINATION", rng.choice(EXAMINATIONS)), ("INDICATION", indication), ("TECHNIQUE", "Chest PA and lateral"), ("COMPARISON", rng.choice(["___", "None."]))):
        parts.append(f" {header}:  {body}\n")
    if layout == "neither":  # the result is an unheaded paragraph after COMPARISON
        parts.append(section("", findings or impression))
    else:
        parts += [section(header, body) for header, body in (("FINDINGS", findings), ("IMPRESSION", impression)) if body]
    if rng.random() < 0.05:
        parts.append(f" ADDENDUM:\n {rng.choice(ADDENDA)}\n")
    text = "\n".join(parts) + "\n"
    return text.replace("\n", "\r\n") if rng.random() < 0.1 else text


def add_label_noise(labels: Labels, rng: random.Random, rate: float) -> Labels:
    """A labeler's output for ``labels``: each pathology's class is replaced with probability ``rate``."""
    noisy = {name: (rng.choice([1, 0, -1, None]) if rng.random() < rate else value) for name, value in labels.items() if name != NO_FINDING}
    return apply_no_finding_rule(noisy)


def write_demo_corpus(out_dir: str | Path, spec: DemoSpec) -> dict[str, Path]:
    """Write the demo corpus in MIMIC-CXR's formats under ``out_dir``; return the written paths."""
    rng = random.Random(spec.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "reports": out_dir / "mimic-cxr-reports.zip",
        "silver_labels": out_dir / "mimic-cxr-2.0.0-chexpert.csv.gz",
        "split": out_dir / "mimic-cxr-2.0.0-split.csv.gz",
        "gold_labels": out_dir / "mimic-cxr-2.1.0-test-set-labeled.csv",
    }
    silver_rows, gold_rows, split_rows = [], [], []
    with zipfile.ZipFile(paths["reports"], "w", zipfile.ZIP_DEFLATED) as archive:
        for index in range(spec.n_studies):
            subject_id, study_id = f"1{index // 2:07d}", f"5{index:07d}"
            labels = draw_labels(rng, spec)
            report = render_report(labels, rng, long=rng.random() < spec.p_long)
            member = zipfile.ZipInfo(f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}.txt", date_time=(2019, 1, 1, 0, 0, 0))
            archive.writestr(member, report)
            split = rng.choices(["train", "validate", "test"], weights=spec.split_fractions)[0]
            for _ in range(rng.randint(1, 3)):
                split_rows.append({"dicom_id": f"{rng.getrandbits(128):032x}", "study_id": study_id, "subject_id": subject_id, "split": split})
            silver_rows.append({"subject_id": subject_id, "study_id": study_id, **add_label_noise(labels, rng, spec.silver_noise)})
            if split in ("validate", "test"):
                gold_rows.append({"study_id": study_id, **labels})

    schema = {"subject_id": pl.String, **labels_schema()}
    write_chexpert_csv(pl.DataFrame(silver_rows, schema=schema, orient="row"), paths["silver_labels"], order="alphabetical")
    # The 2.1.0 test set spells Lung Opacity as "Airspace Opacity".
    gold = to_chexpert_csv_frame(pl.DataFrame(gold_rows, schema=labels_schema(), orient="row"), order="alphabetical")
    gold.rename({"Lung Opacity": "Airspace Opacity"}).write_csv(paths["gold_labels"], null_value="")
    write_csv(pl.DataFrame(split_rows), paths["split"])
    return paths
