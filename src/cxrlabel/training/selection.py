"""The labels the trained labelers are chosen on: the validate split's expert labels where they
cover it (the demo's 4-class truth, OpenI's indexer labels), else its silver labels (MIMIC-CXR:
radiologist labels on the test split only). Never the test split.

Both trainers keep the epoch that scores best here (the BERT classifier's epochs, the SFT
model's with ``llm.epoch_selection``), so a labeler trained toward the experts is also chosen
by them, as CheXbert was chosen on its radiologist-labeled development set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from cxrlabel.evaluation.metrics import label_matrix, mean_ignoring_nan, weighted_f1_by_observation
from cxrlabel.evaluation.tables import certainties_for, metric_name
from cxrlabel.io.labels import LabelKind, read_labels


@dataclass(frozen=True)
class SelectionReference:
    """The validate reports' labels that models are scored on, their kind and their source."""

    labels: pl.DataFrame
    kind: LabelKind
    source: Literal["expert", "silver"]

    @property
    def metric(self) -> str:
        return f"{metric_name(self.kind)} against the validate split's {self.source} labels"

    def score(self, predicted: pl.DataFrame) -> float:
        """The headline metric of ``predicted`` (a predictions table) against the labels: the mean
        over observations of the weighted F1 of the classes the labels define (positive F1 where
        they are positive-only)."""
        gold, labels, _ = label_matrix(self.labels, predicted)
        return mean_ignoring_nan(weighted_f1_by_observation(gold, labels, certainties=certainties_for(self.kind)))


def selection_reference(reports_path: str, silver_path: str, gold_path: str | None = None) -> SelectionReference:
    """The validate split's expert labels (``gold_path``) if they label every validate report that
    has silver labels, else its silver labels. Raises ValueError when no validate report has labels."""
    validate = pl.read_parquet(reports_path, columns=["study_id", "split"]).filter(pl.col("split") == "validate").select("study_id")
    silver, silver_kind = read_labels(silver_path)
    silver = silver.join(validate, on="study_id", how="semi")
    if silver.height == 0:
        raise ValueError(f"{reports_path}: no validate-split report has labels in {silver_path}; models are chosen on them")
    if gold_path:
        gold, gold_kind = read_labels(gold_path)
        gold = gold.join(silver.select("study_id"), on="study_id", how="semi")
        if gold.height == silver.height:
            return SelectionReference(gold, gold_kind, "expert")
    return SelectionReference(silver, silver_kind, "silver")
