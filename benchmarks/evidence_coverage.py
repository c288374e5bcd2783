"""Share of the rule labeler's non-blank labels that come with an evidence span, and its speed with and without evidence.

usage: python benchmarks/evidence_coverage.py [REPORTS_PARQUET] [--split test] [--repeats 5]

REPORTS_PARQUET is an ingested reports table (default: ../main/results/openi/corpus/reports.parquet,
the OpenI run's; columns study_id, split, text). Coverage is counted on the ``--split`` reports'
``text`` (what the labelers read): per observation, the non-blank labels, those with a span
(``text[start:end] == quote`` checked for each) and those with a cue. No Finding is positive when no
pathology is found and has no span by design: it is listed, but left out of the headline share
(the 13 mention-based observations); the share with it is printed too.
Speed: reports/s of ``label_batch`` without and with evidence on every report of the table, in
this process, alternating the two, best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl

from cxrlabel.labelers.rule import RuleLabeler
from cxrlabel.observations import NO_FINDING, OBSERVATIONS

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("reports", nargs="?", default=str(ROOT.parent / "main/results/openi/corpus/reports.parquet"))
parser.add_argument("--split", default="test")
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()

reports = pl.read_parquet(args.reports, columns=["study_id", "split", "text"])
texts = reports.filter(pl.col("split") == args.split)["text"].to_list()
labeler = RuleLabeler()
plain = labeler.label_batch(texts)
labeled = labeler.label_batch(texts, evidence=True)
assert [item.labels for item in plain] == [item.labels for item in labeled], "labels differ with evidence"

counts = {name: {"labels": 0, "span": 0, "cue": 0} for name in OBSERVATIONS}
for text, item in zip(texts, labeled):
    for name in OBSERVATIONS:
        if item.labels[name] is None:
            continue
        counts[name]["labels"] += 1
        evidence = item.evidence[name]
        if evidence is not None:
            assert text[evidence.start:evidence.end] == evidence.quote and evidence.quote
            counts[name]["span"] += 1
            counts[name]["cue"] += evidence.cue is not None


def share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


print(f"{args.reports}: split {args.split}, {len(texts)} reports")
print("| observation | non-blank labels | with a span | coverage | with a cue |\n| --- | ---: | ---: | ---: | ---: |")
for name, c in counts.items():
    note = " (by design: no span)" if name == NO_FINDING else ""
    print(f"| {name}{note} | {c['labels']} | {c['span']} | {share(c['span'], c['labels'])} | {c['cue']} |")
mentioned = [c for name, c in counts.items() if name != NO_FINDING]
labels, spans = sum(c["labels"] for c in mentioned), sum(c["span"] for c in mentioned)
print(f"| **13 mention-based observations** | {labels} | {spans} | **{share(spans, labels)}** | {sum(c['cue'] for c in mentioned)} |")
every, every_span = labels + counts[NO_FINDING]["labels"], spans + counts[NO_FINDING]["span"]
print(f"| all 14, No Finding counted as no span | {every} | {every_span} | {share(every_span, every)} | |")

everything = reports["text"].to_list()
best = {"without evidence": float("inf"), "with evidence": float("inf")}
for _ in range(args.repeats):
    for name, evidence in (("without evidence", False), ("with evidence", True)):
        start = time.perf_counter()
        labeler.label_batch(everything, evidence=evidence)
        best[name] = min(best[name], time.perf_counter() - start)
print(f"\nspeed on all {len(everything)} reports of the table, best of {args.repeats}:")
for name, wall in best.items():
    print(f"  {name}: {wall:.3f} s = {len(everything) / wall:,.0f} reports/s")
print(f"  evidence costs {100 * (best['with evidence'] / best['without evidence'] - 1):.0f}% more time")
