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
