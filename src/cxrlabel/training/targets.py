"""What the trained labelers learn from: silver labels, corrected by expert labels where a
training report has them (the CheXbert and CheX-LLM recipe: a labeler past its rule teacher
needs expert signal).

``expert.targets`` chooses, for the LLM and the BERT classifier alike:
- ``silver``: the silver labels only (CheXpert-labeler output, or the rule labeler's);
- ``corrected``: the silver labels, corrected by the expert labels of the training reports
  that have them (:func:`corrected_labels`), in one training stage;
- ``silver_then_expert``: training on the silver labels, then a second stage on the
  expert-labeled training reports alone, with their corrected labels (CheXbert's recipe).

Expert labels for training are those of the train split only (the corpus's gold labels where
they cover it: OpenI's indexer labels; the demo's and MIMIC-CXR's gold do not) and of an
optional expert-labels file (a site's radiologist labels), never of a test report: validate
chooses models and test scores them.

Positive-only expert labels (OpenI's indexers record the findings they count as present) say
only what they say: which findings are present. So they decide *positive or not*, and the silver
labels keep deciding among the rest (negative, uncertain, blank), which an absent index term
cannot tell apart. Per observation, with silver class s and expert e:
- e positive: positive (a hedged "probable small effusion" the indexers counted as present);
- s positive, e not: uncertain. Mentioned (the rules found it) but not counted present by the
  experts; "absent" would claim what a missing index term does not say;
- otherwise s.
No Finding is the exception: the indexers index every report, as normal or by its findings, so
a report not indexed as normal was judged abnormal (findings outside the 14 observations
included: granulomas, degenerative changes); its target is the expert's (1 or blank). Full
(4-class) expert labels simply replace the silver ones.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import polars as pl

from cxrlabel.io.labels import LabelKind, labels_schema, read_label_csv, read_labels, write_labels
from cxrlabel.io.records import BadInputError, DropLog
from cxrlabel.observations import NO_FINDING, OBSERVATIONS, Certainty

log = logging.getLogger(__name__)

TargetMode = Literal["silver", "corrected", "silver_then_expert"]
TARGET_MODES: tuple[str, ...] = get_args(TargetMode)
Labels = dict[str, int | None]


def corrected_label(silver: int | None, expert: int | None, kind: LabelKind, observation: str) -> int | None:
    """One observation's training label from its silver and its expert label (module docstring)."""
    if kind == "full" or observation == NO_FINDING:
        return expert
    if expert == Certainty.POSITIVE:
        return int(Certainty.POSITIVE)
    if silver == Certainty.POSITIVE:
        return int(Certainty.UNCERTAIN)
    return silver


def corrected_row(silver: Labels, expert: Labels, kind: LabelKind) -> Labels:
    """A report's training labels: its silver labels corrected by its expert labels."""
    return {name: corrected_label(silver.get(name), expert.get(name), kind, name) for name in OBSERVATIONS}


@dataclass
class Corrections:
    """What the expert labels changed: per observation, the count of each (silver -> target) move."""

    moves: dict[str, Counter] = field(default_factory=lambda: {name: Counter() for name in OBSERVATIONS})

    def count(self, silver: Labels, target: Labels) -> None:
        for name in OBSERVATIONS:
            if silver.get(name) != target.get(name):
                self.moves[name][f"{_word(silver.get(name))} -> {_word(target.get(name))}"] += 1

    def summary(self) -> dict[str, dict[str, int]]:
        return {name: dict(sorted(moves.items())) for name, moves in self.moves.items() if moves}


def _word(code: int | None) -> str:
    return "blank" if code is None else Certainty(code).word


@dataclass(frozen=True)
class ExpertLabels:
    """A set of expert labels for training reports, with how its blanks are to be read."""

    labels: pl.DataFrame
    kind: LabelKind
    source: str


def corrected_labels(silver: pl.DataFrame, experts: list[ExpertLabels]) -> tuple[pl.DataFrame, Corrections]:
    """``silver`` with the rows of expert-labeled reports corrected (:func:`corrected_row`, each
    set by its own kind; a later set wins where two label a report), in ``silver``'s order; an
    expert-labeled report without silver labels is corrected against an all-blank silver row.
    Also what the correction changed."""
    by_id = {row["study_id"]: (row, expert.kind) for expert in experts for row in expert.labels.iter_rows(named=True)}
    corrections = Corrections()
    rows = []
    for row in silver.iter_rows(named=True):
        if row["study_id"] in by_id:
            expert_row, kind = by_id.pop(row["study_id"])
            target = corrected_row(row, expert_row, kind)
            corrections.count(row, target)
            row = {"study_id": row["study_id"], **target}
        rows.append(row)
    for study_id, (expert_row, kind) in by_id.items():
        rows.append({"study_id": study_id, **corrected_row({}, expert_row, kind)})
    return pl.DataFrame(rows, schema=labels_schema(), orient="row"), corrections


def sentence_targets(sentence_labels: list[Labels], target: Labels) -> tuple[list[Labels], list[str]]:
    """A report's sentence labels (the rule labeler's, aggregated they give its silver labels)
    relabeled to reach the report's training labels ``target``: per observation whose target
    differs from the aggregated class s, the sentences of class s (those that decided it) take
    the target. No Finding stays blank (a report-level label, the sentences never carry it).

    Returns the sentence labels and the observations that could not be placed: a target for an
    observation no sentence mentions (s blank) has no sentence to teach it on.
    """
    from cxrlabel.observations import aggregate_mentions

    aggregated = aggregate_mentions(sentence_labels)
    relabeled = [dict(labels) for labels in sentence_labels]
    unplaced = []
    for name in OBSERVATIONS[1:]:
        silver, wanted = aggregated[name], target.get(name)
        if silver == wanted:
            continue
        if silver is None:
            unplaced.append(name)
            continue
        for labels in relabeled:
            if labels.get(name) == silver:
                labels[name] = wanted
    return relabeled, unplaced


def expert_training_sets(gold_path: str, reports_path: str, extra_path: str | None) -> tuple[list[ExpertLabels], dict]:
    """The expert labels a trainer may learn from: the gold labels of the train split's reports,
    and an expert-labels file's (CheXpert-format CSV, ``study_id`` + the 14 observations, read as
    full 4-class labels: a site's radiologist labels) for reports of the train split, with counts.

    Raises :class:`BadInputError` naming the studies if the file labels a report of the test split
    or of the gold labels the labelers are scored on (MIMIC-CXR's radiologist-labeled test set).
    Rows of the file for the validate split (it chooses the models) or for unknown studies are
    left out and counted.
    """
    gold, gold_kind = read_labels(gold_path)
    split_of = dict(pl.read_parquet(reports_path, columns=["study_id", "split"]).iter_rows())
    in_split = lambda frame, wanted: frame["study_id"].map_elements(lambda s: split_of.get(s) == wanted, return_dtype=pl.Boolean)  # noqa: E731
    train_gold = gold.filter(in_split(gold, "train"))
    sets = [ExpertLabels(train_gold, gold_kind, gold_path)] if train_gold.height else []
    counts: dict = {"gold_train_reports": train_gold.height}
    if not extra_path:
        return sets, counts
    extra = read_label_csv(extra_path, DropLog(strict=True))  # a bad row is an error naming its line
    # the evaluation's: the test split, and gold labels of no report kept for training or choosing
    scored = {s for s, split in split_of.items() if split == "test"} | {s for s in gold["study_id"] if split_of.get(s) not in ("train", "validate")}
    forbidden = sorted(set(extra["study_id"]) & scored)
    if forbidden:
        shown = ", ".join(forbidden[:5]) + (f" and {len(forbidden) - 5} more" if len(forbidden) > 5 else "")
        raise BadInputError(
            f"{extra_path}: {len(forbidden)} of its studies are in the test split or the gold labels of the evaluation "
            f"({shown}): the labelers are scored on those, so they may not learn from them"
        )
    kept = extra.filter(in_split(extra, "train"))
    counts |= {
        "file_reports": kept.height,
        "file_rows_left_out": {
            "validate_split": int(in_split(extra, "validate").sum()),
            "unknown_study": sum(s not in split_of for s in extra["study_id"]),
        },
    }
    return sets + ([ExpertLabels(kept, "full", extra_path)] if kept.height else []), counts


def write_targets(silver_path: str, gold_path: str, reports_path: str, extra_path: str | None, out_all: str, out_expert: str, summary_path: str) -> None:
    """The training labels (:func:`corrected_labels`) of every silver-labeled report (``out_all``)
    and of the expert-labeled training reports alone (``out_expert``, the second stage's), and a
    summary of what the expert labels changed."""
    silver, silver_kind = read_labels(silver_path)
    experts, counts = expert_training_sets(gold_path, reports_path, extra_path)
    corrected, corrections = corrected_labels(silver, experts)
    expert_ids = pl.concat([expert.labels.select("study_id") for expert in experts]) if experts else pl.DataFrame(schema={"study_id": pl.String})
    write_labels(corrected, out_all, "full")
    write_labels(corrected.join(expert_ids, on="study_id", how="semi"), out_expert, "full")
    summary = {
        "silver_kind": silver_kind,
        "expert_sets": [{"source": e.source, "kind": e.kind, "reports": e.labels.height} for e in experts],
        **counts,
        "changed": corrections.summary(),
    }
    Path(summary_path).write_text(json.dumps(summary, indent=2) + "\n")
    changed = sum(sum(moves.values()) for moves in corrections.moves.values())
    log.info("targets: %d training reports with expert labels; %d labels changed (%s)", expert_ids.height, changed, summary_path)


def sentence_training_rows(reports: pl.DataFrame, labels: pl.DataFrame) -> tuple[list[tuple[str, str, Labels]], Counter]:
    """Every sentence of every report (``study_id``, ``text``), in order, with its training labels:
    the rule labeler's labels of its mentions, relabeled so that a report's sentences aggregate to
    its ``labels`` (:func:`sentence_targets`); and per observation the count of labels no sentence
    could carry. The sentence-unit instructions and the sentence-unit BERT classifier learn from
    these rows."""
    from cxrlabel.labelers.rule import RuleLabeler
    from cxrlabel.text import split_sentences

    rule = RuleLabeler()
    by_id = {row["study_id"]: row for row in labels.iter_rows(named=True)}
    rows: list[tuple[str, str, Labels]] = []
    unplaced: Counter = Counter()
    for study_id, text in zip(reports["study_id"], reports["text"]):
        sentences = split_sentences(text)
        relabeled, missing = sentence_targets([rule.sentence_labels(sentence) for sentence in sentences], by_id[study_id])
        unplaced.update(missing)
        rows += [(study_id, sentence, sentence_labels) for sentence, sentence_labels in zip(sentences, relabeled)]
    return rows, unplaced

