"""Label files: CheXpert-format CSVs (read and write) and the pipeline's labels parquet tables.

A CheXpert-format CSV has id columns then the 14 observations, with values ``1.0``,
``0.0``, ``-1.0`` or an empty cell. MIMIC-CXR's ``mimic-cxr-2.0.0-chexpert.csv.gz`` orders
the observations alphabetically; the CheXpert/CheXbert tools use the canonical order.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Literal

import polars as pl

from cxrlabel.io.records import BadInputError, DropLog
from cxrlabel.observations import ALIASES, CSV_SPELLING, OBSERVATIONS

#: The value spellings found in the real files, mapped to label codes (None = blank).
VALUE_CODES: dict[str, int | None] = {
    "": None,
    "1.0": 1,
    "1": 1,
    "0.0": 0,
    "0": 0,
    "-1.0": -1,
    "-1": -1,
}
#: Labels travel between stages as Int8 columns (null: blank).
LABEL_DTYPE = pl.Int8

#: How a labels table's gold is to be read: ``full`` (four classes) or ``positive_only``
#: (indexer labels: blank means "not indexed as present", never negative).
LabelKind = Literal["full", "positive_only"]
LABEL_KIND_KEY = "cxrlabel.label_kind"


def read_label_csv(path: str | Path, drops: DropLog, id_columns: tuple[str, ...] = ("study_id",)) -> pl.DataFrame:
    """Read a CheXpert-format label CSV (plain or gzip) into ``study_id`` + 14 Int8 columns.

    Header problems (a missing id or observation column, an unknown column) raise
    :class:`BadInputError`. Row problems (a value outside {1, 0, -1, blank}, an empty or
    repeated ``study_id``) drop that row into ``drops`` with the file's line number.
    """
    path = Path(path)
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError) as error:
        raise BadInputError(f"{path}: cannot be read as CSV: {error}") from error
    raw = raw.rename({name: ALIASES.get(name, name) for name in raw.columns})
    unknown = [name for name in raw.columns if name not in OBSERVATIONS and name not in id_columns]
    missing = [name for name in (*id_columns, *OBSERVATIONS) if name not in raw.columns]
    if unknown or missing:
        problems = ([f"unknown column(s) {unknown}"] if unknown else []) + (
            [f"missing column(s) {missing}"] if missing else []
        )
        raise BadInputError(f"{path}: line 1 (header): {'; '.join(problems)}")

    rows: list[dict[str, object]] = []
    first_line: dict[str, int] = {}
    for index, record in enumerate(raw.iter_rows(named=True)):
        line = f"line {index + 2}"
        study_id = (record["study_id"] or "").strip()
        if not study_id:
            drops.drop(str(path), line, None, "missing_study_id", "empty study_id")
            continue
        if study_id in first_line:
            drops.drop(
                str(path), line, study_id, "duplicate_study",
                f"study_id {study_id} repeats the row at line {first_line[study_id]}",
            )
            continue
        bad = {name: record[name] for name in OBSERVATIONS if (record[name] or "").strip() not in VALUE_CODES}
        if bad:
            drops.drop(
                str(path), line, study_id, "invalid_label",
                f"value(s) outside {{1.0, 0.0, -1.0, blank}}: {bad}",
            )
            continue
        first_line[study_id] = index + 2
        row: dict[str, object] = {"study_id": study_id}
        row.update({name: VALUE_CODES[(record[name] or "").strip()] for name in OBSERVATIONS})
        rows.append(row)
    return pl.DataFrame(rows, schema=labels_schema(), orient="row")


def labels_schema() -> dict[str, pl.DataType]:
    return {"study_id": pl.String, **{name: LABEL_DTYPE for name in OBSERVATIONS}}


def empty_labels() -> pl.DataFrame:
    return pl.DataFrame(schema=labels_schema())


def to_chexpert_csv_frame(labels: pl.DataFrame, order: Literal["canonical", "alphabetical"] = "canonical") -> pl.DataFrame:
    """Observation columns as CheXpert CSV strings (``1.0``/``0.0``/``-1.0``/empty), others untouched."""
    names = list(OBSERVATIONS) if order == "canonical" else sorted(OBSERVATIONS)
    others = [name for name in labels.columns if name not in OBSERVATIONS]
    spelled = [
        pl.col(name).cast(pl.Int64).replace_strict(CSV_SPELLING, default=None, return_dtype=pl.String).alias(name)
        for name in names
    ]
    return labels.select(*others, *spelled)


def write_chexpert_csv(labels: pl.DataFrame, path: str | Path, order: Literal["canonical", "alphabetical"] = "canonical") -> None:
    """Write ``labels`` in CheXpert format; blank cells are empty (gzip when the name ends in .gz)."""
    write_csv(to_chexpert_csv_frame(labels, order), path)


def write_csv(frame: pl.DataFrame, path: str | Path) -> None:
    """Write a CSV with nulls as empty cells, gzip-compressed (reproducibly) when the name ends in .gz."""
    if Path(path).suffix == ".gz":
        with gzip.GzipFile(path, "wb", mtime=0) as handle:
            frame.write_csv(handle, null_value="")
    else:
        frame.write_csv(path, null_value="")


def write_labels(labels: pl.DataFrame, path: str | Path, kind: LabelKind) -> None:
    """Write a labels parquet table, recording how its blanks are to be read."""
    labels.select(labels_schema().keys()).cast(labels_schema()).write_parquet(path, metadata={LABEL_KIND_KEY: json.dumps(kind)})


def read_labels(path: str | Path) -> tuple[pl.DataFrame, LabelKind]:
    """Read a labels parquet table and its kind (see :data:`LabelKind`)."""
    metadata = pl.read_parquet_metadata(path)
    if LABEL_KIND_KEY not in metadata:
        raise BadInputError(f"{path}: not a cxrlabel labels table (no {LABEL_KIND_KEY} in its metadata)")
    return pl.read_parquet(path), json.loads(metadata[LABEL_KIND_KEY])
