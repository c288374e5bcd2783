"""Labelers: one interface (a batch of report texts -> labels) for every labeler the pipeline compares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

Labels = dict[str, int | None]


@dataclass(frozen=True)
class Labeled:
    """One report's labels, and how they came about: an LLM's output may be malformed (and a
    fallback used); a report may be longer than the labeler reads (truncated)."""

    labels: Labels
    format_error: bool = False
    fallback_used: bool = False
    truncated: bool = False


class Labeler(Protocol):
    name: str

    def label_batch(self, texts: Sequence[str]) -> list[Labeled]: ...


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
