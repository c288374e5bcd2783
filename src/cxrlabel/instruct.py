"""The instruction format: prompt text, and labels <-> completion text (the only serializer and parser).

Two completion formats, both JSON objects mapping observation -> certainty word:
- ``mentioned``: only the observations the report mentions (``{}`` when none);
- ``full``: all 14 observations in canonical order, unmentioned ones as ``"blank"``.
``parse_completion(serialize_labels(x, f), f) == x`` for every labelling ``x``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Literal

import polars as pl

from cxrlabel.io.labels import read_labels
from cxrlabel.observations import OBSERVATIONS, Certainty

log = logging.getLogger(__name__)

CompletionFormat = Literal["mentioned", "full"]
Labels = dict[str, int | None]

WORD_TO_CODE: dict[str, int | None] = {c.word: int(c) for c in Certainty} | {"blank": None}
CODE_TO_WORD: dict[int | None, str] = {code: word for word, code in WORD_TO_CODE.items()}

INSTRUCTIONS: dict[CompletionFormat, str] = {
    "mentioned": (
        "Label the chest X-ray report for the 14 CheXpert observations. Answer with a JSON object that maps "
        "each observation the report mentions to positive, negative or uncertain; leave out the others."
    ),
    "full": (
        "Label the chest X-ray report for the 14 CheXpert observations. Answer with a JSON object that maps "
        "every observation to positive, negative, uncertain or blank (not mentioned)."
    ),
}
# Salvages "Observation": "word" pairs from a malformed (e.g. truncated) completion.
PAIR = re.compile(r'"(?P<name>[^"]+)"\s*:\s*"(?P<word>[a-z]+)"')


@dataclass(frozen=True)
class Parsed:
    """A parsed completion; ``error`` says what was wrong with it (None when well-formed)."""

    labels: Labels
    error: str | None = None


def build_prompt(report: str, fmt: CompletionFormat) -> str:
    """The prompt of one instance: instruction, report text, and the cue for the answer.

    It ends in a newline, not a space: byte-level BPE tokenizers (GPT-2, Qwen) merge a
    trailing space into the next token, so a prompt ending in a space would tokenize
    differently alone (at inference) than joined to its completion (in training).
    """
    return f"{INSTRUCTIONS[fmt]}\n\nReport: {' '.join(report.split())}\n\nLabels:\n"


def serialize_labels(labels: Labels, fmt: CompletionFormat) -> str:
    """The completion text for ``labels`` (observation -> 1/0/-1/None) in format ``fmt``."""
    if fmt == "full":
        pairs = {name: CODE_TO_WORD[labels.get(name)] for name in OBSERVATIONS}
    else:
        pairs = {name: CODE_TO_WORD[labels[name]] for name in OBSERVATIONS if labels.get(name) is not None}
    return json.dumps(pairs, separators=(", ", ": "))


def parse_completion(text: str, fmt: CompletionFormat) -> Parsed:
    """Labels from a completion; a malformed one yields the pairs that could be salvaged and an error.

    Well-formed means: one JSON object, keys are observation names, values are
    certainty words (``blank`` only in the ``full`` format), and in the ``full`` format all
    14 keys are present. Text after the object is ignored.
    """
    start = text.find("{")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text, start) if start >= 0 else (None, 0)
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        salvaged = {m["name"]: WORD_TO_CODE[m["word"]] for m in PAIR.finditer(text) if m["name"] in OBSERVATIONS and m["word"] in WORD_TO_CODE}
        return Parsed({name: salvaged.get(name) for name in OBSERVATIONS}, "not a JSON object")
    allowed = WORD_TO_CODE if fmt == "full" else {w: c for w, c in WORD_TO_CODE.items() if c is not None}
    problems = [f"unknown observation {k!r}" for k in obj if k not in OBSERVATIONS]
    problems += [f"{k}: invalid value {v!r}" for k, v in obj.items() if k in OBSERVATIONS and v not in allowed]
    if fmt == "full" and (missing := [name for name in OBSERVATIONS if name not in obj]):
        problems.append(f"missing {missing}")
    labels = {name: allowed.get(obj.get(name)) if isinstance(obj.get(name), str) else None for name in OBSERVATIONS}
    return Parsed(labels, "; ".join(problems) or None)


def instruction_table(reports: pl.DataFrame, labels: pl.DataFrame, fmt: CompletionFormat) -> pl.DataFrame:
    """``study_id, prompt, completion`` for every report that has labels, in report order."""
    joined = reports.select("study_id", "text").join(labels, on="study_id", how="inner", maintain_order="left")
    rows = [
        {"study_id": row["study_id"], "prompt": build_prompt(row["text"], fmt), "completion": serialize_labels(row, fmt)}
        for row in joined.iter_rows(named=True)
    ]
    return pl.DataFrame(rows, schema={"study_id": pl.String, "prompt": pl.String, "completion": pl.String})


def write_instruction_sets(reports_path: str, labels_path: str, fmt: CompletionFormat, out: dict[str, str]) -> None:
    """Write one instruction parquet per split in ``out``; reports without labels are counted, not paired."""
    reports = pl.read_parquet(reports_path)
    labels, _ = read_labels(labels_path)
    for split, path in out.items():
        in_split = reports.filter(pl.col("split") == split)
        table = instruction_table(in_split, labels, fmt)
        table.write_parquet(path)
        log.info("instruct %s: %d pairs from %d reports (%d without labels)", split, table.height, in_split.height, in_split.height - table.height)
