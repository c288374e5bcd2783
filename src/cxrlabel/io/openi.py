"""The OpenI (Indiana University) chest X-ray reports with their indexer labels.

The CSV has ``uid, indication, comparison, findings, impression, mesh`` and the 14
observations, ``1.0`` where a human indexer's MeSH code maps to the observation and empty
otherwise. Those labels are positive-only: empty means "not indexed as present".
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from cxrlabel.io.labels import labels_schema
from cxrlabel.io.records import BadInputError, DropLog
from cxrlabel.observations import OBSERVATIONS

TEXT_COLUMNS = ("uid", "indication", "comparison", "findings", "impression", "mesh")


def assign_split(study_id: str, fractions: dict[str, float], seed: int) -> str:
    """A deterministic split for one id: a hash of ``seed:id`` placed on the cumulative fractions."""
    digest = hashlib.sha256(f"{seed}:{study_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for split, fraction in fractions.items():
        cumulative += fraction
        if point < cumulative:
            return split
    return next(reversed(fractions))


def read_openi(path: str | Path, drops: DropLog, fractions: dict[str, float], seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read the OpenI CSV into a reports table and a positive-only indexer labels table.

    Rows with no findings and no impression, a repeated ``uid``, or a label cell other than
    ``1.0``/empty are dropped with their line number.
    """
    path = Path(path)
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as error:
        raise BadInputError(f"{path}: cannot be read as CSV: {error}") from error
    missing = [name for name in (*TEXT_COLUMNS, *OBSERVATIONS) if name not in raw.columns]
    unknown = [name for name in raw.columns if name not in (*TEXT_COLUMNS, *OBSERVATIONS)]
    if missing or unknown:
        raise BadInputError(f"{path}: line 1 (header): missing column(s) {missing}, unknown column(s) {unknown}")

    reports: list[dict[str, object]] = []
    labels: list[dict[str, object]] = []
    first_line: dict[str, int] = {}
    for index, record in enumerate(raw.iter_rows(named=True)):
        line, study_id = index + 2, (record["uid"] or "").strip()
        where = (str(path), f"line {line}")
        if not study_id:
            drops.drop(*where, None, "missing_study_id", "empty uid")
            continue
        if study_id in first_line:
            drops.drop(*where, study_id, "duplicate_study", f"uid {study_id} repeats the row at line {first_line[study_id]}")
            continue
        bad = {name: record[name] for name in OBSERVATIONS if record[name] not in (None, "1.0", "1")}
        if bad:
            drops.drop(*where, study_id, "invalid_label", f"indexer labels are 1.0 or empty, found {bad}")
            continue
        sections = {name: " ".join((record[name] or "").split()) or None for name in ("findings", "impression")}
        text = " ".join(body for body in sections.values() if body)
        if not text:
            drops.drop(*where, study_id, "no_report_text", "empty findings and impression")
            continue
        first_line[study_id] = line
        reports.append(
            {"study_id": study_id, "subject_id": study_id, **sections, "text": text, "text_source": "sections",
             "split": assign_split(study_id, fractions, seed)}
        )
        labels.append({"study_id": study_id, **{name: 1 if record[name] else None for name in OBSERVATIONS}})
    report_schema = {name: pl.String for name in ("study_id", "subject_id", "findings", "impression", "text", "text_source", "split")}
    return pl.DataFrame(reports, schema=report_schema), pl.DataFrame(labels, schema=labels_schema(), orient="row")
