"""The instruction format: prompt text, and labels <-> completion text (the only serializer and parser).

Three completion formats, all JSON objects mapping observation -> certainty word:
- ``mentioned``: only the observations the report mentions (``{}`` when none);
- ``full``: all 14 observations in canonical order, unmentioned ones as ``"blank"``;
- ``evidence``: the mentioned observations, each to ``[certainty word, short verbatim quote]``
  (the words of the text that show the label), or to the bare word when no words show it
  (No Finding: decided by the absence of findings). Quotes keep their characters (no
  JSON escapes of non-ASCII characters).
``parse_completion(serialize_labels(x, f, q), f)`` gives back ``x`` (and, in the ``evidence``
format, the non-empty quotes ``q`` of non-blank labels as :attr:`Parsed.quotes`) for every labelling.

Two units of instruction, the text one prompt holds:
- ``report``: the whole report, labeled as a whole (papers 1 and 2);
- ``sentence``: one sentence, labeled with its own mentions (No Finding stays blank: it is a
  report-level label). The report's labels are its sentences' labels aggregated as the
  CheXpert labeler aggregates mentions (:func:`cxrlabel.observations.aggregate_mentions`).
  Sentence labels come from the rule labeler, which labels sentence by sentence.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

import polars as pl

from cxrlabel.io.labels import labels_schema, read_labels
from cxrlabel.observations import OBSERVATIONS, Certainty
from cxrlabel.text import split_sentences

if TYPE_CHECKING:
    from cxrlabel.labelers.rule import RuleLabeler

log = logging.getLogger(__name__)

CompletionFormat = Literal["mentioned", "full", "evidence"]
COMPLETION_FORMATS: tuple[str, ...] = get_args(CompletionFormat)
Unit = Literal["report", "sentence"]
Labels = dict[str, int | None]
#: observation -> the quote (verbatim words of the prompt's text) that shows its label
Quotes = dict[str, str]

WORD_TO_CODE: dict[str, int | None] = {c.word: int(c) for c in Certainty} | {"blank": None}
CODE_TO_WORD: dict[int | None, str] = {code: word for word, code in WORD_TO_CODE.items()}

ANSWERS: dict[CompletionFormat, str] = {
    "mentioned": "each observation the {unit} mentions to positive, negative or uncertain; leave out the others.",
    "full": "every observation to positive, negative, uncertain or blank (not mentioned).",
    "evidence": (
        "each observation the {unit} mentions to a list of its certainty (positive, negative or uncertain) and a short "
        "verbatim quote of the {unit} that shows it, or to the certainty alone when no words show it; leave out the others."
    ),
}
SUBJECTS: dict[Unit, str] = {"report": "the chest X-ray report", "sentence": "the sentence of a chest X-ray report"}


def instruction(fmt: CompletionFormat, unit: Unit = "report") -> str:
    """The instruction that opens every prompt of a format and unit."""
    return f"Label {SUBJECTS[unit]} for the 14 CheXpert observations. Answer with a JSON object that maps {ANSWERS[fmt].format(unit=unit)}"


INSTRUCTION_SCHEMA = {"study_id": pl.String, "prompt": pl.String, "completion": pl.String}
#: ``study_id`` prefix of training instances from perturbed copies (:func:`perturbed_instructions`)
PERTURBED_PREFIX = "perturbed-"
# Salvages "Observation": "word" and "Observation": ["word", "quote"] pairs from a malformed (e.g.
# truncated) completion; the quote is optional (cut off, or the bare-word shape).
PAIR = re.compile(r'"(?P<name>[^"]+)"\s*:\s*(?P<list>\[\s*)?"(?P<word>[a-z]+)"(?(list)\s*,\s*"(?P<quote>(?:[^"\\]|\\.)*)")?')


@dataclass(frozen=True)
class PromptSettings:
    """How a model is prompted and answers (recorded beside it): its completion format, its unit,
    whether the text is lower-cased (the rule labeler reads lower case too: "No effusion" and "no
    effusion" are then the same tokens), and the room its answers get at inference in tokens
    (``llm.inference.max_new_tokens`` of its SFT run: an evidence-format report needs 256-400, and
    a cut answer is a format error; 128 for a model recorded before it was)."""

    format: CompletionFormat
    unit: Unit = "report"
    lowercase: bool = False
    max_new_tokens: int = 128

    def build(self, text: str) -> str:
        """The prompt for one unit's text."""
        return build_prompt(text.lower() if self.lowercase else text, self.format, self.unit)


@dataclass(frozen=True)
class Parsed:
    """A parsed completion; ``error`` says what was wrong with it (None when well-formed).
    ``quotes``: in the ``evidence`` format, the quote given with each non-blank label that has one."""

    labels: Labels
    error: str | None = None
    quotes: Quotes = field(default_factory=dict)


def build_prompt(text: str, fmt: CompletionFormat, unit: Unit = "report") -> str:
    """The prompt of one instance: instruction, the report (or sentence) text, and the cue for the answer.

    It ends in a newline, not a space: byte-level BPE tokenizers (GPT-2, Qwen) merge a
    trailing space into the next token, so a prompt ending in a space would tokenize
    differently alone (at inference) than joined to its completion (in training).
    """
    return f"{instruction(fmt, unit)}\n\n{unit.capitalize()}: {' '.join(text.split())}\n\nLabels:\n"


def units_of(text: str, unit: Unit) -> list[str]:
    """The texts a labeler of ``unit`` prompts for one report: the report itself, or its sentences."""
    return [text] if unit == "report" else split_sentences(text)


def serialize_labels(labels: Labels, fmt: CompletionFormat, quotes: Quotes | None = None) -> str:
    """The completion text for ``labels`` (observation -> 1/0/-1/None) in format ``fmt``; in the
    ``evidence`` format a non-blank label with a non-empty quote in ``quotes`` is written
    ``[word, quote]``, one without as the bare word (other formats ignore ``quotes``)."""
    pairs: dict[str, str | list[str]]
    if fmt == "full":
        pairs = {name: CODE_TO_WORD[labels.get(name)] for name in OBSERVATIONS}
    else:
        pairs = {name: CODE_TO_WORD[labels[name]] for name in OBSERVATIONS if labels.get(name) is not None}
    if fmt == "evidence" and quotes:
        pairs = {name: [word, quotes[name]] if quotes.get(name) else word for name, word in pairs.items()}
    return json.dumps(pairs, separators=(", ", ": "), ensure_ascii=False)


def _salvaged_quote(raw: str | None) -> str | None:
    """A salvaged quote's text (its JSON escapes undone), or None where it is not a JSON string."""
    if raw is None:
        return None
    try:
        quote = json.loads(f'"{raw}"')
    except json.JSONDecodeError:
        return None
    return quote or None


def parse_completion(text: str, fmt: CompletionFormat) -> Parsed:
    """Labels from a completion; a malformed one yields the pairs that could be salvaged and an error.

    Well-formed means: one JSON object, keys are observation names, values are
    certainty words (``blank`` only in the ``full`` format; in the ``evidence`` format also
    ``[word, quote]`` lists, the quote a string), and in the ``full`` format all 14 keys are
    present. Any other value (a number, a list in another format or of another shape, an object)
    is an invalid value: that observation stays blank, and no value ever raises. Text after the
    object is ignored.
    """
    quoting = fmt == "evidence"
    start = text.find("{")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text, start) if start >= 0 else (None, 0)
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        salvaged: Labels = {}
        quotes: Quotes = {}
        for m in PAIR.finditer(text):  # a repeated observation: the last pair wins, as in a JSON object
            if m["name"] in OBSERVATIONS and m["word"] in WORD_TO_CODE:
                salvaged[m["name"]] = WORD_TO_CODE[m["word"]]
                quotes.pop(m["name"], None)
                if quoting and salvaged[m["name"]] is not None and (quote := _salvaged_quote(m["quote"])):
                    quotes[m["name"]] = quote
        return Parsed({name: salvaged.get(name) for name in OBSERVATIONS}, "not a JSON object", quotes)
    allowed = WORD_TO_CODE if fmt == "full" else {w: c for w, c in WORD_TO_CODE.items() if c is not None}

    def word_and_quote(value: object) -> tuple[str | None, str | None]:
        """The certainty word of a well-formed value and its quote (None where there is none)."""
        if isinstance(value, str):
            return (value, None) if value in allowed else (None, None)
        if quoting and isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value) and value[0] in allowed:
            return value[0], value[1] or None
        return None, None

    decoded = {name: word_and_quote(value) for name, value in obj.items() if name in OBSERVATIONS}
    problems = [f"unknown observation {k!r}" for k in obj if k not in OBSERVATIONS]
    problems += [f"{k}: invalid value {obj[k]!r}" for k, (word, _) in decoded.items() if word is None]
    if fmt == "full" and (missing := [name for name in OBSERVATIONS if name not in obj]):
        problems.append(f"missing {missing}")
    labels = {name: allowed[decoded[name][0]] if decoded.get(name, (None,))[0] is not None else None for name in OBSERVATIONS}
    quotes = {name: quote for name, (word, quote) in decoded.items() if quote is not None and labels[name] is not None}
    return Parsed(labels, "; ".join(problems) or None, quotes)


def unit_table(reports: pl.DataFrame, unit: Unit) -> pl.DataFrame:
    """``study_id, position, text``: each distinct text a labeler of ``unit`` is prompted with for
    ``reports`` (``study_id``, ``text``), with the first report that has it and its position there."""
    first: dict[str, tuple[str, int]] = {}
    for study_id, text in zip(reports["study_id"], reports["text"]):
        for position, piece in enumerate(units_of(text, unit)):
            first.setdefault(piece, (study_id, position))
    rows = [(study_id, position, text) for text, (study_id, position) in first.items()]
    return pl.DataFrame(rows, schema={"study_id": pl.String, "position": pl.Int32, "text": pl.String}, orient="row")


def quote_text(quote: str, prompt: PromptSettings) -> str:
    """``quote`` as the prompt shows it: whitespace runs collapsed to one space (as :func:`build_prompt`
    collapses the text), lower-cased where the model reads lower case."""
    collapsed = " ".join(quote.split())
    return collapsed.lower() if prompt.lowercase else collapsed


def rule_quotes(rule: RuleLabeler, text: str, labels: Labels, prompt: PromptSettings) -> Quotes:
    """The quotes of an ``evidence``-format training completion: per non-blank label of ``labels``,
    the rule labeler's evidence on the same ``text``, from the mention or its cue, whichever comes
    first, to the end of the other ("No pleural effusion", "heart size is normal": the words that
    show the class, not only the observation), as the prompt shows it (:func:`quote_text`); only
    where the rule labeler's class is the training label's (a silver label the rules disagree
    with, and No Finding, get the bare word)."""
    found = rule.label_with_evidence(text)
    quotes: Quotes = {}
    for name in OBSERVATIONS:
        code = labels.get(name)
        evidence = (found.evidence or {}).get(name)
        if code is None or evidence is None or found.labels[name] != code:
            continue
        start, end = evidence.start, evidence.end
        if evidence.cue_start is not None and evidence.cue_end is not None:
            start, end = min(start, evidence.cue_start), max(end, evidence.cue_end)
        if quote := quote_text(text[start:end], prompt):
            quotes[name] = quote
    return quotes


def completion_of(text: str, labels: Labels, prompt: PromptSettings, rule: RuleLabeler | None) -> str:
    """The training completion for ``labels`` of ``text``: with the rule labeler's quotes in the
    ``evidence`` format (``rule`` given), the bare serialization otherwise."""
    quotes = rule_quotes(rule, text, labels, prompt) if prompt.format == "evidence" and rule is not None else None
    return serialize_labels(labels, prompt.format, quotes)


def quoting_rule(prompt: PromptSettings) -> RuleLabeler | None:
    """The rule labeler whose evidence quotes an ``evidence``-format completion (None for the other formats)."""
    from cxrlabel.labelers.rule import RuleLabeler

    return RuleLabeler() if prompt.format == "evidence" else None


def instruction_table(reports: pl.DataFrame, labels: pl.DataFrame, prompt: PromptSettings) -> pl.DataFrame:
    """``study_id, prompt, completion`` for every report that has labels, in report order (in the
    ``evidence`` format, with the rule labeler's quotes: :func:`rule_quotes`)."""
    joined = reports.select("study_id", "text").join(labels, on="study_id", how="inner", maintain_order="left")
    rule = quoting_rule(prompt)
    rows = [
        {"study_id": row["study_id"], "prompt": prompt.build(row["text"]), "completion": completion_of(row["text"], row, prompt, rule)}
        for row in joined.iter_rows(named=True)
    ]
    return pl.DataFrame(rows, schema=INSTRUCTION_SCHEMA)


def sentence_instruction_table(reports: pl.DataFrame, labels: pl.DataFrame, prompt: PromptSettings) -> pl.DataFrame:
    """``study_id, prompt, completion`` for every sentence of every report, in order, labeled by the
    rule labeler, relabeled where a report's ``labels`` (its training labels: the rule labeler's
    own, or those corrected by expert labels) differ from what its sentences aggregate to
    (:func:`cxrlabel.training.targets.sentence_targets`). Sentences that recur ("The lungs are
    clear.") recur here as often as in the reports: trained on distinct sentences only, the model
    agreed less with the rule labeler (validate: 0.80 against 0.91 of sentences exactly right,
    docs/benchmarks.md)."""
    from cxrlabel.training.targets import sentence_training_rows

    quoting = quoting_rule(prompt)  # the rule labeler quotes its own labels
    sentences, unplaced = sentence_training_rows(reports, labels)
    rows = [{"study_id": study_id, "prompt": prompt.build(s), "completion": completion_of(s, sentence_labels, prompt, quoting)} for study_id, s, sentence_labels in sentences]
    if unplaced:
        log.info("training labels that no sentence mentions, so none teaches them: %s", dict(sorted(unplaced.items())))
    return pl.DataFrame(rows, schema=INSTRUCTION_SCHEMA)


def oversample_rare(table: pl.DataFrame, fmt: CompletionFormat, cap: int) -> pl.DataFrame:
    """``table`` with each instance repeated ``ceil(median / n)`` times, at most ``cap``, where ``n``
    counts the instances that share its rarest label class (observation x certainty) and ``median``
    is the median of those counts over all classes; instances in order, repeats together.

    Rare findings (OpenI: 12 training sentences with a positive pneumothorax against 1,100 with a
    positive lung opacity) are then seen often enough to be learned; the BERT classifier gets
    the same push from its inverse-frequency class weights.
    """
    if cap <= 1:
        return table
    labels = [parse_completion(completion, fmt).labels for completion in table["completion"]]
    classes = [[(name, code) for name, code in row.items() if code is not None] for row in labels]
    counts = Counter(c for row in classes for c in row)
    if not counts:
        return table
    median = sorted(counts.values())[len(counts) // 2]
    repeats = [min(cap, max([math.ceil(median / counts[c]) for c in row], default=1)) for row in classes]
    return table.select(pl.all().repeat_by(pl.Series(repeats, dtype=pl.UInt32)).explode())


def recombined_instructions(train_texts: list[str], n: int, seed: int, prompt: PromptSettings) -> pl.DataFrame:
    """``n`` instances of reports recombined from the training reports' sentences
    (:mod:`cxrlabel.augment`), labeled by the rule labeler."""
    from cxrlabel.augment import RECOMBINED_PREFIX, recombined_reports
    from cxrlabel.labelers.rule import RuleLabeler

    texts = recombined_reports(train_texts, n, seed)
    rule = RuleLabeler()
    ids = [f"{RECOMBINED_PREFIX}{i:06d}" for i in range(n)]
    labels = pl.DataFrame([{"study_id": i, **rule.label(text)} for i, text in zip(ids, texts)], schema=labels_schema(), orient="row")
    return instruction_table(pl.DataFrame({"study_id": ids, "text": texts}), labels, prompt)


def perturbed_instructions(reports: pl.DataFrame, labels: pl.DataFrame, names: list[str], seed: int, prompt: PromptSettings) -> pl.DataFrame:
    """Instances from copies of ``reports`` rewritten by each perturbation of ``names``
    (:mod:`cxrlabel.perturb`), so that a learned labeler sees the forms it will be tested on.

    Only what a perturbation changed is added: for the sentence unit, the sentences of the
    perturbed report that the clean report lacks; for the report unit, the perturbed report. The
    labels are the clean report's (its training labels: for the sentence unit placed on the
    sentences as :func:`sentence_instruction_table` places them), except the observations a
    control changes (``negation_removed``), which take the rule labeler's label of the perturbed text.
    ``study_id`` is ``perturbed-<name>-<study_id>``.
    """
    from cxrlabel.labelers.rule import RuleLabeler
    from cxrlabel.perturb import perturb_reports
    from cxrlabel.training.targets import sentence_targets

    rule = RuleLabeler()
    quoting = rule if prompt.format == "evidence" else None  # the rule labeler quotes its own labels
    by_id = {row["study_id"]: row for row in labels.iter_rows(named=True)}
    rows = []
    for name in names:
        perturbed = perturb_reports(reports, name, seed)
        for study_id, clean, text, changed, flips in zip(reports["study_id"], reports["text"], perturbed["text"], perturbed["changed"], perturbed["expected_flips"].to_list()):
            if not changed:
                continue
            copy_id = f"{PERTURBED_PREFIX}{name}-{study_id}"
            flipped = rule.label(text) if flips else {}
            copy_labels = by_id[study_id] | {observation: flipped[observation] for observation in flips}
            if prompt.unit == "sentence":
                seen = set(split_sentences(clean))
                sentences = split_sentences(text)
                relabeled, _ = sentence_targets([rule.sentence_labels(s) for s in sentences], copy_labels)
                rows += [(copy_id, prompt.build(s), completion_of(s, labels, prompt, quoting)) for s, labels in zip(sentences, relabeled) if s not in seen]
            else:
                rows.append((copy_id, prompt.build(text), completion_of(text, copy_labels, prompt, quoting)))
    return pl.DataFrame(rows, schema=INSTRUCTION_SCHEMA, orient="row")


def write_instruction_sets(
    reports_path: str,
    labels_path: str,
    prompt: PromptSettings,
    out: dict[str, str],
    oversample: int = 1,
    recombined: int = 0,
    seed: int = 0,
    perturbed: list[str] | None = None,
) -> None:
    """Write one instruction parquet per split in ``out``; reports without labels are counted, not paired.

    A sentence ``prompt.unit`` pairs sentences with the rule labeler's labels of them instead.
    ``oversample`` > 1 repeats training instances of rare label classes (:func:`oversample_rare`).
    ``recombined`` > 0 adds that many recombined reports to the training split (only there), and
    ``perturbed`` the training reports' perturbed copies (:func:`perturbed_instructions`).
    """
    reports = pl.read_parquet(reports_path)
    labels, _ = read_labels(labels_path)
    for split, path in out.items():
        in_split = reports.filter(pl.col("split") == split)
        labeled = in_split.join(labels.select("study_id"), on="study_id", how="semi", maintain_order="left")
        if prompt.unit == "sentence":
            table = sentence_instruction_table(labeled, labels, prompt)
        else:
            table = instruction_table(labeled, labels, prompt)
        log.info("instruct %s: %d pairs from %d reports (%d without labels)", split, table.height, in_split.height, in_split.height - labeled.height)
        if split == "train" and oversample > 1:
            table = oversample_rare(table, prompt.format, oversample)
            log.info("instruct train: %d pairs after repeating those with rare label classes (at most %dx)", table.height, oversample)
        if split == "train" and recombined > 0:
            table = pl.concat([table, recombined_instructions(labeled["text"].to_list(), recombined, seed, prompt)])
            log.info("instruct train: + %d recombined reports (seed %d), %d pairs in all", recombined, seed, table.height)
        if split == "train" and perturbed:
            copies = perturbed_instructions(labeled, labels, perturbed, seed, prompt)
            table = pl.concat([table, copies])
            log.info("instruct train: + %d pairs from perturbed copies (%s; seed %d), %d pairs in all", copies.height, ", ".join(perturbed), seed, table.height)
        table.write_parquet(path)
