"""The preference collection set: pairs of label outputs for one report, the better one chosen.

Two sources of judgement:
- ``simulated``: candidate outputs sampled from the SFT policy are ranked by their agreement
  with the expert labels available (:func:`agreement`); every pair of candidates with
  different agreement is a pair, the better one chosen, with the difference as margin. Ties
  are not pairs. Identical candidates are de-duplicated before ranking.
- ``human``: a file of pairwise judgements (CSV or JSONL) with the columns of
  :data:`HUMAN_COLUMNS`; invalid rows are reported with their line and reason, never dropped
  silently.

The set (``preferences.parquet``) has the columns of :data:`PREFERENCE_SCHEMA`.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import polars as pl

from cxrlabel.instruct import CompletionFormat, build_prompt, parse_completion
from cxrlabel.io.labels import LabelKind
from cxrlabel.io.records import BadInputError, DropLog
from cxrlabel.observations import OBSERVATIONS

log = logging.getLogger(__name__)

PREFERENCE_SCHEMA = {
    "study_id": pl.String,
    "prompt": pl.String,
    "chosen": pl.String,
    "rejected": pl.String,
    "margin": pl.Float64,
    "source": pl.String,  # simulated / human
    "annotator": pl.String,  # null for simulated judgements
}
HUMAN_COLUMNS = ("study_id", "output_a", "output_b", "preferred", "annotator")
Labels = dict[str, int | None]


def agreement(output: str, expert: Labels, kind: LabelKind, fmt: CompletionFormat) -> float:
    """How well one output agrees with the expert labels of its report (higher is better).

    Full expert labels: the number of observations (of 14) whose class, blank included,
    matches. Positive-only labels (indexers record present findings only): true positives
    minus false positives, since a blank there is unknown rather than negative.
    A malformed output scores below every well-formed one.
    """
    parsed = parse_completion(output, fmt)
    if parsed.error is not None:
        return -float(len(OBSERVATIONS)) - 1
    if kind == "full":
        return float(sum(parsed.labels[name] == expert.get(name) for name in OBSERVATIONS))
    predicted = {name for name in OBSERVATIONS if parsed.labels[name] == 1}
    present = {name for name in OBSERVATIONS if expert.get(name) == 1}
    return float(len(predicted & present) - len(predicted - present))


def rank_pairs(study_id: str, prompt: str, candidates: list[str], expert: Labels, kind: LabelKind, fmt: CompletionFormat, max_pairs: int) -> list[dict[str, object]]:
    """Chosen/rejected pairs among the distinct candidates of one report, largest margins first."""
    distinct = list(dict.fromkeys(c.strip() for c in candidates))
    scored = sorted(((agreement(c, expert, kind, fmt), c) for c in distinct), key=lambda sc: -sc[0])
    pairs = [
        {"study_id": study_id, "prompt": prompt, "chosen": a, "rejected": b, "margin": sa - sb, "source": "simulated", "annotator": None}
        for (sa, a), (sb, b) in itertools.combinations(scored, 2)
        if sa > sb
    ]
    return sorted(pairs, key=lambda p: -p["margin"])[:max_pairs]


def read_human_judgements(path: str, reports: pl.DataFrame, fmt: CompletionFormat, drops: DropLog) -> pl.DataFrame:
    """Pairs from a radiologist's judgements; rows naming an unknown study, an invalid choice, or
    two identical outputs are dropped into ``drops`` with their line."""
    source = Path(path)
    if source.suffix == ".jsonl":
        records = []
        for number, line in enumerate(source.read_text().splitlines(), start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise BadInputError(f"{path}: line {number}: not JSON: {error.msg}") from error
        raw = pl.DataFrame(records, schema={c: pl.String for c in HUMAN_COLUMNS})
        first_line = 1
    else:
        raw = pl.read_csv(source, infer_schema=False)
        first_line = 2
    missing = [c for c in HUMAN_COLUMNS if c not in raw.columns]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {missing}; expected {list(HUMAN_COLUMNS)}")
    texts = dict(zip(reports["study_id"], reports["text"]))
    rows = []
    for index, row in enumerate(raw.iter_rows(named=True)):
        where = (path, f"line {index + first_line}", row["study_id"])
        preferred = (row["preferred"] or "").strip().lower()
        if row["study_id"] not in texts:
            drops.drop(*where, "unknown_study", f"study_id {row['study_id']!r} is not in the reports table")
        elif preferred not in ("a", "b"):
            drops.drop(*where, "invalid_choice", f"preferred must be 'a' or 'b', found {row['preferred']!r}")
        elif not row["output_a"] or not row["output_b"] or row["output_a"].strip() == row["output_b"].strip():
            drops.drop(*where, "not_a_pair", "output_a and output_b must be two different, non-empty outputs")
        else:
            chosen, rejected = (row["output_a"], row["output_b"]) if preferred == "a" else (row["output_b"], row["output_a"])
            rows.append({"study_id": row["study_id"], "prompt": build_prompt(texts[row["study_id"]], fmt), "chosen": chosen.strip(), "rejected": rejected.strip(), "margin": 1.0, "source": "human", "annotator": row["annotator"]})
    return pl.DataFrame(rows, schema=PREFERENCE_SCHEMA)


def simulated_preferences(policy_dir: str, reports: pl.DataFrame, expert: pl.DataFrame, kind: LabelKind, n_candidates: int, temperature: float, max_pairs: int, seed: int, batch_size: int, max_new_tokens: int) -> pl.DataFrame:
    """Sample candidates from the policy for every report with expert labels, and rank them."""
    from cxrlabel.labelers.llm import LLMLabeler

    policy = LLMLabeler(policy_dir, batch_size=batch_size, max_new_tokens=max_new_tokens)
    judged = reports.join(expert, on="study_id", how="inner", maintain_order="left")
    if judged.height == 0:
        raise BadInputError("no report of the preference split has expert labels: use rlhf.judge: human with a judgements file")
    prompts = [build_prompt(text, policy.format) for text in judged["text"]]
    candidates = policy.sample([policy.prompt_ids(text)[0] for text in judged["text"]], n_candidates, temperature, seed)
    pairs = []
    for row, prompt, outputs in zip(judged.iter_rows(named=True), prompts, candidates):
        pairs += rank_pairs(row["study_id"], prompt, outputs, {name: row[name] for name in OBSERVATIONS}, kind, policy.format, max_pairs)
    distinct = sum(len(set(c.strip() for c in outputs)) for outputs in candidates)
    log.info("%d reports, %d candidates (%d distinct), %d pairs; %d reports without any pair (all candidates tied)",
             judged.height, n_candidates * judged.height, distinct, len(pairs), judged.height - len({p["study_id"] for p in pairs}))
    return pl.DataFrame(pairs, schema=PREFERENCE_SCHEMA)


def collect_preferences(inputs: dict[str, str], rlhf: dict, fmt: CompletionFormat, batch_size: int, max_new_tokens: int, out: dict[str, str]) -> pl.DataFrame:
    """Build the preference set from the configured judge and write it with its dropped rows."""
    from cxrlabel.io.labels import read_labels

    reports = pl.read_parquet(inputs["reports"]).filter(pl.col("split") == rlhf["preference_split"])
    drops = DropLog()
    if rlhf["judge"] == "human":
        pairs = read_human_judgements(inputs["judgements"], reports, fmt, drops)
    else:
        expert, kind = read_labels(inputs["expert"])
        pairs = simulated_preferences(
            inputs["policy"], reports, expert, kind, rlhf["candidates"], rlhf["temperature"],
            rlhf["max_pairs_per_report"], rlhf["seed"], batch_size, max_new_tokens,
        )
    pairs.write_parquet(out["pairs"])
    drops.frame().write_parquet(out["dropped"])
    counts = pairs.group_by("source").len().sort("source").rows()
    log.info("preference set: %d pairs %s from %d reports; %d judgement rows dropped %s", pairs.height, dict(counts), pairs["study_id"].n_unique(), len(drops.rows), drops.counts())
    return pairs
