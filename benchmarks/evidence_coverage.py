"""Share of the rule labeler's non-blank labels that come with an evidence span, and its speed with and without evidence;
with ``--model``, the same coverage for an LLM labeler tuned to the ``evidence`` completion format.

usage: python benchmarks/evidence_coverage.py [REPORTS_PARQUET] [--split test] [--repeats 5] [--model DIR ...] [--limit N]

REPORTS_PARQUET is an ingested reports table (default: ../main/results/openi/corpus/reports.parquet,
the OpenI run's; columns study_id, split, text). Coverage is counted on the ``--split`` reports'
``text`` (what the labelers read): per observation, the non-blank labels, those with a span
(``text[start:end] == quote`` checked for each) and those with a cue. No Finding is positive when no
pathology is found and has no span by design: it is listed, but left out of the headline share
(the 13 mention-based observations); the share with it is printed too.
Speed: reports/s of ``label_batch`` without and with evidence on every report of the table, in
this process, alternating the two, best of ``--repeats``.

``--model DIR`` (repeatable): an LLM labeler's folder (its format must be ``evidence``). Its labels
of the same reports (the first ``--limit`` where given), with evidence: per observation the
non-blank labels, those whose quote was placed in the report (a span, ``text[start:end] == quote``
checked), those whose quote the report does not hold (misses, :attr:`Labeled.evidence_miss`) and
those answered with the bare word; and the time the labeling took (one pass, evidence included).
Each model is run twice, side by side: with its quotes copied from the unit's text (the default,
``LLMLabeler(copy_quotes=True)``) and written freely; the report x observation labels on which
the two differ are counted; with ``--gold LABELS_PARQUET`` (the ingested expert labels), each
run's positive F1 against them too (macro over the observations the split has positives of).
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
parser.add_argument("--model", action="append", default=[], help="an evidence-format LLM labeler's folder (repeatable)")
parser.add_argument("--limit", type=int, help="label only the first N reports of the split with each --model")
parser.add_argument("--batch-size", type=int, default=256, help="the LLM labeler's batch size")
parser.add_argument("--gold", help="expert labels (labels_gold.parquet): each --model run's positive F1 against them")
parser.add_argument("--max-new-tokens", type=int, default=256, help="the LLM labeler's answer room (quotes make answers longer)")
args = parser.parse_args()

reports = pl.read_parquet(args.reports, columns=["study_id", "split", "text"])
texts = reports.filter(pl.col("split") == args.split)["text"].to_list()


def span_counts(texts: list[str], labeled: list) -> dict[str, dict[str, int]]:
    """Per observation: its non-blank labels, those with a span (each checked: ``text[start:end] == quote``) and those with a cue."""
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
    return counts


def llm_coverage(model: str, copy_quotes: bool) -> list:
    from cxrlabel.labelers import label_batch, supports_evidence
    from cxrlabel.labelers.llm import LLMLabeler

    labeler = LLMLabeler(model, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, copy_quotes=copy_quotes)
    if not supports_evidence(labeler):
        raise SystemExit(f"{model}: its completion format is {labeler.prompt.format!r}, not 'evidence': it gives no quotes")
    chosen = texts[: args.limit] if args.limit else texts
    start = time.perf_counter()
    labeled = label_batch(labeler, chosen, evidence=True)
    seconds = time.perf_counter() - start
    tally = span_counts(chosen, labeled)
    misses = sum(item.evidence_miss for item in labeled)
    labels, spans = sum(c["labels"] for c in tally.values()), sum(c["span"] for c in tally.values())
    print(f"\n{model} ({labeler.prompt.unit} unit{', lower case' if labeler.prompt.lowercase else ''}; quotes {'copied' if copy_quotes else 'written freely'}): "
          f"{len(chosen)} reports of split {args.split} in {seconds:.1f} s ({len(chosen) / seconds:.1f} reports/s, evidence included), "
          f"{sum(i.format_error for i in labeled)} format errors")
    print("| observation | non-blank labels | with a span | coverage |\n| --- | ---: | ---: | ---: |")
    for name, c in tally.items():
        print(f"| {name} | {c['labels']} | {c['span']} | {share(c['span'], c['labels'])} |")
    mentioned = [c for name, c in tally.items() if name != NO_FINDING]
    print(f"| **13 mention-based observations** | {sum(c['labels'] for c in mentioned)} | {sum(c['span'] for c in mentioned)} | "
          f"**{share(sum(c['span'] for c in mentioned), sum(c['labels'] for c in mentioned))}** |")
    print(f"| all 14 | {labels} | {spans} | {share(spans, labels)} |")
    print(f"quotes not found in their report (misses): {misses} ({share(misses, labels)} of the non-blank labels); "
          f"labels answered without a quote: {labels - spans - misses}")
    if args.gold:
        print(f"positive F1 against {args.gold}: {positive_f1(chosen, labeled):.3f}")
    return labeled


def positive_f1(chosen: list[str], labeled: list) -> float:
    """Macro positive F1 of ``labeled`` (the first ``len(chosen)`` reports of the split) against ``--gold``."""
    from cxrlabel.evaluation.metrics import label_matrix, mean_ignoring_nan, positive_f1_by_observation
    from cxrlabel.io.labels import read_labels
    from cxrlabel.predict import labeled_frame

    ids = reports.filter(pl.col("split") == args.split)["study_id"][: len(chosen)]
    gold = read_labels(args.gold)[0].filter(pl.col("study_id").is_in(ids.to_list()))
    g, p, _ = label_matrix(gold, pl.concat([ids.to_frame(), labeled_frame(labeled)], how="horizontal"))
    return mean_ignoring_nan(positive_f1_by_observation(g, p))

labeler = RuleLabeler()
plain = labeler.label_batch(texts)
labeled = labeler.label_batch(texts, evidence=True)
assert [item.labels for item in plain] == [item.labels for item in labeled], "labels differ with evidence"

counts = span_counts(texts, labeled)


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

for model in args.model:
    free, copied = (llm_coverage(model, copy_quotes) for copy_quotes in (False, True))
    differ = sum(a.labels[name] != b.labels[name] for a, b in zip(free, copied) for name in OBSERVATIONS)
    print(f"\n{model}: labels that differ between free and copied quotes: {differ} of {len(free) * len(OBSERVATIONS)} report x observation cells")
