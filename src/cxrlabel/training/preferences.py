"""The preference collection set: pairs of label outputs for one report, the better one chosen.

Two sources of judgement:
- ``simulated``: candidate outputs sampled from the SFT policy are ranked by their reward
  against the expert labels available (:func:`label_reward`, per observation); every pair of
  candidates with different rewards is a pair, the better one chosen, with the difference as
  margin. Ties are not pairs. Identical candidates are de-duplicated before ranking.
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
from typing import Any

import polars as pl

from cxrlabel.instruct import CompletionFormat, PromptSettings, parse_completion, units_of
from cxrlabel.io.labels import LabelKind
from cxrlabel.io.records import BadInputError, DropLog
from cxrlabel.observations import OBSERVATIONS, aggregate_mentions
from cxrlabel.sampling import CandidateSampler

log = logging.getLogger(__name__)

PREFERENCE_SCHEMA = {
    "study_id": pl.String,
    "prompt": pl.String,
    "chosen": pl.String,
    "rejected": pl.String,
    "margin": pl.Float64,
    "source": pl.String,  # simulated / human
    "annotator": pl.String,  # null for simulated judgements
    "rejected_malformed": pl.Boolean,  # a format lesson: the rejected output does not parse
}
HUMAN_COLUMNS = ("study_id", "output_a", "output_b", "preferred", "annotator")
Labels = dict[str, int | None]


MALFORMED_REWARD = -float(len(OBSERVATIONS)) - 1  # below every well-formed output


def observation_credit(predicted: int | None, expert: int | None, kind: LabelKind) -> float:
    """The credit of one observation's predicted class against the expert's (1 positive, -1
    uncertain, 0 negative, None blank).

    Full expert labels (4 classes): 1 for the expert's class; 0.5 where both mention the finding
    and one of them is uncertain (positive or negative against uncertain: one certainty step off);
    0 otherwise.
    Positive-only labels (indexers record present findings only, so a blank is unknown rather than
    negative): +1 for a positive the expert has (a true positive), -1 for one the expert lacks (a
    false positive), and half of that for an uncertain prediction (+0.5 / -0.5); 0 for anything else.
    """
    if kind == "full":
        if predicted == expert:
            return 1.0
        both_mentioned = predicted is not None and expert is not None
        return 0.5 if both_mentioned and -1 in (predicted, expert) else 0.0
    sign = 1.0 if expert == 1 else -1.0
    return sign if predicted == 1 else 0.5 * sign if predicted == -1 else 0.0


def counted_observations(learned_no_finding: bool) -> tuple[str, ...]:
    """The observations an LLM policy decides and its rewards credit: all 14, or all but No Finding
    where a report-level model decides it (:mod:`cxrlabel.labelers.no_finding`)."""
    return OBSERVATIONS[1:] if learned_no_finding else OBSERVATIONS


def label_reward(output: str, expert: Labels, kind: LabelKind, fmt: CompletionFormat, context: Sequence[Labels] | None = None,
                 counted: Sequence[str] = OBSERVATIONS) -> float:
    """The reward of one output against the expert labels of its report, per observation: the
    sum over the ``counted`` observations (all 14 by default) of :func:`observation_credit`, and
    :data:`MALFORMED_REWARD` (below every well-formed output) for an output that does not parse.
    Full labels: 0 to 14; positive-only: -14 to 14. The preference builder ranks candidates by it,
    and the verifiable RL reward is it / the number counted. A labeler whose No Finding a
    report-level stage decides (``expert.no_finding: learned``) counts the 13 others: its policy
    does not decide No Finding, and crediting it would pay a sentence for an invented finding that
    clears the CheXpert rule's No Finding.

    ``context`` None: the output labels the whole report. Otherwise the output labels one
    sentence and ``context`` holds the labels of the report's other sentences: the report's
    labels are all of them aggregated (:func:`~cxrlabel.observations.aggregate_mentions`), so a
    sentence's output is judged by the report labels it leads to.
    """
    parsed = parse_completion(output, fmt)
    if parsed.error is not None:
        return MALFORMED_REWARD
    labels = parsed.labels if context is None else aggregate_mentions([*context, parsed.labels])
    return sum(observation_credit(labels[name], expert.get(name), kind) for name in counted)


def rank_pairs(study_id: str, prompt: str, candidates: list[str], expert: Labels, kind: LabelKind, fmt: CompletionFormat, max_pairs: int,
               context: Sequence[Labels] | None = None, counted: Sequence[str] = OBSERVATIONS) -> list[dict[str, object]]:
    """Chosen/rejected pairs among the distinct candidates of one prompt, at most ``max_pairs`` in
    :func:`pair_priority` order (``context``, ``counted``: see :func:`label_reward`)."""
    distinct = list(dict.fromkeys(c.strip() for c in candidates))
    scored = sorted(((label_reward(c, expert, kind, fmt, context, counted), c) for c in distinct), key=lambda sc: -sc[0])
    pairs = [
        {"study_id": study_id, "prompt": prompt, "chosen": a, "rejected": b, "margin": sa - sb, "source": "simulated", "annotator": None,
         "rejected_malformed": sb == MALFORMED_REWARD}
        for (sa, a), (sb, b) in itertools.combinations(scored, 2)
        if sa > sb
    ]
    return sorted(pairs, key=pair_priority)[:max_pairs]


def pair_priority(pair: dict[str, object]) -> tuple[bool, float]:
    """Which pairs a prompt or report keeps first: pairs of two well-formed outputs (they teach
    labels), largest margin first, before pairs whose rejected output is malformed (they teach
    format only, and their margin, against the malformed reward, would otherwise crowd out the rest)."""
    return bool(pair["rejected_malformed"]), -float(pair["margin"])


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
            rows.append({"study_id": row["study_id"], "prompt": prompt.build(texts[row["study_id"]]), "chosen": chosen.strip(), "rejected": rejected.strip(), "margin": 1.0, "source": "human", "annotator": row["annotator"],
                         "rejected_malformed": parse_completion(rejected, prompt.format).error is not None})
    return pl.DataFrame(rows, schema=PREFERENCE_SCHEMA)


def simulated_preferences(sampler: CandidateSampler, reports: pl.DataFrame, expert: pl.DataFrame, kind: LabelKind, n_candidates: int, temperature: float, max_pairs: int, seed: int,
                          counted: Sequence[str] = OBSERVATIONS) -> tuple[pl.DataFrame, dict[str, float]]:
    """Sample candidates from the policy for every report with expert labels, rank them, and say
    how much signal they held (:func:`preference_summary`).

    A sentence-unit policy is sampled per distinct sentence; each candidate is judged by the
    report labels it leads to with the report's other sentences labeled greedily by the policy.
    """
    prompt = sampler.prompt
    judged = reports.join(expert, on="study_id", how="inner", maintain_order="left")
    if judged.height == 0:
        raise BadInputError("no report of the preference splits has expert labels: use rlhf.judge: human with a judgements file")
    units = [units_of(text, prompt.unit) for text in judged["text"]]
    distinct = list(dict.fromkeys(unit for report in units for unit in report))
    sampled, greedy_outputs = sampler.sample(distinct, n_candidates, temperature, seed, greedy=prompt.unit == "sentence")
    candidates = dict(zip(distinct, sampled))
    greedy = {unit: parse_completion(output, prompt.format).labels for unit, output in zip(distinct, greedy_outputs)}
    pairs, rewards = [], []
    for row, report in zip(judged.iter_rows(named=True), units):
        labels = {name: row[name] for name in OBSERVATIONS}
        report_pairs = []
        for i, unit in enumerate(report):
            context = [greedy[other] for j, other in enumerate(report) if j != i] if greedy else None
            rewards.append([label_reward(c, labels, kind, prompt.format, context, counted) for c in dict.fromkeys(c.strip() for c in candidates[unit])])
            report_pairs += rank_pairs(row["study_id"], prompt.build(unit), candidates[unit], labels, kind, prompt.format, max_pairs, context, counted)
        pairs += sorted(report_pairs, key=pair_priority)[:max_pairs]
    table = pl.DataFrame(pairs, schema=PREFERENCE_SCHEMA)
    summary = preference_summary(judged.height, n_candidates, rewards, table)
    log.info("%d reports, %d %ss: %s", judged.height, len(distinct), prompt.unit, summary)
    return table, summary


def preference_summary(reports: int, n_candidates: int, rewards: list[list[float]], pairs: pl.DataFrame) -> dict[str, float]:
    """How much signal a simulated preference set holds. ``rewards``: per judged unit (a report, or
    one sentence of one), the rewards of its distinct candidates.

    - ``distinct_candidates_per_unit``: the mean number of distinct candidates of a unit;
    - ``tie_rate``: among the pairs of distinct candidates of a unit, the share with equal rewards
      (no preference: not a pair);
    - ``reports_without_pairs``: judged reports none of whose candidates differ in reward;
    - ``format_pairs``: pairs whose rejected output is malformed (the rest compare labels).
    """
    candidate_pairs = [(a, b) for unit in rewards for a, b in itertools.combinations(unit, 2)]
    return {
        "reports_judged": reports,
        "units_judged": len(rewards),
        "candidates_per_unit": n_candidates,
        "distinct_candidates_per_unit": round(sum(map(len, rewards)) / max(1, len(rewards)), 3),
        "tie_rate": round(sum(a == b for a, b in candidate_pairs) / max(1, len(candidate_pairs)), 4),
        "pairs": pairs.height,
        "reports_with_pairs": pairs["study_id"].n_unique(),
        "reports_without_pairs": reports - pairs["study_id"].n_unique(),
        "format_pairs": int(pairs["rejected_malformed"].sum()),
    }


def collect_preferences(inputs: dict[str, str], rlhf: dict, prompt: PromptSettings, sampling: dict[str, Any], out: dict[str, str], review_pairs: str = "review/pairs.csv") -> pl.DataFrame:
    """Build the preference set from the configured judge and write it with its dropped rows and
    its summary (JSON: :func:`preference_summary` for simulated judgements).

    ``sampling``: the :class:`~cxrlabel.sampling.CandidateSampler` settings other than the policy
    (batch_size, max_new_tokens, threads, processes, log_path). Human judgements that do not exist
    yet stop here with the commands that collect them (``review_pairs``: where the review_set rule
    writes the pairs to judge)."""
    from cxrlabel.io.labels import read_labels

    reports = pl.read_parquet(inputs["reports"]).filter(pl.col("split").is_in(rlhf["preference_splits"]))
    drops = DropLog()
    if rlhf["judge"] == "human":
        if "judgements" not in inputs:
            raise BadInputError(
                f"rlhf.human_judgements: {rlhf['human_judgements']} does not exist. Radiologists produce it: "
                f"`snakemake --configfile <your config> review_set` writes the pairs to judge ({review_pairs}), then "
                f"`cxrlabel review --pairs {review_pairs} --judgements {rlhf['human_judgements']}` serves the page that records their judgements there (README: Expert preference review)"
            )
        pairs = read_human_judgements(inputs["judgements"], reports, prompt, drops)
        summary = {"pairs": pairs.height, "reports_with_pairs": pairs["study_id"].n_unique(), "judgements_dropped": drops.counts()}
    else:
        expert, kind = read_labels(inputs["expert"])
        pairs, summary = simulated_preferences(
            CandidateSampler(inputs["policy"], **sampling), reports, expert, kind, rlhf["candidates"], rlhf["temperature"], rlhf["max_pairs_per_report"], rlhf["seed"],
            counted_observations(rlhf.get("learned_no_finding", False)),
        )
    pairs.write_parquet(out["pairs"])
    drops.frame().write_parquet(out["dropped"])
    Path(out["summary"]).write_text(json.dumps(summary, indent=1) + "\n")
    counts = pairs.group_by("source").len().sort("source").rows()
    log.info("preference set: %d pairs %s from %d reports; %d judgement rows dropped %s", pairs.height, dict(counts), pairs["study_id"].n_unique(), len(drops.rows), drops.counts())
    return pairs
