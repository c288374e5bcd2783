"""Reports/s of the rule labeler on one core, and its positive F1 on the OpenI dev reports.

usage: python benchmarks/rule_labeler.py [OPENI_CSV]
The OpenI split is the pipeline's (hash of uid, seed 13): the vocabulary was tuned looking at
train+validate only; test is the held-out part.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from cxrlabel.evaluation.metrics import label_matrix, mean_ignoring_nan, positive_f1_by_observation  # noqa: E402
from cxrlabel.ingest import ingest_openi  # noqa: E402
from cxrlabel.labelers.rule import RuleLabeler  # noqa: E402
from cxrlabel.observations import OBSERVATIONS  # noqa: E402
from cxrlabel.predict import labeled_frame  # noqa: E402

csv = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/openi/openi_dev.csv"
corpus = ingest_openi(csv, {"train": 0.7, "validate": 0.1, "test": 0.2}, seed=13, strict=True)
labeler = RuleLabeler()
texts = corpus.reports["text"].to_list()
best = float("inf")
for _ in range(3):
    start = time.perf_counter()
    labeled = labeler.label_batch(texts)
    best = min(best, time.perf_counter() - start)
print(f"rule labeler: {len(texts)} reports in {best:.2f} s (best of 3) = {len(texts) / best:,.0f} reports/s on one core")

predictions = pl.concat([corpus.reports.select("study_id", "split"), labeled_frame(labeled)], how="horizontal")
parts = {"tuning (train+validate)": ["train", "validate"], "held-out (test)": ["test"]}
scores, supports = {}, {}
for name, splits in parts.items():
    subset = predictions.filter(pl.col("split").is_in(splits))
    gold = corpus.gold.join(subset.select("study_id"), on="study_id", how="semi")
    g, p, _ = label_matrix(gold, subset)
    scores[name] = positive_f1_by_observation(g, p)
    supports[name] = {o: int(np.sum(g[:, j] == 1)) for j, o in enumerate(OBSERVATIONS)}
print("| observation | " + " | ".join(f"{name} F1 | n" for name in parts) + " |")
print("|---" * (2 * len(parts) + 1) + "|")
for o in OBSERVATIONS:
    print(f"| {o} | " + " | ".join(f"{scores[name][o]:.3f} | {supports[name][o]}" for name in parts) + " |")
print("| **macro** | " + " | ".join(f"**{mean_ignoring_nan(scores[name]):.3f}** | " for name in parts) + " |")
