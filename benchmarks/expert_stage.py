"""The expert stage (cxrlabel.labelers.expert_stage) on OpenI: chosen on validate, scored on test once.

usage: python benchmarks/expert_stage.py [--config config/openi.yaml] [--results RESULTS]

Ingests the OpenI CSV of the config (its split fractions and seed, so the splits are the DAG's),
labels every report with the rule labeler (OpenI's silver labels: the stage's teacher), and trains
the stage on the train split's reports, rule labels and indexer positives, once per
``--min-positives`` value. Each is scored on validate (positive F1 of the corrected rule labels);
the best (ties: the larger, fewer observations staged) is then scored on the test split, with its
95% bootstrap interval and the paired tests against the rule labeler, per observation too.
With ``--results``, an OpenI results folder of the DAG, its labelers' test predictions
(predictions/<labeler>.parquet) are corrected by the same stage and scored beside.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from cxrlabel.evaluation.metrics import label_matrix, weighted_f1_from_counts
from cxrlabel.evaluation.stats import compare_labelers
from cxrlabel.evaluation.tables import confidence_table, score
from cxrlabel.ingest import ingest_openi
from cxrlabel.labelers import Labeled
from cxrlabel.labelers.expert_stage import ExpertStageSettings, train_expert_stage
from cxrlabel.labelers.rule import RuleLabeler
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.predict import labeled_frame, predict

parser = argparse.ArgumentParser()
parser.add_argument("--config", default="config/openi.yaml")
parser.add_argument("--results", help="an OpenI results folder whose predictions/<labeler>.parquet are corrected too")
parser.add_argument("--min-positives", type=int, nargs="+", default=[10, 20, 40, 80])
parser.add_argument("--resamples", type=int, default=1000)
args = parser.parse_args()

openi = yaml.safe_load(Path(args.config).read_text())["corpus"]["openi"]
corpus = ingest_openi(openi["csv"], openi["split_fractions"], openi["seed"])
reports = corpus.reports.select("study_id", "split", "text")
rule = predict(RuleLabeler(), reports.select("study_id", "text"), chunk_size=1024)
# the indexers' positives, in report order (a report they did not index has none)
gold = reports.select("study_id").join(corpus.gold, on="study_id", how="left", maintain_order="left")
expert_positive = gold.select((pl.col(name) == 1).fill_null(False) for name in OBSERVATIONS).to_numpy()


def split_of(name: str, table: pl.DataFrame) -> tuple[list[str], list[Labeled], pl.DataFrame]:
    """The split's texts, the labels of ``table`` for them (as Labeled) and its gold labels."""
    part = reports.filter(pl.col("split") == name)
    rows = part.select("study_id").join(table, on="study_id", how="left", maintain_order="left")
    labeled = [Labeled({name: row[name] for name in OBSERVATIONS}) for row in rows.iter_rows(named=True)]
    return part["text"].to_list(), labeled, corpus.gold.join(part.select("study_id"), on="study_id", how="semi", maintain_order="left")


def as_table(study_ids: pl.Series, labeled: list[Labeled]) -> pl.DataFrame:
    return labeled_frame(labeled).insert_column(0, study_ids)


def per_observation(gold: pl.DataFrame, table: pl.DataFrame) -> np.ndarray:
    return weighted_f1_from_counts(score(gold, "positive_only", table).counts.sum(axis=0))


train = reports["split"] == "train"
train_texts, train_rule, _ = split_of("train", rule)
validate_texts, validate_rule, validate_gold = split_of("validate", rule)
validate_ids = validate_gold["study_id"]
print(f"## Validate ({validate_gold.height} reports): the rule labeler, corrected by stages of each --min-positives\n")
print("| stage | observations staged | positive F1 |\n| --- | --- | ---: |")
print(f"| none (the rule labeler) | - | {np.nanmean(per_observation(validate_gold, rule)):.4f} |")
stages, scores = {}, {}
workspace = tempfile.mkdtemp(prefix="expert_stage_")
for k in args.min_positives:
    stage = train_expert_stage(train_texts, [item.labels for item in train_rule], expert_positive[train.to_numpy()],
                               f"{workspace}/{k}", ExpertStageSettings(min_positives=k))
    corrected = as_table(validate_ids, stage.correct(validate_texts, validate_rule))
    stages[k], scores[k] = stage, float(np.nanmean(per_observation(validate_gold, corrected)))
    print(f"| min_positives {k} | {len(stage.observations)}: {', '.join(stage.observations)} | {scores[k]:.4f} |")
chosen = max(args.min_positives, key=lambda k: (round(scores[k], 4), k))
print(f"\nchosen on validate: min_positives {chosen}")

test_texts, test_rule, test_gold = split_of("test", rule)
test_ids = test_gold["study_id"]
tables = {"rule": rule, "rule + expert stage": as_table(test_ids, stages[chosen].correct(test_texts, test_rule))}
for path in sorted(Path(args.results).glob("predictions/*.parquet")) if args.results else []:
    if not path.stem.endswith("_scores"):
        tables[path.stem] = pl.read_parquet(path)
        texts, labeled, _ = split_of("test", tables[path.stem])
        tables[f"{path.stem} + expert stage"] = as_table(test_ids, stages[chosen].correct(texts, labeled))

scored = {name: score(test_gold, "positive_only", table) for name, table in tables.items()}
confidence, boots = confidence_table(scored, "positive_only", args.resamples, 0)
f1 = {name: weighted_f1_from_counts(s.counts.sum(axis=0)) for name, s in scored.items()}
print(f"\n## Test ({test_gold.height} reports), scored once: positive F1 against the indexers\n")
print("| labeler | positive F1 | 95% CI | vs rule | paired bootstrap 95% CI | bootstrap p | t p | Wilcoxon p |")
print("| --- | ---: | --- | ---: | --- | ---: | ---: | ---: |")
for row in confidence.iter_rows(named=True):
    name = row["labeler"]
    versus = compare_labelers(f1[name], f1["rule"], boots[name], boots["rule"]) if name != "rule" else None
    paired = f"{versus.bootstrap_low:+.3f} to {versus.bootstrap_high:+.3f} | {versus.bootstrap_p_value:.3f} | {versus.t_p_value:.3f} | {versus.wilcoxon_p_value:.3f}" if versus else "- | - | - | -"
    print(f"| {name} | {row['average']:.4f} | {row['ci_low']:.3f}-{row['ci_high']:.3f} | {row['average'] - np.nanmean(f1['rule']):+.4f} | {paired} |")
g = label_matrix(test_gold, rule)[0]
print("\n| observation | positives | " + " | ".join(tables) + " |\n| --- | ---: |" + " ---: |" * len(tables))
for j, name in enumerate(OBSERVATIONS):
    print(f"| {name} | {int(np.sum(g[:, j] == 1))} | " + " | ".join(f"{f1[t][j]:.3f}" for t in tables) + " |")
