"""Perturbations of report form: the same report written differently, and controls that change it.

Real corpora differ in form as well as content: de-identification placeholders, letter case,
line endings and whitespace, numbered or prose impressions, section order, and the words a
negation or an uncertainty is said in. Each function below rewrites one of these and keeps the
meaning, so a labeler's labels should not change (``PERTURBATIONS``). The controls
(``CONTROLS``) change the meaning on purpose (a negation removed), so the labels should change:
a labeler that ignores its input cannot pass both.

Every function is deterministic; those that draw anything take a ``random.Random`` that
:func:`perturb_reports` seeds from the configured seed, the perturbation and the study id
(never global state), so one report is perturbed the same way in every run and in any order.

Paraphrase templates are written by hand and conservative: a cue is rewritten only in a slot
where every alternative keeps both the grammar and the label (``no evidence of X`` ->
``negative for X`` at the start of a sentence only; never ``no change`` -> ``negative for change``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import polars as pl

from cxrlabel.ingest import count_tokens
from cxrlabel.labelers.rule import RuleLabeler
from cxrlabel.observations import NO_FINDING
from cxrlabel.text import split_sentences


class Report(NamedTuple):
    """What a perturbation reads: the labeler's text and, where the report has them, its sections
    (``text`` is findings then impression, then an addendum: see io/mimic.report_text)."""

    text: str
    findings: str | None = None
    impression: str | None = None


# --- de-identification ---------------------------------------------------------------------------

#: De-identification placeholders of the corpora this pipeline reads or may meet.
DEID_STYLES: dict[str, str] = {"underscore": "___", "xxxx": "XXXX", "redacted": "[REDACTED]", "name": "**NAME[AAA]**"}
DEID_PLACEHOLDER = re.compile(r"\*\*NAME\[AAA\]\*\*|\[REDACTED\]|\bXXXX\b|_{3,}")


def deid_style(text: str, style: str) -> str:
    """Every de-identification placeholder rewritten in one style (a key of ``DEID_STYLES``).

    >>> deid_style("Status post XXXX XXXX. No pneumothorax.", "redacted")
    'Status post [REDACTED] [REDACTED]. No pneumothorax.'
    """
    return DEID_PLACEHOLDER.sub(DEID_STYLES[style], text)


# --- letter case ---------------------------------------------------------------------------------


def upper_case(text: str) -> str:
    """The report in capitals, as some RIS exports write it.

    >>> upper_case("No pneumothorax.")
    'NO PNEUMOTHORAX.'
    """
    return text.upper()


def lower_case(text: str) -> str:
    """The report in lower case.

    >>> lower_case("No pneumothorax. Heart size is normal.")
    'no pneumothorax. heart size is normal.'
    """
    return text.lower()


# --- line endings and whitespace -----------------------------------------------------------------

SENTENCE_END_SPACE = re.compile(r"(?<=[.!?]) +")
WORD_SPACE = re.compile(r"(?<=\S) (?=\S)")
ODD_SPACES = ("  ", "\t", " \t ", "   ")


def crlf_whitespace(text: str, rng: random.Random) -> str:
    """Windows line endings between sentences, trailing spaces before them, and doubled spaces or
    tabs between some words (a third of them, drawn by ``rng``).

    Line breaks go only where a sentence already ends: a break inside a sentence would be a
    different report for any labeler that reads lines as statements.

    >>> crlf_whitespace("No effusion. Heart size is normal.", random.Random(1))
    'No  effusion.  \\r\\nHeart size is normal.  \\r\\n'
    """
    spaced = WORD_SPACE.sub(lambda m: rng.choice(ODD_SPACES) if rng.random() < 1 / 3 else " ", text)
    return SENTENCE_END_SPACE.sub("  \r\n", spaced) + "  \r\n"


# --- numbered or prose impression ----------------------------------------------------------------

NUMBER_MARKER = re.compile(r"(?:^|(?<=\s))(\d+)\.\s+")
SENTENCE_END = re.compile(r"[.!?]$")


def impression_numbering(report: Report) -> str:
    """A numbered impression written as prose, a prose impression as numbered items.

    Only markers counting up from 1 are items ("rib 5. " is not); each prose sentence ends in
    a period, so that items do not run together. Unchanged without an impression.

    >>> impression_numbering(Report("Clear lungs. 1. No acute disease 2. Stable cardiomegaly.", "Clear lungs.", "1. No acute disease 2. Stable cardiomegaly."))
    'Clear lungs. No acute disease. Stable cardiomegaly.'
    >>> impression_numbering(Report("No acute disease. Stable cardiomegaly.", None, "No acute disease. Stable cardiomegaly."))
    '1. No acute disease. 2. Stable cardiomegaly.'
    """
    span = _impression_span(report)
    if span is None:
        return report.text
    start, end = span
    impression = report.text[start:end]
    items = numbered_items(impression)
    if items:
        rewritten = " ".join(_end_sentence(item) for item in items)
    else:
        rewritten = " ".join(f"{i}. {sentence}" for i, sentence in enumerate(split_sentences(impression), start=1))
    return report.text[:start] + rewritten + report.text[end:]


def numbered_items(text: str) -> list[str]:
    """The items of a text that starts with ``1.`` and counts up (``1. A 2. B``), else []."""
    markers, expected = [], 1
    for match in NUMBER_MARKER.finditer(text):
        if int(match[1]) == expected:
            markers.append(match)
            expected += 1
    if not markers or markers[0].start() != 0:
        return []
    bounds = [m.end() for m in markers], [m.start() for m in markers[1:]] + [len(text)]
    return [text[start:end].strip() for start, end in zip(*bounds) if text[start:end].strip()]


# --- section order -------------------------------------------------------------------------------


def section_order(report: Report) -> str:
    """Impression first, then findings (then whatever followed, an addendum), where a report has both.

    Each moved section ends in a period, so the last findings sentence and the first impression
    sentence do not run into one.

    >>> section_order(Report("Heart size is normal. No effusion", "Heart size is normal.", "No effusion"))
    'No effusion. Heart size is normal.'
    """
    span = _impression_span(report)
    if span is None or not report.findings or not report.text.startswith(report.findings):
        return report.text
    start, end = span
    return f"{_end_sentence(report.text[start:end])} {_end_sentence(report.findings)}{report.text[end:]}"


def _impression_span(report: Report) -> tuple[int, int] | None:
    """Where the impression stands in the text (after the findings), None without one."""
    if not report.impression:
        return None
    after = len(report.findings) if report.findings and report.text.startswith(report.findings) else 0
    start = report.text.find(report.impression, after)
    return None if start < 0 else (start, start + len(report.impression))


def _end_sentence(text: str) -> str:
    text = text.strip()
    return text if SENTENCE_END.search(text) else f"{text}."


# --- paraphrased cues ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CueTemplate:
    """Interchangeable wordings of one cue in one slot: a match of ``pattern`` is replaced by
    another wording drawn from ``wordings`` (case of the first letter kept)."""

    wordings: tuple[str, ...]
    before: str = r"\b"  # the slot: what must precede the cue
    after: str = r"\b"  # and what must follow it

    @property
    def pattern(self) -> re.Pattern[str]:
        alternatives = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(self.wordings, key=len, reverse=True))
        return re.compile(f"{self.before}(?:{alternatives}){self.after}", re.IGNORECASE)


SENTENCE_START = r"(?:^|(?<=[.!?]\s)|(?<=\d\.\s))"
# Negations that only look like one (CheXpert's pseudo-negations): never rewritten.
NOT_PSEUDO = r"\b(?!\s+(?:change|interval|significant|substantial|appreciable|further|longer|increase|decrease|more)\b)"

NEGATION_TEMPLATES = (
    # "No evidence of effusion." / "Negative for effusion." / "No signs of effusion."
    CueTemplate(("No evidence of", "Negative for", "No signs of"), before=SENTENCE_START),
    # "clear lungs with no effusion" / "clear lungs without effusion"
    CueTemplate(("with no", "without"), after=NOT_PSEUDO),
    # "There is no effusion." / "There is no evidence of effusion."
    CueTemplate(("there is no", "there is no evidence of"), after=NOT_PSEUDO),
    CueTemplate(("there are no", "there are no signs of"), after=NOT_PSEUDO),
    # "Pneumothorax is not seen." / "... not identified." / "... not demonstrated."
    CueTemplate(("not seen", "not identified", "not demonstrated"), before=r"(?:(?<=\bis\s)|(?<=\bare\s))"),
)
UNCERTAINTY_TEMPLATES = (
    # "Pneumonia cannot be excluded." / "... cannot be ruled out." / "... can not be excluded."
    CueTemplate(("cannot be excluded", "cannot be ruled out", "can not be excluded")),
    # "Cannot exclude pneumonia." / "Cannot rule out pneumonia."
    CueTemplate(("cannot exclude", "cannot rule out", "can not exclude")),
    # "Opacity may represent atelectasis." / "... could represent ..." / "... might represent ..."
    CueTemplate(("may represent", "could represent", "might represent")),
    # "Opacity, possibly atelectasis." / "Opacity, perhaps atelectasis."; not before an attribute
    # ("possibly enlarged" is a degree of the attribute, not a hedge on a finding)
    CueTemplate(("possibly", "perhaps"), after=r"\b(?!\s+\w+ed\b)"),
    # "Opacity suspicious for pneumonia." / "Opacity concerning for pneumonia."
    CueTemplate(("suspicious for", "concerning for")),
)


def paraphrase_cues(text: str, templates: tuple[CueTemplate, ...], rng: random.Random) -> str:
    """Every cue matched by one of ``templates`` replaced by another wording of the same template."""
    for template in templates:
        text = template.pattern.sub(lambda m, t=template: _reword(m.group(), t.wordings, rng), text)
    return text


def negation_paraphrase(text: str, rng: random.Random) -> str:
    """Negation cues said in other words (``NEGATION_TEMPLATES``).

    >>> negation_paraphrase("No evidence of pneumothorax. Clear lungs with no effusion.", random.Random(0))
    'No signs of pneumothorax. Clear lungs without effusion.'
    """
    return paraphrase_cues(text, NEGATION_TEMPLATES, rng)


def uncertainty_paraphrase(text: str, rng: random.Random) -> str:
    """Uncertainty cues said in other words (``UNCERTAINTY_TEMPLATES``).

    >>> uncertainty_paraphrase("Opacity may represent atelectasis. Pneumonia cannot be excluded.", random.Random(0))
    'Opacity might represent atelectasis. Pneumonia can not be excluded.'
    """
    return paraphrase_cues(text, UNCERTAINTY_TEMPLATES, rng)


def _reword(found: str, wordings: tuple[str, ...], rng: random.Random) -> str:
    current = " ".join(found.lower().split())
    choice = rng.choice([w for w in wordings if w.lower() != current])
    return choice[0].upper() + choice[1:] if found[0].isupper() else choice[0].lower() + choice[1:]


# --- controls: the meaning changed ---------------------------------------------------------------

#: A negation cue and what the sentence says without it: "There is no effusion." -> "There is effusion."
NEGATION_REMOVALS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(there\s+(?:is|are))\s+no\s+(?:evidence\s+of\s+)?", re.IGNORECASE), r"\1 "),
    (re.compile(r"^no\s+(?:evidence\s+of\s+|signs?\s+of\s+)?", re.IGNORECASE), ""),
    (re.compile(r"\bwithout\s+(?:evidence\s+of\s+)?", re.IGNORECASE), "with "),
    (re.compile(r"\bnegative\s+for\b", re.IGNORECASE), "positive for"),
    (re.compile(r"\b(is|are)\s+not\s+(?=seen|identified|demonstrated|present)", re.IGNORECASE), r"\1 "),
)


@cache
def _rule_labeler() -> RuleLabeler:
    return RuleLabeler()


def remove_negation(text: str, rng: random.Random) -> tuple[str, list[str]]:
    """One sentence with a negated mention (as the rule labeler reads it) said without its
    negation, and the observations whose report label that changes.

    The expected changes are the rule labeler's reading of the clean and the changed report
    (No Finding, which follows from the others, left out), so the rule labeler meets them by
    construction: the controls test the labelers that learned from it. A report without such a
    sentence is returned unchanged, with no expected change.

    >>> remove_negation("Heart size is normal. There is no pneumothorax.", random.Random(0))
    ('Heart size is normal. There is pneumothorax.', ['Pneumothorax'])
    """
    clean = _rule_labeler().label(text)
    candidates = []
    cursor = 0
    for sentence in split_sentences(text):
        start = text.find(sentence, cursor)
        cursor = start + len(sentence)
        rewritten = _without_negation(sentence)
        if rewritten == sentence:
            continue
        changed = text[:start] + rewritten + text[cursor:]
        flips = [name for name, label in _rule_labeler().label(changed).items() if name != NO_FINDING and label != clean[name]]
        if flips:
            candidates.append((changed, flips))
    return rng.choice(candidates) if candidates else (text, [])


def _without_negation(sentence: str) -> str:
    for pattern, replacement in NEGATION_REMOVALS:
        rewritten = pattern.sub(replacement, sentence, count=1)
        if rewritten != sentence:
            return rewritten[0].upper() + rewritten[1:] if sentence[0].isupper() else rewritten
    return sentence


# --- registries and the perturbed reports table --------------------------------------------------


@dataclass(frozen=True)
class Perturbation:
    """A named rewrite of one family; ``apply`` returns the new text and the observations whose
    label should change (none for a meaning-preserving one)."""

    family: str
    meaning_preserving: bool
    apply: Callable[[Report, random.Random], tuple[str, list[str]]]


def _preserving(family: str, rewrite: Callable[[Report, random.Random], str]) -> Perturbation:
    return Perturbation(family, True, lambda report, rng: (rewrite(report, rng), []))


PERTURBATIONS: dict[str, Perturbation] = {
    **{f"deid_{style}": _preserving("deid", lambda r, _, s=style: deid_style(r.text, s)) for style in DEID_STYLES},
    "upper_case": _preserving("case", lambda r, _: upper_case(r.text)),
    "lower_case": _preserving("case", lambda r, _: lower_case(r.text)),
    "crlf_whitespace": _preserving("whitespace", lambda r, rng: crlf_whitespace(r.text, rng)),
    "impression_numbering": _preserving("impression_numbering", lambda r, _: impression_numbering(r)),
    "section_order": _preserving("section_order", lambda r, _: section_order(r)),
    "negation_paraphrase": _preserving("paraphrase", lambda r, rng: negation_paraphrase(r.text, rng)),
    "uncertainty_paraphrase": _preserving("paraphrase", lambda r, rng: uncertainty_paraphrase(r.text, rng)),
}
CONTROLS: dict[str, Perturbation] = {
    "negation_removed": Perturbation("paraphrase", False, lambda r, rng: remove_negation(r.text, rng)),
}
ALL_PERTURBATIONS: dict[str, Perturbation] = PERTURBATIONS | CONTROLS


def perturb_reports(reports: pl.DataFrame, name: str, seed: int) -> pl.DataFrame:
    """The reports table with every ``text`` perturbed by ``ALL_PERTURBATIONS[name]``.

    Same columns as the reports table (``text`` and ``n_tokens`` recomputed; ``findings`` and
    ``impression`` stay the clean sections), plus ``perturbation``, ``changed`` (the text differs:
    flip rates can be read over changed reports only) and ``expected_flips`` (observations whose
    label should change: empty for meaning-preserving perturbations).
    """
    perturbation = ALL_PERTURBATIONS[name]
    texts, flips = [], []
    for row in reports.select("study_id", "text", "findings", "impression").iter_rows(named=True):
        rng = random.Random(f"{seed}:{name}:{row['study_id']}")
        text, expected = perturbation.apply(Report(row["text"], row["findings"], row["impression"]), rng)
        texts.append(text)
        flips.append(expected)
    perturbed = pl.Series("text", texts, dtype=pl.String)
    return reports.with_columns(
        perturbed,
        perturbed.map_elements(count_tokens, return_dtype=pl.Int32).alias("n_tokens"),
        pl.lit(name).alias("perturbation"),
        (perturbed != reports["text"]).alias("changed"),
        pl.Series("expected_flips", flips, dtype=pl.List(pl.String)),
    )


def perturbed_reports_table(reports: pl.DataFrame, names: list[str], seed: int) -> pl.DataFrame:
    """Every perturbation of ``names`` applied to ``reports``, one below the other (long format:
    the rows of :func:`perturb_reports`, told apart by ``perturbation``)."""
    return pl.concat([perturb_reports(reports, name, seed) for name in names])
