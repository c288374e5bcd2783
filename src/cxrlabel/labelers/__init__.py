"""Labelers: one interface (a batch of report texts -> labels) for every labeler the pipeline compares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

Labels = dict[str, int | None]


@dataclass(frozen=True)
class Evidence:
    """The part of a report that decided one label.

    ``start``/``end`` are character offsets, ``[start, end)``, into the exact text the labeler
    read (Python string indices: Unicode code points, not bytes), so ``text[start:end] == quote``.
    ``cue`` is the negation or uncertainty trigger (or the attribute, "heart size is *normal*")
    that gave the mention its class, with its own offsets into the same text; all three are None
    when the mention is asserted without one.
    """

    start: int
    end: int
    quote: str
    cue_start: int | None = None
    cue_end: int | None = None
    cue: str | None = None

    def to_json(self) -> dict[str, int | str | None]:
        """A JSON-able dict: ``start``, ``end``, ``quote``, ``cue``, ``cue_start``, ``cue_end``."""
        return {"start": self.start, "end": self.end, "quote": self.quote, "cue": self.cue, "cue_start": self.cue_start, "cue_end": self.cue_end}


#: Per non-blank observation, the evidence of its label, or None where the label has no span
#: (the rule labeler's No Finding: decided by the absence of findings, not by any text; an LLM
#: label answered without a quote, or with one the report does not hold).
EvidenceMap = Mapping[str, Evidence | None]

#: Per non-blank observation, the labeler's uncalibrated logit for each class it chose between
#: (label code -> logit; None is blank where blank was a choice): the LLM's logits of the certainty
#: words at the step it wrote one, the BERT classifier's head logits. A label's confidence is the
#: softmax of these at a fitted temperature, taken at the label (:mod:`cxrlabel.evaluation.calibration`).
ScoreMap = Mapping[str, Mapping[int | None, float]]


@dataclass(frozen=True)
class Labeled:
    """One report's labels, and how they came about: an LLM's output may be malformed (and a
    fallback used); a report may be longer than the labeler reads (truncated). ``evidence`` is
    None unless the labeler was asked for it and provides it (:func:`supports_evidence`);
    ``evidence_miss`` counts the labels whose evidence the labeler gave but could not place in the
    text (an LLM's quote found nowhere in the report: that label's evidence is None);
    ``scores`` is None for a labeler that has none (the rule labeler)."""

    labels: Labels
    format_error: bool = False
    fallback_used: bool = False
    truncated: bool = False
    evidence: EvidenceMap | None = None
    scores: ScoreMap | None = None
    evidence_miss: int = 0


class Labeler(Protocol):
    """Labels a batch of report texts. A labeler that can say which text decided each label has a
    true ``provides_evidence`` attribute and accepts ``label_batch(texts, evidence=True)``, which
    fills :attr:`Labeled.evidence`: the rule labeler, and an LLM labeler tuned to the ``evidence``
    completion format. One whose labels come with logits (:attr:`Labeled.scores`: the BERT and
    LLM labelers) has a true ``provides_scores`` attribute."""

    name: str

    def label_batch(self, texts: Sequence[str]) -> list[Labeled]: ...


def supports_evidence(labeler: Labeler) -> bool:
    """Whether ``labeler`` fills :attr:`Labeled.evidence` when asked (``label_batch(texts, evidence=True)``)."""
    return bool(getattr(labeler, "provides_evidence", False))


def supports_scores(labeler: Labeler) -> bool:
    """Whether ``labeler``'s labels come with scores (:attr:`Labeled.scores`): it has a calibration and a scores table."""
    return bool(getattr(labeler, "provides_scores", False))


def label_batch(labeler: Labeler, texts: Sequence[str], evidence: bool = False) -> list[Labeled]:
    """``labeler``'s labels of ``texts``, with evidence where asked and the labeler provides it
    (otherwise :attr:`Labeled.evidence` stays None)."""
    if evidence and supports_evidence(labeler):
        return labeler.label_batch(texts, evidence=True)  # type: ignore[call-arg]
    return labeler.label_batch(texts)


def combine_scores(labels: Labels, units: Sequence[tuple[Labels, ScoreMap]]) -> ScoreMap:
    """A report's scores from its units': per non-blank label, those of the first unit that gave the
    report's class (the unit that decided it; the rule labeler's evidence is likewise the first
    mention of the final class). A label no unit wrote (a sentence-unit No Finding) has none."""
    found: dict[str, dict[int | None, float]] = {}
    for name, code in labels.items():
        if code is not None:
            decided = next((scores[name] for unit_labels, scores in units if unit_labels.get(name) == code and name in scores), None)
            if decided is not None:
                found[name] = dict(decided)
    return found


def make_labeler(kind: str, model: str | None = None, **options) -> Labeler:
    """The labeler of ``kind`` (``rule``, ``bert`` or ``llm``), loaded from ``model`` where it has one."""
    if kind == "rule":
        from cxrlabel.labelers.rule import RuleLabeler

        return RuleLabeler()
    if model is None:
        raise ValueError(f"the {kind} labeler needs --model (its trained folder)")
    if kind == "bert":
        from cxrlabel.labelers.bert import BertLabeler

        return BertLabeler(model, **options)
    if kind == "llm":
        from cxrlabel.labelers.llm import LLMLabeler

        return LLMLabeler(model, **options)
    raise ValueError(f"unknown labeler {kind!r}")
