"""Report text: the one sentence splitter, shared by the rule labeler and the recombined training reports.

A sentence ends at ``.``/``!``/``?`` followed by space, at a line break, before a numbered item
(``1. ``) and at a spaced dash (`` - ``), the places where reports end one statement and begin
the next. Negation and uncertainty scopes never cross these breaks.
"""

from __future__ import annotations

import re

SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+|(?:^|\s)\d+\.\s+|\s+-\s+")
_WORD = re.compile(r"[^\W\d_]")


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, stripped, in order; pieces without a letter (``1.``, ``.``) are left out."""
    return [piece.strip() for piece in SENTENCE_BREAK.split(text) if piece and _WORD.search(piece)]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Where the sentences of :func:`split_sentences` lie in ``text``: ``[start, end)`` offsets, in
    order, so that ``[text[s:e] for s, e in sentence_spans(text)] == split_sentences(text)``."""
    spans: list[tuple[int, int]] = []
    start = 0
    for end, resume in [(m.start(), m.end()) for m in SENTENCE_BREAK.finditer(text)] + [(len(text), len(text))]:
        piece = text[start:end]
        if piece and _WORD.search(piece):
            spans.append((start + len(piece) - len(piece.lstrip()), start + len(piece.rstrip())))
        start = resume
    return spans
