"""Model selection on the validate split: an LLM labeler's positive F1 against the expert labels and
against the rule labeler's output (its teacher when ``instruct.labels: rule``), per observation,
and two steadier summaries of the agreement with the rule labeler: positive F1 micro-averaged
over all report x observation cells, and weighted F1 (positive, negative, uncertain). The
validate split has one or two expert positives of several observations: its macro F1 moves by
0.07 when one of them flips.

usage: python benchmarks/llm_validate.py RESULTS_DIR MODEL_DIR [MODEL_DIR ...]
RESULTS_DIR holds corpus/ and predictions/rule.parquet of a run (e.g. results/openi). Never pass
a test split here: levers are chosen on validate.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from cxrlabel.evaluation.metrics import extraction_f1, label_matrix, positive_f1_by_observation, weighted_f1_by_observation
from cxrlabel.io.labels import read_labels
from cxrlabel.labelers.llm import LLMLabeler
from cxrlabel.predict import predict

results, *models = sys.argv[1:]
torch.set_num_threads(2)
reports = pl.read_parquet(Path(results) / "corpus/reports.parquet").filter(pl.col("split") == "validate")
gold = read_labels(str(Path(results) / "corpus/labels_gold.parquet"))[0].join(reports.select("study_id"), on="study_id", how="semi")
rule = read_labels(str(Path(results) / "predictions/rule.parquet"))[0].join(reports.select("study_id"), on="study_id", how="semi")
for model in models:
    start = time.perf_counter()
    predictions = predict(LLMLabeler(model), reports.select("study_id", "text"))
    seconds = time.perf_counter() - start
    scores = {}
    for name, reference in (("expert", gold), ("rule", rule)):
        g, p, _ = label_matrix(reference, predictions)
        scores[name] = positive_f1_by_observation(g, p)
    g, p, _ = label_matrix(rule, predictions)
    print(f"{model}: {reports.height} validate reports in {seconds:.0f} s, format errors {predictions['format_error'].sum()}")
    print(f"  positive F1 vs expert {np.nanmean(list(scores['expert'].values())):.3f}; vs rule: positive F1 {np.nanmean(list(scores['rule'].values())):.3f}, "
          f"micro positive F1 {extraction_f1(g.ravel(), p.ravel(), 1.0):.3f}, weighted F1 {np.nanmean(list(weighted_f1_by_observation(g, p).values())):.3f}")
    for name in scores["expert"]:
        print(f"  {name:28s} expert {scores['expert'][name]:.3f}  rule {scores['rule'][name]:.3f}")
