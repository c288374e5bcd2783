"""What radiologists review: blinded pairs of label outputs for one report, and their judgements.

The review set (``review/pairs.csv``, :data:`PAIR_COLUMNS`) holds, for the reports of the
preference split, distinct pairs of candidate outputs sampled from the SFT model. Pairs are
shuffled and each pair's sides drawn at random, and nothing in a row says which sample a side
came from: a reviewer cannot favour a position or a source.

The judgements file (:data:`JUDGEMENT_COLUMNS`) is what the ``preferences`` rule reads
(``rlhf.human_judgements``): ``study_id, output_a, output_b, preferred, annotator``, then
``pair_id, comment, judged_at``. ``preferred`` is ``a``, ``b``, ``tie`` or ``skip``; ties and
skips are kept in the file (a resumed review does not show them again) and counted, not paired,
by the preferences rule. A judgement is of a pair's content (:func:`pair_key`), not its
``pair_id``: a rerun of ``review_set`` renumbers the pairs, and a returning annotator then resumes
at the first pair whose report and outputs they have not judged.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from cxrlabel.io.records import BadInputError
from cxrlabel.review.csvfile import AppendOnlyCsv
from cxrlabel.sampling import CandidateSampler

log = logging.getLogger(__name__)

PAIR_COLUMNS = ("pair_id", "study_id", "text", "output_a", "output_b")
JUDGEMENT_COLUMNS = ("study_id", "output_a", "output_b", "preferred", "annotator", "pair_id", "comment", "judged_at")
CHOICES = ("a", "b", "tie", "skip")


def pair_key(pair: dict[str, str | None]) -> tuple[str, str, str]:
    """What a judgement is of: the report and its two outputs, whichever side each is on (a pair,
    or a judgements row, where a hand-edited file may have left a field empty)."""
    a, b = sorted(((pair["output_a"] or "").strip(), (pair["output_b"] or "").strip()))
    return pair["study_id"] or "", a, b


def blinded_pairs(study_ids: Sequence[str], texts: Sequence[str], candidates: Sequence[Sequence[str]], max_pairs: int, seed: int) -> pl.DataFrame:
    """The review set: per report, at most ``max_pairs`` pairs of its distinct candidates (drawn at
    random when there are more), every pair's sides swapped at random, all pairs shuffled, and
    ``pair_id`` numbered in the shuffled order (so it says nothing of the source either)."""
    rng = random.Random(seed)
    rows = []
    for study_id, text, outputs in zip(study_ids, texts, candidates):
        distinct = list(dict.fromkeys(output.strip() for output in outputs if output.strip()))
        pairs = list(itertools.combinations(distinct, 2))
        for a, b in rng.sample(pairs, min(max_pairs, len(pairs))):
            rows.append((study_id, text, *((b, a) if rng.random() < 0.5 else (a, b))))
    rng.shuffle(rows)
    numbered = [(f"p{index:05d}", *row) for index, row in enumerate(rows, start=1)]
    return pl.DataFrame(numbered, schema={name: pl.String for name in PAIR_COLUMNS}, orient="row")


def review_set(sampler: CandidateSampler, reports: pl.DataFrame, n_candidates: int, temperature: float, max_pairs: int, seed: int) -> pl.DataFrame:
    """Sample ``n_candidates`` outputs per report from the policy and pair them (:func:`blinded_pairs`)."""
    unit = sampler.prompt.unit
    if unit != "report":
        raise BadInputError(f"{sampler.policy_dir}: a {unit}-unit model: reviewers judge outputs for whole reports (instruct.unit: report)")
    texts = reports["text"].to_list()
    candidates, _ = sampler.sample(texts, n_candidates, temperature, seed)
    return blinded_pairs(reports["study_id"].to_list(), texts, candidates, max_pairs, seed)


def write_review_set(policy_dir: str, reports_path: str, rlhf: dict, sampling: dict[str, Any], out: str) -> pl.DataFrame:
    """The review set of the reports of ``rlhf["preference_splits"]`` (the rlhf settings of the
    preferences rule: candidates, temperature, max_pairs_per_report, seed), written as CSV.
    ``sampling``: the :class:`~cxrlabel.sampling.CandidateSampler` settings other than the policy."""
    reports = pl.read_parquet(reports_path).filter(pl.col("split").is_in(rlhf["preference_splits"]))
    sampler = CandidateSampler(policy_dir, **sampling)
    pairs = review_set(sampler, reports, rlhf["candidates"], rlhf["temperature"], rlhf["max_pairs_per_report"], rlhf["seed"])
    pairs.write_csv(out)
    log.info("review set: %d pairs from %d %s reports (%d reports with a single distinct candidate, no pair) -> %s",
             pairs.height, reports.height, "+".join(rlhf["preference_splits"]), reports.height - pairs["study_id"].n_unique(), out)
    return pairs


def read_pairs(path: str | Path) -> pl.DataFrame:
    """The review set at ``path``, checked: every column present, every field filled, pair ids
    unique, the two outputs different. A bad file raises naming the file, line and problem."""
    try:
        table = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as error:
        raise BadInputError(f"{path}: not a readable CSV: {error}") from error
    missing = [name for name in PAIR_COLUMNS if name not in table.columns]
    if missing:
        raise BadInputError(f"{path}: line 1 (header): missing column(s) {missing}; expected {list(PAIR_COLUMNS)}")
    if table.height == 0:
        raise BadInputError(f"{path}: no pairs to review")
    seen: set[str] = set()
    for line, row in enumerate(table.select(PAIR_COLUMNS).iter_rows(named=True), start=2):
        empty = [name for name in PAIR_COLUMNS if not (row[name] or "").strip()]
        if empty:
            raise BadInputError(f"{path}: line {line}: empty {', '.join(empty)}")
        if row["pair_id"] in seen:
            raise BadInputError(f"{path}: line {line}: pair_id {row['pair_id']!r} appears twice")
        if row["output_a"].strip() == row["output_b"].strip():
            raise BadInputError(f"{path}: line {line}: output_a and output_b are the same output: not a pair")
        seen.add(row["pair_id"])
    return table.select(PAIR_COLUMNS)


class JudgementStore:
    """The judgements file (:class:`~cxrlabel.review.csvfile.AppendOnlyCsv`: checked and locked at
    opening, each judgement one line synced to disk before the call returns, so a killed server
    loses nothing that was acknowledged). Its rows tell each annotator's judged pairs
    (:func:`pair_key`), so a review resumes where it stopped, in this review set or a regenerated one."""

    def __init__(self, path: str | Path):
        self.file = AppendOnlyCsv(path, JUDGEMENT_COLUMNS)
        self.path = self.file.path
        self.lock = threading.Lock()
        self.judged: dict[str, set[tuple[str, str, str]]] = {}
        for row in self.file.rows:
            self.judged.setdefault(row["annotator"], set()).add(pair_key(row))

    def judged_by(self, annotator: str) -> set[tuple[str, str, str]]:
        with self.lock:
            return set(self.judged.get(annotator, ()))

    def append(self, pair: dict[str, str], preferred: str, annotator: str, comment: str) -> bool:
        """Record one judgement; False (and nothing written) if ``annotator`` already judged the pair
        (under any ``pair_id``). A failed write raises :class:`~cxrlabel.review.csvfile.AppendFailed`."""
        if preferred not in CHOICES:
            raise ValueError(f"preferred must be one of {CHOICES}, not {preferred!r}")
        row = {
            "study_id": pair["study_id"], "output_a": pair["output_a"], "output_b": pair["output_b"], "preferred": preferred,
            "annotator": annotator, "pair_id": pair["pair_id"], "comment": comment, "judged_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with self.lock:
            if pair_key(pair) in self.judged.get(annotator, ()):
                return False
            self.file.append(row)
            self.judged.setdefault(annotator, set()).add(pair_key(pair))
            return True

    def close(self) -> None:
        self.file.close()
