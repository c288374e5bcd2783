"""Ingestion: a corpus in its released format -> the reports table and the label tables.

Outputs (see docs/architecture.md): ``reports.parquet``, ``labels_silver.parquet``,
``labels_gold.parquet``, ``dropped.parquet`` and ``ingest_summary.json``. Every input record
is accounted for: kept, or in ``dropped.parquet`` with its reason; the summary counts both.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cxrlabel.io.labels import LabelKind, empty_labels, read_label_csv, write_labels
from cxrlabel.io.mimic import read_reports, read_split
from cxrlabel.io.openi import read_openi
from cxrlabel.io.records import DropLog

log = logging.getLogger(__name__)

#: Word-level tokens (words and punctuation marks): tokenizer-independent report length,
#: used for the length bins of the evaluation.
TOKEN = re.compile(r"\w+|[^\w\s]")

REPORT_COLUMNS = ("study_id", "subject_id", "split", "source", "findings", "impression", "text", "text_source", "n_tokens")


@dataclass(frozen=True)
class Corpus:
    """What ingestion produced, before it is written."""

    reports: pl.DataFrame
    silver: pl.DataFrame
    gold: pl.DataFrame
    gold_kind: LabelKind
    drops: DropLog
    read_counts: dict[str, int]


def count_tokens(text: str) -> int:
    return len(TOKEN.findall(text))


def finish_reports(reports: pl.DataFrame, source: str) -> pl.DataFrame:
    return reports.with_columns(
        pl.lit(source).alias("source"),
        pl.col("text").map_elements(count_tokens, return_dtype=pl.Int32).alias("n_tokens"),
    ).select(REPORT_COLUMNS)


def keep_studies_with_reports(labels: pl.DataFrame, reports: pl.DataFrame, path: str, drops: DropLog) -> pl.DataFrame:
    """Labels of studies that have a report; the others are dropped with their reason."""
    orphans = labels.join(reports, on="study_id", how="anti")
    for study_id in orphans["study_id"]:
        drops.drop(path, f"study_id {study_id}", study_id, "no_report", "labels for a study that has no (kept) report")
    return labels.join(reports.select("study_id"), on="study_id", how="semi")


def ingest_mimic(reports: str, silver_labels: str, split: str, gold_labels: str, source: str, strict: bool = False) -> Corpus:
    """Read MIMIC-CXR (or the demo corpus, written in its formats) from its released files."""
    drops = DropLog(strict=strict)
    table = read_reports(reports, drops)
    n_files = table.height + len(drops.rows)
    splits = read_split(split, drops)
    without_split = table.join(splits, on="study_id", how="anti")
    for study_id in without_split["study_id"]:
        drops.drop(split, f"study_id {study_id}", study_id, "no_split", "report of a study absent from the split file")
    table = table.join(splits, on="study_id", how="inner")
    silver = keep_studies_with_reports(read_label_csv(silver_labels, drops, ("subject_id", "study_id")), table, silver_labels, drops)
    gold = keep_studies_with_reports(read_label_csv(gold_labels, drops), table, gold_labels, drops)
    return Corpus(finish_reports(table, source), silver, gold, "full", drops, {"report_files": n_files})


def ingest_openi(csv: str, split_fractions: dict[str, float], seed: int, strict: bool = False) -> Corpus:
    """Read the OpenI CSV; its indexer labels become positive-only gold, and there is no silver."""
    drops = DropLog(strict=strict)
    reports, indexer = read_openi(csv, drops, split_fractions, seed)
    return Corpus(finish_reports(reports, "openi"), empty_labels(), indexer, "positive_only", drops, {"csv_rows": reports.height + len(drops.rows)})


def ingest(corpus: dict, inputs: dict[str, str]) -> Corpus:
    """Ingest the corpus described by the ``corpus`` config section from the files in ``inputs``."""
    if corpus["format"] == "openi":
        openi = corpus["openi"]
        return ingest_openi(inputs["csv"], openi["split_fractions"], openi["seed"], corpus["strict"])
    return ingest_mimic(**inputs, source=corpus["name"], strict=corpus["strict"])


def write_corpus(corpus: Corpus, out: dict[str, str]) -> dict[str, object]:
    """Write the tables of ``corpus`` to the paths in ``out`` and return the summary that was logged."""
    corpus.reports.write_parquet(out["reports"])
    write_labels(corpus.silver, out["silver"], "full")
    write_labels(corpus.gold, out["gold"], corpus.gold_kind)
    corpus.drops.frame().write_parquet(out["dropped"])
    summary = {
        "read": corpus.read_counts,
        "kept": {
            "reports": corpus.reports.height,
            "reports_by_split": dict(sorted(corpus.reports.group_by("split").len().iter_rows())),
            "silver_labels": corpus.silver.height,
            "gold_labels": corpus.gold.height,
        },
        "gold_kind": corpus.gold_kind,
        "dropped": corpus.drops.counts(),
        "text_source": dict(sorted(corpus.reports.group_by("text_source").len().iter_rows())),
    }
    Path(out["summary"]).write_text(json.dumps(summary, indent=2) + "\n")
    log.info("ingested: %s", json.dumps(summary))
    for row in corpus.drops.rows[:20]:
        log.warning("dropped %s %s: %s", row["source_file"], row["record"], row["detail"])
    if len(corpus.drops.rows) > 20:
        log.warning("... %d more dropped records in %s", len(corpus.drops.rows) - 20, out["dropped"])
    return summary
