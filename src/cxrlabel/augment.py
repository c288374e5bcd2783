"""More training instances from the same reports: reports recombined from the training split's sentences.

A model that reads 1,500 reports memorizes them (OpenI: training loss 0.009, held-out F1 0.48):
every report is a new arrangement of familiar statements, and the model learns the arrangements.
Recombined reports break that: each draws distinct sentences at random from the training reports,
as many as a randomly drawn training report has, so that a statement is seen in many contexts
and what decides a label has to be found in the statement itself. Every distinct sentence is
equally likely, so rare findings are seen as often as the common normal statements.

Their labels come from the rule labeler run on the recombined text (it labels sentence by
sentence and aggregates the mentions positive > uncertain > negative, so the labels follow the
sentences). Only training-split reports may be recombined.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from cxrlabel.text import split_sentences

RECOMBINED_PREFIX = "recombined-"


def recombined_reports(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` reports made of the sentences of ``texts`` (see the module docstring); reproducible for ``seed``.

    Example: from "Heart size normal. No effusion." and "Small left pneumothorax. Lungs clear. Stable.",
    one recombined report might be "Lungs clear. No effusion.".
    """
    per_report = [split_sentences(text) for text in texts]
    pool = sorted({sentence for sentences in per_report for sentence in sentences})  # sorted: set order varies by run
    lengths = [len(sentences) for sentences in per_report if sentences]
    if n > 0 and not pool:
        raise ValueError("no sentences to recombine: the training split has no report text")
    rng = random.Random(seed)
    return [" ".join(_terminated(s) for s in rng.sample(pool, min(rng.choice(lengths), len(pool)))) for _ in range(n)]


def _terminated(sentence: str) -> str:
    """A sentence that ends as one (a piece cut at a line break or dash may not), so that the
    joined report splits into the same sentences again."""
    return sentence if sentence[-1] in ".!?" else sentence + "."
