"""Learned labelers against their rule teacher on the validate split: the measurement that chooses
among expert.targets variants (never the test split, which scores the chosen one).

usage: python benchmarks/expert_targets.py RESULTS [RESULTS ...] [--split validate]
Each RESULTS is an OpenI results folder of the DAG (its predictions/validate/<labeler>.parquet,
written by predict_validate, and corpus/). Prints, per folder and labeler, the headline metric
against the split's expert labels (positive F1 for OpenI's positive-only labels) with its 95%
bootstrap interval over reports, the paired bootstrap p against the rule labeler, and the
per-observation scores (No Finding on its own line). The rule labeler is scored on the same reports.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from cxrlabel.evaluation.metrics import extraction_counts, label_matrix, weighted_f1_from_counts
from cxrlabel.evaluation.stats import bootstrap_headline, compare_labelers, percentile_interval, resample_weights
from cxrlabel.evaluation.tables import certainties_for, metric_name
from cxrlabel.io.labels import read_labels
from cxrlabel.labelers.rule import RuleLabeler
from cxrlabel.observations import NO_FINDING, OBSERVATIONS, apply_no_finding_rule
from cxrlabel.predict import predict



def chexpert_no_finding(predictions: pl.DataFrame) -> pl.DataFrame:
    """``predictions`` with No Finding recomputed by the CheXpert rule from the 13 other labels:
    what an LLM labeler with a learned No Finding stage gives without it."""
    rows = [apply_no_finding_rule({name: row[name] for name in OBSERVATIONS}) for row in predictions.iter_rows(named=True)]
    return predictions.with_columns(pl.Series(NO_FINDING, [row[NO_FINDING] for row in rows], dtype=pl.Int8))


parser = argparse.ArgumentParser()
parser.add_argument("results", nargs="+")
parser.add_argument("--split", default="validate", choices=["train", "validate"], help="never test: it scores the chosen variant (the DAG's tables)")
parser.add_argument("--resamples", type=int, default=1000)
args = parser.parse_args()

for folder in map(Path, args.results):
    reports = pl.read_parquet(folder / "corpus/reports.parquet").filter(pl.col("split") == args.split)
    gold, kind = read_labels(folder / "corpus/labels_gold.parquet")
    gold = gold.join(reports.select("study_id"), on="study_id", how="semi", maintain_order="left")
    predictions = {"rule": predict(RuleLabeler(), reports.select("study_id", "text"), chunk_size=1024)}
    for path in sorted((folder / "predictions/validate").glob("*.parquet")) if args.split == "validate" else []:
        if not path.stem.endswith("_scores"):
            predictions[path.stem] = pl.read_parquet(path)
            if path.stem != "bert" and (folder / "models/no_finding").is_dir():  # the same labels, No Finding by the CheXpert rule
                predictions[f"{path.stem}, CheXpert No Finding"] = chexpert_no_finding(predictions[path.stem])
    weights = resample_weights(gold.height, args.resamples, 0)
    counts = {name: extraction_counts(*label_matrix(gold, table)[:2], certainties_for(kind)) for name, table in predictions.items()}
    boots = {name: bootstrap_headline(c, weights) for name, c in counts.items()}
    per_observation = {name: weighted_f1_from_counts(c.sum(axis=0)) for name, c in counts.items()}
    print(f"\n## {folder} ({args.split}, {gold.height} reports; {metric_name(kind)})")
    print("| labeler | headline | 95% CI | vs rule | paired bootstrap p |")
    print("| --- | ---: | --- | ---: | ---: |")
    for name in predictions:
        headline = float(np.nanmean(per_observation[name]))
        low, high = percentile_interval(boots[name])
        versus = compare_labelers(per_observation[name], per_observation["rule"], boots[name], boots["rule"])
        p = versus.bootstrap_p_value if name != "rule" else float("nan")
        print(f"| {name} | {headline:.4f} | {low:.3f}-{high:.3f} | {headline - float(np.nanmean(per_observation['rule'])):+.4f} | {p:.3f} |")
    print("\n| observation | n | " + " | ".join(predictions) + " |")
    print("| --- | ---: |" + " ---: |" * len(predictions))
    g = label_matrix(gold, predictions["rule"])[0]
    for j, observation in enumerate(OBSERVATIONS):
        support = int(np.sum(g[:, j] == 1))
        print(f"| {observation} | {support} | " + " | ".join(f"{per_observation[name][j]:.3f}" for name in predictions) + " |")
