"""The preference collection set: pairs of label outputs for one report, the better one chosen.

Two sources of judgement:
- ``simulated``: candidate outputs sampled from the SFT policy are ranked by their agreement
  with the expert labels available (:func:`agreement`); every pair of candidates with
  different agreement is a pair, the better one chosen, with the difference as margin. Ties
  are not pairs. Identical candidates are de-duplicated before ranking.
- ``human``: a file of pairwise judgements (CSV or JSONL) with the columns of
  :data:`HUMAN_COLUMNS` (``cxrlabel review`` writes it); ties and skips carry no preference and
  are counted as such, invalid rows are reported with their line and reason, never dropped
  silently.

The set (``preferences.parquet``) has the columns of :data:`PREFERENCE_SCHEMA`.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from cxrlabel.instruct import CompletionFormat, PromptSettings, parse_completion
from cxrlabel.io.labels import LabelKind
from cxrlabel.io.records import BadInputError, DropLog
from cxrlabel.observations import OBSERVATIONS, aggregate_mentions

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


def agreement(output: str, expert: Labels, kind: LabelKind, fmt: CompletionFormat, context: Sequence[Labels] | None = None) -> float:
    """How well one output agrees with the expert labels of its report (higher is better).

    ``context`` None: the output labels the whole report. Otherwise the output labels one
    sentence and ``context`` holds the labels of the report's other sentences: the report's
    labels are all of them aggregated (:func:`~cxrlabel.observations.aggregate_mentions`), so a
    sentence's output is judged by the report labels it leads to.
    Full expert labels: the number of observations (of 14) whose class, blank included,
    matches. Positive-only labels (indexers record present findings only): true positives
    minus false positives, since a blank there is unknown rather than negative.
    A malformed output scores below every well-formed one.
    """
    parsed = parse_completion(output, fmt)
    if parsed.error is not None:
        return -float(len(OBSERVATIONS)) - 1
    labels = parsed.labels if context is None else aggregate_mentions([*context, parsed.labels])
    if kind == "full":
        return float(sum(labels[name] == expert.get(name) for name in OBSERVATIONS))
    predicted = {name for name in OBSERVATIONS if labels[name] == 1}
    present = {name for name in OBSERVATIONS if expert.get(name) == 1}
    return float(len(predicted & present) - len(predicted - present))


def rank_pairs(study_id: str, prompt: str, candidates: list[str], expert: Labels, kind: LabelKind, fmt: CompletionFormat, max_pairs: int, context: Sequence[Labels] | None = None) -> list[dict[str, object]]:
    """Chosen/rejected pairs among the distinct candidates of one prompt, largest margins first
    (``context``: see :func:`agreement`)."""
    distinct = list(dict.fromkeys(c.strip() for c in candidates))
    scored = sorted(((agreement(c, expert, kind, fmt, context), c) for c in distinct), key=lambda sc: -sc[0])
    pairs = [
        {"study_id": study_id, "prompt": prompt, "chosen": a, "rejected": b, "margin": sa - sb, "source": "simulated", "annotator": None}
        for (sa, a), (sb, b) in itertools.combinations(scored, 2)
        if sa > sb
    ]
    return sorted(pairs, key=lambda p: -p["margin"])[:max_pairs]


def read_human_judgements(path: str, reports: pl.DataFrame, prompt: PromptSettings, drops: DropLog) -> pl.DataFrame:
    """Pairs from a radiologist's judgements; ties and skips, and rows naming an unknown study, an
    invalid choice, or two identical outputs are dropped into ``drops`` with their line and reason."""
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
        elif preferred in ("tie", "skip"):
            drops.drop(*where, preferred, f"judged {preferred}: no preferred output")
        elif preferred not in ("a", "b"):
            drops.drop(*where, "invalid_choice", f"preferred must be 'a', 'b', 'tie' or 'skip', found {row['preferred']!r}")
        elif not row["output_a"] or not row["output_b"] or row["output_a"].strip() == row["output_b"].strip():
            drops.drop(*where, "not_a_pair", "output_a and output_b must be two different, non-empty outputs")
        else:
            chosen, rejected = (row["output_a"], row["output_b"]) if preferred == "a" else (row["output_b"], row["output_a"])
            rows.append({"study_id": row["study_id"], "prompt": prompt.build(texts[row["study_id"]]), "chosen": chosen.strip(), "rejected": rejected.strip(), "margin": 1.0, "source": "human", "annotator": row["annotator"]})
    return pl.DataFrame(rows, schema=PREFERENCE_SCHEMA)


def simulated_preferences(policy_dir: str, reports: pl.DataFrame, expert: pl.DataFrame, kind: LabelKind, n_candidates: int, temperature: float, max_pairs: int, seed: int, batch_size: int, max_new_tokens: int) -> pl.DataFrame:
    """Sample candidates from the policy for every report with expert labels, and rank them.

    A sentence-unit policy is sampled per distinct sentence; each candidate is judged by the
    report labels it leads to with the report's other sentences labeled greedily by the policy.
    """
    from cxrlabel.labelers.llm import LLMLabeler

    policy = LLMLabeler(policy_dir, batch_size=batch_size, max_new_tokens=max_new_tokens)
    judged = reports.join(expert, on="study_id", how="inner", maintain_order="left")
    if judged.height == 0:
        raise BadInputError("no report of the preference split has expert labels: use rlhf.judge: human with a judgements file")
    units = [policy.units(text) for text in judged["text"]]
    distinct = list(dict.fromkeys(unit for report in units for unit in report))
    prompts = [policy.prompt_ids(unit)[0] for unit in distinct]
    candidates = dict(zip(distinct, policy.sample(prompts, n_candidates, temperature, seed)))
    greedy = dict(zip(distinct, (policy.parse(output).labels for output in policy.generate(prompts)))) if policy.prompt.unit == "sentence" else {}
    pairs = []
    for row, report in zip(judged.iter_rows(named=True), units):
        labels = {name: row[name] for name in OBSERVATIONS}
        report_pairs = []
        for i, unit in enumerate(report):
            context = [greedy[other] for j, other in enumerate(report) if j != i] if greedy else None
            prompt = policy.prompt.build(unit)
            report_pairs += rank_pairs(row["study_id"], prompt, candidates[unit], labels, kind, policy.prompt.format, max_pairs, context)
        pairs += sorted(report_pairs, key=lambda p: -p["margin"])[:max_pairs]
    n_distinct = sum(len(set(c.strip() for c in outputs)) for outputs in candidates.values())
    log.info("%d reports, %d %ss, %d candidates (%d distinct), %d pairs; %d reports without any pair (all candidates tied)",
             judged.height, len(distinct), policy.prompt.unit, n_candidates * len(distinct), n_distinct, len(pairs), judged.height - len({p["study_id"] for p in pairs}))
    return pl.DataFrame(pairs, schema=PREFERENCE_SCHEMA)


def collect_preferences(inputs: dict[str, str], rlhf: dict, prompt: PromptSettings, batch_size: int, max_new_tokens: int, out: dict[str, str], review_pairs: str = "review/pairs.csv") -> pl.DataFrame:
    """Build the preference set from the configured judge and write it with its dropped rows.

    Human judgements that do not exist yet stop here with the commands that collect them
    (``review_pairs``: where the review_set rule writes the pairs to judge)."""
    from cxrlabel.io.labels import read_labels

    reports = pl.read_parquet(inputs["reports"]).filter(pl.col("split") == rlhf["preference_split"])
    drops = DropLog()
    if rlhf["judge"] == "human":
        if "judgements" not in inputs:
            raise BadInputError(
                f"rlhf.human_judgements: {rlhf['human_judgements']} does not exist. Radiologists produce it: "
                f"`snakemake --configfile <your config> review_set` writes the pairs to judge ({review_pairs}), then "
                f"`cxrlabel review --pairs {review_pairs} --judgements {rlhf['human_judgements']}` serves the page that records their judgements there (README: Expert preference review)"
            )
        pairs = read_human_judgements(inputs["judgements"], reports, prompt, drops)
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
