"""How far RL could move an LLM labeler by choosing among its own samples: the best-of-K headroom.

usage: python benchmarks/rl_headroom.py RESULTS [--model DIR] [--split validate ...] [--candidates 8]
       [--temperature 0.7 1.25 1.5] [--seed 13] [--limit N] [--batch-size 256]

RESULTS is a run's results folder: its corpus/reports.parquet, corpus/labels_gold.parquet and, unless
``--model`` says otherwise, models/sft. For every report of the ``--split`` splits that has expert
labels, the policy's greedy output and ``--candidates`` samples per unit at each temperature are drawn
as the preferences rule draws them (:class:`~cxrlabel.sampling.CandidateSampler`, per distinct unit).

The oracle then picks, unit by unit, the candidate (the greedy output included) with the highest
:func:`~cxrlabel.training.preferences.label_reward` given the report's other units as chosen so far
(coordinate ascent, passes until nothing changes): the labels a policy would give if RL taught it to
prefer the best of what it already samples, and nothing more. PPO, GRPO and RLOO from this start
learn from the policy's own samples: where none is better than the greedy answer, the reward has
nothing to pull towards, so the oracle's gain is the room RL has at that temperature and K (not a
strict bound: a policy could generalize beyond its samples). It reads the expert labels: it is a
diagnostic, not a labeler, and is meant for the splits RL learns from (train, validate), never for
choosing on test.

Printed per temperature: positive F1 (macro over the observations with expert positives) against the
expert labels of greedy decoding, the oracle and the rule labeler (the SFT model's teacher); the
report x observation errors (false positive + false negative) of greedy decoding and how many of them
the oracle fixes (and breaks), in all and per observation; distinct candidates and distinct label sets per unit.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from cxrlabel.evaluation.metrics import label_matrix, mean_ignoring_nan, positive_f1_by_observation
from cxrlabel.instruct import units_of
from cxrlabel.io.labels import labels_schema, read_labels
from cxrlabel.labelers.llm import LLMLabeler
from cxrlabel.labelers.no_finding import NoFindingModel
from cxrlabel.labelers.rule import RuleLabeler
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.sampling import CandidateSampler
from cxrlabel.training.preferences import counted_observations, label_reward

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("results", help="a run's results folder")
parser.add_argument("--model", help="the policy's folder (default: RESULTS/models/sft)")
parser.add_argument("--split", nargs="+", default=["validate"])
parser.add_argument("--candidates", type=int, default=8)
parser.add_argument("--temperature", type=float, nargs="+", default=[0.7, 1.25, 1.5])
parser.add_argument("--seed", type=int, default=13)
parser.add_argument("--limit", type=int, help="only the first N reports with expert labels")
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--max-new-tokens", type=int, default=128)
parser.add_argument("--no-finding-model", help="the labeler's learned No Finding model (models/no_finding): No Finding is then its, and the reward counts the 13 others")
args = parser.parse_args()

results = Path(args.results)
expert, kind = read_labels(results / "corpus/labels_gold.parquet")
reports = pl.read_parquet(results / "corpus/reports.parquet", columns=["study_id", "split", "text"]).filter(pl.col("split").is_in(args.split))
judged = reports.join(expert, on="study_id", how="inner", maintain_order="left").head(args.limit or reports.height)
gold = judged.select(labels_schema().keys())
policy_dir = str(Path(args.model or results / "models/sft"))
sampler = CandidateSampler(policy_dir, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, threads=2)
policy = LLMLabeler(policy_dir)  # parses and combines outputs as the labeler does
normal = NoFindingModel.load(args.no_finding_model).normal(judged["text"].to_list()) if args.no_finding_model else [True] * judged.height
counted = counted_observations(bool(args.no_finding_model))
prompt = policy.prompt
units = [units_of(text, prompt.unit) for text in judged["text"]]
distinct = list(dict.fromkeys(unit for report in units for unit in report))
print(f"{results}: splits {args.split}, {judged.height} reports with {kind} expert labels, {len(distinct)} distinct {prompt.unit}s; policy {policy_dir}")


def report_labels(outputs: list[str], is_normal: bool) -> dict[str, int | None]:
    """A report's labels from its units' outputs, as the LLM labeler combines them (with its No Finding model)."""
    labels = policy.combine([policy.parse(output) for output in outputs])
    return labels if is_normal else labels | {"No Finding": None}


def best_of(report: list[str], options: dict[str, list[str]], greedy: dict[str, str], expert_labels: dict[str, int | None]) -> list[str]:
    """Each unit's output chosen by coordinate ascent on the report's reward, from its greedy output."""
    chosen = [greedy[unit] for unit in report]
    changed = True
    while changed:
        changed = False
        for i, unit in enumerate(report):
            context = None if prompt.unit == "report" else [policy.parse(o).labels for j, o in enumerate(chosen) if j != i]
            rewards = {output: label_reward(output, expert_labels, kind, prompt.format, context, counted) for output in options[unit]}
            best = max(rewards, key=rewards.get)
            if rewards[best] > rewards[chosen[i]]:
                chosen[i], changed = best, True
    return chosen


def scored(labels: list[dict[str, int | None]]) -> tuple[float, np.ndarray, np.ndarray]:
    """Positive F1 against the expert labels, and the error cells (FP or FN on positives)."""
    frame = pl.DataFrame([{"study_id": sid, **row} for sid, row in zip(judged["study_id"], labels)], schema=labels_schema(), orient="row")
    g, p, _ = label_matrix(gold, frame)
    return mean_ignoring_nan(positive_f1_by_observation(g, p)), (g == 1) != (p == 1), p


start = time.perf_counter()
rule_f1, _, _ = scored([item.labels for item in RuleLabeler().label_batch(judged["text"].to_list())])
expert_rows = judged.select(OBSERVATIONS).to_dicts()
for number, temperature in enumerate(args.temperature):
    # the greedy outputs come with the first temperature's samples
    sampled, greedy_list = sampler.sample(distinct, args.candidates, temperature, args.seed, greedy=number == 0)
    if number == 0:
        greedy_outputs = {unit: output.strip() for unit, output in zip(distinct, greedy_list)}
        greedy_f1, greedy_errors, greedy_p = scored([report_labels([greedy_outputs[u] for u in report], n) for report, n in zip(units, normal)])
    options = {unit: list(dict.fromkeys([greedy_outputs[unit], *(c.strip() for c in candidates)])) for unit, candidates in zip(distinct, sampled)}
    label_sets = [len({tuple(policy.parse(o).labels.items()) for o in outs}) for outs in options.values()]
    malformed = sum(policy.parse(c.strip()).error is not None for cs in sampled for c in cs)
    oracle_f1, oracle_errors, oracle_p = scored([report_labels(best_of(report, options, greedy_outputs, row), n) for report, row, n in zip(units, expert_rows, normal)])
    print(f"\ntemperature {temperature}, {args.candidates} candidates per {prompt.unit} ({time.perf_counter() - start:.0f} s so far):")
    print(f"  distinct outputs per {prompt.unit} (greedy included): {np.mean([len(o) for o in options.values()]):.2f}; distinct label sets: {np.mean(label_sets):.2f}; "
          f"{prompt.unit}s with more than one label set: {np.mean(np.array(label_sets) > 1):.1%}; malformed samples: {malformed / max(1, len(sampled) * args.candidates):.1%}")
    print("  | labels | positive F1 | errors (FP + FN) |\n  | --- | ---: | ---: |")
    print(f"  | greedy (the SFT labeler) | {greedy_f1:.4f} | {int(greedy_errors.sum())} |")
    print(f"  | best of its samples (oracle) | {oracle_f1:.4f} | {int(oracle_errors.sum())} |")
    print(f"  | rule labeler (the teacher) | {rule_f1:.4f} | |")
    print(f"  greedy errors the oracle fixes: {int((greedy_errors & ~oracle_errors).sum())} of {int(greedy_errors.sum())}; "
          f"cells it gets wrong that greedy got right: {int((~greedy_errors & oracle_errors).sum())}; "
          f"report x observation labels changed: {int(((greedy_p != oracle_p) & ~(np.isnan(greedy_p) & np.isnan(oracle_p))).sum())} of {greedy_p.size}")
    print("  errors by observation, greedy -> oracle: " + ", ".join(
        f"{name} {int(g)} -> {int(o)}" for name, g, o in zip(OBSERVATIONS, greedy_errors.sum(axis=0), oracle_errors.sum(axis=0)) if g or o))
