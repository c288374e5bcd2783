"""A small MIMIC-CXR release written by hand in the real formats, with every oddity ingestion must survive."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

ALPHABETICAL = sorted(
    [
        "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
        "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
        "Pneumothorax", "Support Devices",
    ]
)

STANDARD = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old woman with cough  // ?pna

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  ___

 FINDINGS:

 There is a small left pleural effusion, new since ___. No pneumothorax.
 Heart size is normal.

 IMPRESSION:

 Small left pleural effusion.
"""
IMPRESSION_FIRST = """                                 FINAL REPORT
 IMPRESSION:  Mild pulmonary edema.

 FINDINGS:  Interstitial markings are increased.  Heart is enlarged.
"""
IMPRESSION_ONLY = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)
 INDICATION:  Line placement.
 IMPRESSION:
 Right IJ catheter tip in the SVC.
"""
FINDINGS_ONLY = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 FINDINGS:
 Lungs are clear. No focal consolidation.
"""
NEITHER = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)

 INDICATION:  ___ with hypoxia

 COMPARISON:  ___

 Portable AP view of the chest. Low lung volumes. No pneumothorax.
 Bibasilar atelectasis.
"""
WET_READ = """WET READ: ___ ___ ___ 4:12 PM
  No acute process.
 ______________________________________________________________________________
                                 FINAL REPORT
 INDICATION:  Fever.

 FINDINGS:  No focal consolidation.

 IMPRESSION:  No pneumonia.
"""
CRLF = STANDARD.replace("small left", "moderate right").replace("\n", "\r\n")
ADDENDUM = """                                 FINAL REPORT
 FINDINGS:  Endotracheal tube 3 cm above the carina.

 IMPRESSION:  ETT in standard position.

 ADDENDUM:  Findings discussed with Dr. ___ at ___.
"""
HEADERS_ONLY = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 INDICATION:  ___
"""

# study_id -> (subject_id, report text or raw bytes)
REPORTS: dict[str, tuple[str, str | bytes]] = {
    "50000001": ("10000001", STANDARD),
    "50000002": ("10000001", IMPRESSION_FIRST),
    "50000003": ("10000002", IMPRESSION_ONLY),
    "50000004": ("10000002", FINDINGS_ONLY),
    "50000005": ("10000003", NEITHER),
    "50000006": ("10000003", WET_READ),
    "50000007": ("10000004", CRLF),
    "50000008": ("10000004", ADDENDUM),
    "50000009": ("10000005", HEADERS_ONLY),  # dropped: no result text
    "50000010": ("10000005", "FINDINGS: Caf\xe9 opacity.".encode("latin-1")),  # dropped: not UTF-8
    "50000011": ("10000006", STANDARD),  # dropped: not in the split file
}
STRAY_FILE = "files/p10/p10000006/notes.txt"  # dropped: not a report path

SPLIT_ROWS = [  # dicom_id, study_id, subject_id, split: one row per image
    ("d1a", "50000001", "10000001", "train"),
    ("d1b", "50000001", "10000001", "train"),
    ("d2", "50000002", "10000001", "train"),
    ("d3", "50000003", "10000002", "validate"),
    ("d4", "50000004", "10000002", "test"),
    ("d5", "50000005", "10000003", "test"),
    ("d6", "50000006", "10000003", "train"),
    ("d7a", "50000007", "10000004", "test"),
    ("d7b", "50000007", "10000004", "test"),
    ("d8a", "50000008", "10000004", "train"),
    ("d8b", "50000008", "10000004", "validate"),  # study dropped: its images disagree
    ("d9", "50000009", "10000005", "train"),
    ("d10", "50000010", "10000005", "train"),
    ("d12", "50000012", "10000007", "holdout"),  # row dropped: unknown split
]


def chexpert_row(subject_id: str, study_id: str, **values: str) -> str:
    return ",".join([subject_id, study_id] + [values.get(name.replace(" ", "_"), "") for name in ALPHABETICAL])


SILVER_LINES = [
    "subject_id,study_id," + ",".join(ALPHABETICAL),
    chexpert_row("10000001", "50000001", Pleural_Effusion="1.0", Pneumothorax="0.0", Cardiomegaly="0.0"),
    chexpert_row("10000001", "50000002", Edema="1.0", Cardiomegaly="1.0", Lung_Opacity="1.0"),
    chexpert_row("10000002", "50000003", Support_Devices="1.0", No_Finding="1.0"),
    chexpert_row("10000002", "50000004", Consolidation="0.0", No_Finding="1.0"),
    chexpert_row("10000003", "50000005", Atelectasis="1.0", Pneumothorax="0.0"),
    chexpert_row("10000003", "50000006", Consolidation="0.0", Pneumonia="-1.0"),
    chexpert_row("10000004", "50000007", Pleural_Effusion="1.0", Pneumothorax="2.0"),  # dropped: invalid label
    chexpert_row("10000003", "50000006", Pneumonia="1.0"),  # dropped: duplicate study
    chexpert_row("10000099", "59999999", Edema="1.0"),  # dropped: no report
]
GOLD_HEADER = "study_id," + ",".join("Airspace Opacity" if name == "Lung Opacity" else name for name in ALPHABETICAL)
GOLD_LINES = [
    GOLD_HEADER,
    "50000004," + ",".join("1" if name == "No Finding" else ("0" if name == "Consolidation" else "") for name in ALPHABETICAL),
    "50000005," + ",".join({"Atelectasis": "1.0", "Pneumothorax": "0.0", "Lung Opacity": "-1.0"}.get(n, "") for n in ALPHABETICAL),
]


def write_release(root: Path, as_zip: bool) -> dict[str, Path]:
    """Write the fixture release under ``root``; reports as a ``files/`` tree or as the zip."""
    root.mkdir(parents=True, exist_ok=True)
    members = {f"files/p{subject[:2]}/p{subject}/s{study}.txt": text for study, (subject, text) in REPORTS.items()}
    members[STRAY_FILE] = "not a report"
    if as_zip:
        reports = root / "mimic-cxr-reports.zip"
        with zipfile.ZipFile(reports, "w") as archive:
            for name, text in members.items():
                archive.writestr(name, text if isinstance(text, bytes) else text.encode())
    else:
        reports = root / "files-tree"
        for name, text in members.items():
            path = reports / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text if isinstance(text, bytes) else text.encode())
    paths = {
        "reports": reports,
        "silver_labels": root / "mimic-cxr-2.0.0-chexpert.csv.gz",
        "split": root / "mimic-cxr-2.0.0-split.csv.gz",
        "gold_labels": root / "mimic-cxr-2.1.0-test-set-labeled.csv",
    }
    paths["silver_labels"].write_bytes(gzip.compress(("\n".join(SILVER_LINES) + "\n").encode()))
    split_text = "dicom_id,study_id,subject_id,split\n" + "".join(",".join(row) + "\n" for row in SPLIT_ROWS)
    paths["split"].write_bytes(gzip.compress(split_text.encode()))
    paths["gold_labels"].write_text("\n".join(GOLD_LINES) + "\n")
    return paths
