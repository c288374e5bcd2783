"""MIMIC-CXR in its released formats: the report tree or zip, sections, and the split file.

Reports live at ``files/pXX/pNNNNNNNN/sNNNNNNNN.txt`` (in a directory or inside
``mimic-cxr-reports.zip``): plain text under a ``FINAL REPORT`` header, with upper-case
section headers ending in a colon whose set and order vary from report to report.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from cxrlabel.io.records import BadInputError, DropLog

REPORT_PATH = re.compile(r"(?:^|/)files/p\d{2}/p(?P<subject>\d+)/s(?P<study>\d+)\.txt$")
# A header is an upper-case phrase ending in a colon at the start of a line; the text of
# the section may follow on the same line ("IMPRESSION: No acute process.").
SECTION_HEADER = re.compile(r"^[ \t]*(?P<name>[A-Z][A-Z /&()-]*[A-Z)]):", re.MULTILINE)
#: Sections that describe the exam rather than its result: never used as a fallback.
CONTEXT_SECTIONS = frozenset({"examination", "exam", "indication", "history", "technique", "comparison", "clinical information", "reason for examination", "wet read", "type of examination"})
SPLITS = ("train", "validate", "test")
FINAL_REPORT_LINE = re.compile(r"^[ \t]*FINAL (?:REPORT|ADDENDUM)[ \t]*$", re.MULTILINE)
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def iter_report_files(location: str | Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(path inside the corpus, raw bytes)`` for every ``.txt`` in a report tree or zip, sorted."""
    location = Path(location)
    if location.is_dir():
        for path in sorted(location.rglob("*.txt")):
            yield path.relative_to(location).as_posix(), path.read_bytes()
    elif zipfile.is_zipfile(location):
        with zipfile.ZipFile(location) as archive:
            for name in sorted(n for n in archive.namelist() if n.endswith(".txt")):
                yield name, archive.read(name)
    else:
        raise BadInputError(f"{location}: neither a directory nor a zip file of MIMIC-CXR reports")


def parse_sections(text: str) -> dict[str, str]:
    """Split a report into ``{lower-case section name: text}``; text before any header is ``preamble``.

    Line endings are normalised and whitespace collapsed; a repeated section keeps both texts.
    """
    text = FINAL_REPORT_LINE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    headers = list(SECTION_HEADER.finditer(text))
    sections: dict[str, str] = {}
    spans = [("preamble", 0, headers[0].start() if headers else len(text))]
    spans += [
        (match["name"].strip().lower(), match.end(), headers[i + 1].start() if i + 1 < len(headers) else len(text))
        for i, match in enumerate(headers)
    ]
    for name, start, end in spans:
        paragraphs = [" ".join(p.split()) for p in PARAGRAPH_BREAK.split(text[start:end])]
        paragraphs = [p for p in paragraphs if p]
        # Reports without FINDINGS/IMPRESSION headers state the result in a paragraph
        # that follows an exam-context section (e.g. after COMPARISON): keep it apart.
        if name in CONTEXT_SECTIONS and len(paragraphs) > 1:
            _append(sections, name, paragraphs[0])
            _append(sections, "unlabeled", " ".join(paragraphs[1:]))
        elif paragraphs:
            _append(sections, name, " ".join(paragraphs))
    return sections


def _append(sections: dict[str, str], name: str, body: str) -> None:
    sections[name] = f"{sections[name]} {body}" if name in sections else body


def report_text(sections: dict[str, str]) -> tuple[str, str]:
    """Return ``(text, text_source)``: what a labeler reads from one parsed report.

    Findings then impression (then an addendum) when findings or impression exists
    (``text_source = "sections"``); otherwise the last section that is not exam context
    (indication, technique, comparison...), which is how reports without those headers
    state their result (``"last_section"``).
    """
    if "findings" in sections or "impression" in sections:
        chosen = [sections[name] for name in ("findings", "impression", "addendum") if name in sections]
        return " ".join(chosen), "sections"
    results = [body for name, body in sections.items() if name not in CONTEXT_SECTIONS]
    return (results[-1], "last_section") if results else ("", "none")


def read_reports(location: str | Path, drops: DropLog) -> pl.DataFrame:
    """Read every report of a MIMIC-CXR tree or zip into one row per study.

    Files whose path does not match ``files/pXX/pNNNNNNNN/sNNNNNNNN.txt``, that are not
    UTF-8, that hold no result text, or that repeat a study are dropped with their reason.
    """
    rows: list[dict[str, str]] = []
    seen: dict[str, str] = {}
    in_zip = not Path(location).is_dir()
    for name, raw in iter_report_files(location):
        source = f"{location}!{name}" if in_zip else str(Path(location) / name)
        match = REPORT_PATH.search(name)
        if match is None:
            drops.drop(source, "file", None, "unexpected_path", f"{name} is not files/pXX/pNNNNNNNN/sNNNNNNNN.txt")
            continue
        study_id = match["study"]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            drops.drop(source, f"byte {error.start}", study_id, "not_utf8", f"not UTF-8: {error.reason} at byte {error.start}")
            continue
        if study_id in seen:
            drops.drop(source, "file", study_id, "duplicate_study", f"study {study_id} already read from {seen[study_id]}")
            continue
        sections = parse_sections(text)
        body, text_source = report_text(sections)
        if not body:
            drops.drop(source, "file", study_id, "no_report_text", "no findings, impression or other result section")
            continue
        seen[study_id] = name
        rows.append(
            {
                "study_id": study_id,
                "subject_id": match["subject"],
                "findings": sections.get("findings"),
                "impression": sections.get("impression"),
                "text": body,
                "text_source": text_source,
            }
        )
    schema = {name: pl.String for name in ("study_id", "subject_id", "findings", "impression", "text", "text_source")}
    return pl.DataFrame(rows, schema=schema)


def read_split(path: str | Path, drops: DropLog) -> pl.DataFrame:
    """Read ``mimic-cxr-2.0.0-split.csv.gz`` (one row per image) into one ``study_id, split`` row per study.

    Image rows of one study collapse into the study; a study whose images disagree on the
    split, or a row with an unknown split, is dropped with its lines.
    """
    path = Path(path)
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as error:
        raise BadInputError(f"{path}: cannot be read as CSV: {error}") from error
    expected = ["dicom_id", "study_id", "subject_id", "split"]
    if sorted(raw.columns) != sorted(expected):
        raise BadInputError(f"{path}: line 1 (header): expected columns {expected}, found {raw.columns}")
    raw = raw.with_row_index("line", offset=2)
    bad = raw.filter(~pl.col("split").is_in(SPLITS) | pl.col("study_id").is_null())
    for record in bad.iter_rows(named=True):
        drops.drop(str(path), f"line {record['line']}", record["study_id"], "invalid_split", f"split {record['split']!r} not in {SPLITS}")
    studies = raw.join(bad, on="line", how="anti").group_by("study_id", maintain_order=True).agg(
        pl.col("split").unique(maintain_order=True), pl.col("line")
    )
    conflicting = studies.filter(pl.col("split").list.len() > 1)
    for record in conflicting.iter_rows(named=True):
        drops.drop(
            str(path), f"lines {record['line']}", record["study_id"], "conflicting_split",
            f"images of study {record['study_id']} are in splits {record['split']}",
        )
    return studies.filter(pl.col("split").list.len() == 1).select("study_id", pl.col("split").list.first())
