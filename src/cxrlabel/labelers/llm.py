"""The LLM labeler: batched greedy decoding of a fine-tuned causal LM, parsed by the instruction module.

- The model's unit (recorded beside it) decides what one prompt holds: the whole report, or one
  sentence; a sentence-unit model labels each distinct sentence of a batch once, and a report's
  labels are its sentences' aggregated as the CheXpert labeler aggregates mentions.
- Greedy decoding in batches of similar prompt length under a padded-token budget, left padding,
  KV cache. The instruction that opens every prompt is run once per labeler and its KV cache
  copied into each batch; a row leaves its batch at its EOS. The completions are those of
  ``transformers``' ``generate`` (tested), at a fraction of its cost (docs/benchmarks.md).
- Scores: at the step a greedy completion writes a certainty word, the logits of every certainty
  word the format allows are kept; the label of the key before it gets them
  (:attr:`Labeled.scores`, calibrated into a confidence downstream).
- Evidence (a model tuned to the ``evidence`` format, ``label_batch(texts, evidence=True)``): each
  label's quote is placed in the report as given (:func:`_locate`: verbatim, else tolerant to
  whitespace runs, and to case where the model reads lower case; a sentence-unit label's quote is
  sought first in the sentence that decided it). A quote the report does not hold gets no span and
  is counted (:attr:`Labeled.evidence_miss`). The labels are the same with and without evidence.
  Quotes are copied, not written freely (``copy_quotes``, the default): while greedy decoding is
  inside a quote, a token that would make it no substring of the unit's text as prompted is
  replaced by the likeliest token that keeps it one (or closes it); a model that paraphrases its
  source still quotes it (:func:`quote_fits`).
- Sampling (preference and review candidates) decodes the same way, each candidate with its own
  seeded generator, so that its samples do not depend on batching or sharding.
- A report whose prompt would not fit the model's context (with room for the answer) keeps
  its end (the impression) and loses its beginning; it is counted (``truncated``), never cut
  silently.
- A malformed output never stops a run: it is counted (``format_error``) and the fallback
  keeps the observation/certainty pairs that can be salvaged from it (``fallback_used``);
  observations it cannot salvage stay blank.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from cxrlabel.instruct import WORD_TO_CODE, CompletionFormat, Parsed, PromptSettings, parse_completion, quote_text, serialize_labels, units_of
from cxrlabel.labelers import Evidence, EvidenceMap, Labeled, Labels, ScoreMap, combine_scores
from cxrlabel.labelers.expert_stage import ExpertStage, apply_expert_stage, load_expert_stage
from cxrlabel.labelers.no_finding import NoFindingModel, apply_no_finding_model, load_no_finding
from cxrlabel.observations import OBSERVATIONS, aggregate_mentions
from cxrlabel.text import sentence_spans

log = logging.getLogger(__name__)

SETTINGS_FILE = "cxrlabel_llm.json"
# A JSON key: the observation a certainty word written after it belongs to.
KEY = re.compile(r'"(?P<name>[^"]+)"\s*:')
# Where an evidence-format quote opens: ``["certainty word", "`` (the quote follows).
QUOTE_OPENS = re.compile(r'\[\s*"[^"]*"\s*,\s*"')
# Where it ends: the first double quote mark that no backslash escapes.
QUOTE_ENDS = re.compile(r'(?<!\\)"')
# What may follow a quote's closing mark: the end of its pair, then the answer's end or the next key.
PAIR_ENDS = ("]}", *(f'], "{name}"' for name in OBSERVATIONS))


def write_llm_settings(model_dir: str, settings: PromptSettings) -> None:
    """Record how a model was tuned to be prompted and how long its answers may be, so that any
    later use prompts it the same way and gives it that room."""
    (Path(model_dir) / SETTINGS_FILE).write_text(json.dumps(asdict(settings)) + "\n")


def read_llm_settings(model_dir: str) -> PromptSettings:
    path = Path(model_dir) / SETTINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: not a cxrlabel LLM labeler (no {SETTINGS_FILE}); train one with the sft rule")
    return PromptSettings(**json.loads(path.read_text()))


def fit_prompt(tokenizer: PreTrainedTokenizerBase, text: str, prompt: PromptSettings, budget: int) -> tuple[list[int], bool]:
    """Token ids of the prompt for ``text`` in at most ``budget`` tokens (the context less the
    answer's room), and whether the text had to lose its beginning (not its impression) to fit."""
    ids = tokenizer(prompt.build(text))["input_ids"]
    if len(ids) <= budget:
        return ids, False
    report = tokenizer(text)["input_ids"]
    keep = max(0, len(report) - (len(ids) - budget) - 8)  # a margin for re-tokenisation at the cut
    shortened = tokenizer.decode(report[len(report) - keep :])
    return tokenizer(prompt.build(shortened))["input_ids"][-budget:], True


def shared_prefix(tokenizer: PreTrainedTokenizerBase, prompt: PromptSettings) -> list[int]:
    """The token ids every prompt of ``prompt``'s kind opens with: the instruction and the unit's name."""
    first, second = (tokenizer(prompt.build(text))["input_ids"] for text in ("a", "b"))
    return first[: next(i for i, (x, y) in enumerate(zip(first, second)) if x != y)]


def left_pad(sequences: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded on the left to the longest (so that every row ends where generation
    starts) and the attention mask that hides the padding."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention[row, width - len(ids) :] = 1
    return input_ids, attention


def candidate_seed(seed: int, prompt: Sequence[int], candidate: int) -> int:
    """The seed of one sampled candidate: a function of the run's seed, the prompt's tokens and the
    candidate's number only (63 bits of a BLAKE2 digest)."""
    digest = hashlib.blake2b(f"{seed}:{candidate}:{','.join(map(str, prompt))}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def certainty_shapes(tokenizer: PreTrainedTokenizerBase, fmt: CompletionFormat) -> list[dict[int, int | None]]:
    """Per shape in which format ``fmt`` writes a certainty word (the bare word; in the ``evidence``
    format also ``[word, quote]``), the token that decides which word it is (the first token at
    which the completions giving one observation each word differ), mapped to the word's label
    code. Empty if two words share it in some shape, or if one token means two words in two
    shapes: then no logits tell the words apart."""
    codes = [code for code in WORD_TO_CODE.values() if code is not None or fmt == "full"]
    quoted: list[dict[str, str] | None] = [None, {OBSERVATIONS[0]: "x"}] if fmt == "evidence" else [None]
    shapes: list[dict[int, int | None]] = []
    for quotes in quoted:
        sequences = [tokenizer(serialize_labels({OBSERVATIONS[0]: code}, fmt, quotes), add_special_tokens=False)["input_ids"] for code in codes]
        at = next((i for i, column in enumerate(zip(*sequences)) if len(set(column)) > 1), None)
        deciding = [ids[at] for ids in sequences] if at is not None else []
        if len(set(deciding)) != len(codes):
            return []
        shapes.append(dict(zip(deciding, codes)))
    return shapes if merged_shapes(shapes) is not None else []


def merged_shapes(shapes: Sequence[dict[int, int | None]]) -> dict[int, int | None] | None:
    """The deciding tokens of every shape in one map; None if one token means two words in two shapes."""
    merged: dict[int, int | None] = {}
    for shape in shapes:
        if any(merged.get(token, code) != code for token, code in shape.items()):
            return None
        merged |= shape
    return merged


def certainty_tokens(tokenizer: PreTrainedTokenizerBase, fmt: CompletionFormat) -> dict[int, int | None]:
    """Every token that decides a certainty word in some shape of format ``fmt``
    (:func:`certainty_shapes`, merged), mapped to the word's label code; empty if they do not
    tell the words apart."""
    return merged_shapes(certainty_shapes(tokenizer, fmt)) or {}


def _locate(text: str, quote: str, start: int = 0, end: int | None = None, lowercase: bool = False) -> tuple[int, int] | None:
    """Where ``quote`` lies in ``text[start:end]``, as ``[start, end)`` offsets into ``text``: the
    first verbatim occurrence, else the first match that lets each whitespace run of the quote be
    any whitespace run of the text (the prompt collapsed them), ignoring case where the model
    reads lower case; None where there is none (and for a quote without a word)."""
    end = len(text) if end is None else end
    words = quote.split()
    if not words:
        return None
    at = text.find(quote, start, end)
    if at >= 0:
        return at, at + len(quote)
    match = re.compile(r"\s+".join(map(re.escape, words)), re.IGNORECASE if lowercase else 0).search(text, start, end)
    return match.span() if match else None


def quote_fits(before: str, after: str, source: str) -> bool:
    """Whether the answer text ``after`` (``before`` and one more token's text) keeps the last quote
    it opens a copy of ``source`` (the unit's text as prompted, JSON-escaped as the answer writes
    it): true unless that token writes into the quote and it is then no substring of ``source``,
    or closes it empty, or follows its closing mark with anything but the end of the ``[word,
    quote]`` pair and then the answer's end or an observation's key (``PAIR_ENDS``): a model made
    to stop a quote early must not go on with another quote or stray characters."""
    opening = None
    for opening in QUOTE_OPENS.finditer(after):
        pass
    if opening is None:
        return True
    closing = QUOTE_ENDS.search(after, opening.end())
    if closing is None:
        return after[opening.end() :] in source
    close = closing.start()
    if before[close + 1 :].startswith(PAIR_ENDS):  # the quote and what follows it were written before this token
        return True
    quote, rest = after[opening.end() : close], after[close + 1 :]
    ends_well = any(rest.startswith(end) or end.startswith(rest) for end in PAIR_ENDS)
    if close < len(before):  # the quote itself was written (and checked) before this token
        return ends_well
    return quote in source and bool(quote.strip()) and ends_well


@dataclass(frozen=True)
class Completion:
    """A greedy completion's tokens and, per certainty word it wrote, the word's step (an index
    into ``tokens``) and the logits of every certainty word there (in :attr:`LLMLabeler.certainty` order)."""

    tokens: list[int]
    choices: list[tuple[int, list[float]]]


def next_tokens(logits: torch.Tensor, generators: Sequence[torch.Generator] | None, temperature: float) -> torch.Tensor:
    """The next token of each row of ``logits``: the most likely one, or one drawn from the softmax
    at ``temperature`` with the row's own generator."""
    if generators is None:
        return logits.argmax(dim=-1)
    probabilities = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.cat([torch.multinomial(row, 1, generator=generator) for row, generator in zip(probabilities, generators)])


class LLMLabeler:
    """A fine-tuned causal LM (SFT or RLHF policy) loaded from its folder."""

    provides_scores = True

    def __init__(
        self, model_dir: str, name: str = "llm", batch_size: int = 256, max_new_tokens: int | None = None, threads: int | None = None, copy_quotes: bool = True,
        no_finding: str | None = None, expert_stage: str | None = None,
    ) -> None:
        """``max_new_tokens``: the answers' room, by default the model's own (:class:`PromptSettings`).
        ``no_finding``: the folder of a learned No Finding model (:mod:`cxrlabel.labelers.no_finding`):
        No Finding is then positive only where that model also finds the report normal.
        ``expert_stage``: the folder of an expert stage (:mod:`cxrlabel.labelers.expert_stage`),
        which then corrects the labels (after the No Finding model, if any)."""
        prompt = read_llm_settings(model_dir)  # first: a folder that is no labeler's gets a clear error
        if threads:
            torch.set_num_threads(threads)
        model = AutoModelForCausalLM.from_pretrained(model_dir).to("cuda" if torch.cuda.is_available() else "cpu")
        model.eval()
        self._use(model, AutoTokenizer.from_pretrained(model_dir, padding_side="left"), prompt, name, batch_size, max_new_tokens, copy_quotes)
        self.no_finding = load_no_finding(no_finding, threads)
        self.expert_stage = load_expert_stage(expert_stage, threads)

    @classmethod
    def of(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: PromptSettings, name: str = "llm", batch_size: int = 256, max_new_tokens: int | None = None) -> LLMLabeler:
        """A labeler of a model in memory (one in training: put it in eval mode while it labels)."""
        labeler = cls.__new__(cls)
        labeler._use(model, tokenizer, prompt, name, batch_size, max_new_tokens, copy_quotes=True)
        return labeler

    def _use(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: PromptSettings, name: str, batch_size: int, max_new_tokens: int | None, copy_quotes: bool
    ) -> None:
        self.model, self.tokenizer, self.prompt, self.name = model, tokenizer, prompt, name
        self.batch_size = batch_size
        self.max_new_tokens = prompt.max_new_tokens if max_new_tokens is None else max_new_tokens
        self.context = self.model.config.max_position_embeddings
        self.prefix = shared_prefix(self.tokenizer, self.prompt)
        self._prefix_cache: DynamicCache | None = None
        self.certainty_groups = certainty_shapes(self.tokenizer, self.prompt.format)
        self.certainty = certainty_tokens(self.tokenizer, self.prompt.format)
        #: whether ``label_batch(texts, evidence=True)`` places each label's quote in the report
        self.provides_evidence = self.prompt.format == "evidence"
        #: whether greedy decoding keeps each quote a substring of its unit's text (:func:`quote_fits`)
        self.copy_quotes = copy_quotes and self.provides_evidence
        self._pieces: list[str] | None = None
        self.no_finding: NoFindingModel | None = None
        self.expert_stage: ExpertStage | None = None
        if not self.certainty:
            log.warning("%s: the certainty words share their first token: labels get no scores", name)

    def units(self, report: str) -> list[str]:
        """The texts this model is prompted with for one report: the report, or its sentences."""
        return units_of(report, self.prompt.unit)

    def prompt_ids(self, text: str) -> tuple[list[int], bool]:
        """Token ids of the prompt for one unit's ``text``, and whether it had to lose its beginning to fit."""
        return fit_prompt(self.tokenizer, text, self.prompt, self.context - self.max_new_tokens)

    def parse(self, output: str) -> Parsed:
        return parse_completion(output, self.prompt.format)

    def combine(self, parsed: Sequence[Parsed]) -> Labels:
        """A report's labels from its units' parsed outputs: the report's own, or its sentences' aggregated."""
        return parsed[0].labels if self.prompt.unit == "report" else aggregate_mentions(p.labels for p in parsed)

    def generate(self, prompts: Sequence[list[int]]) -> list[str]:
        """Greedy completions of token-id prompts: what ``transformers``' ``generate`` gives on them
        (tested), at less cost. The instruction every prompt opens with is run through the model
        once per labeler; its KV cache is copied into each batch, which then runs only the unit's
        own tokens, and a row leaves its batch at its EOS instead of decoding to the batch's
        longest answer. A prompt that lost its opening to fit the context runs without the cache."""
        return self.decode_texts(self._complete(prompts, None, 1.0))

    def decode_texts(self, completions: Sequence[Completion]) -> list[str]:
        return self.tokenizer.batch_decode([c.tokens for c in completions], skip_special_tokens=True)

    def scores(self, completion: Completion, labels: Labels) -> dict[str, dict[int | None, float]]:
        """Per non-blank label of a completion, the certainty words' logits at the step that wrote
        its word: the word must follow the label's key and be the label's (a salvaged or repeated
        key gets none). Where the format writes the word in several shapes (bare or quoted), the
        logits are those of the written token's shape's tokens."""
        found: dict[str, dict[int | None, float]] = {}
        for step, logits in completion.choices:
            keys = list(KEY.finditer(self.tokenizer.decode(completion.tokens[:step], skip_special_tokens=True)))
            name = keys[-1]["name"] if keys else None
            token = completion.tokens[step]
            if name in OBSERVATIONS and labels[name] is not None and labels[name] == self.certainty[token] and name not in found:
                by_token = dict(zip(self.certainty, logits))
                shape = next(group for group in self.certainty_groups if token in group)
                found[name] = {code: by_token[t] for t, code in shape.items()}
        return found

    def evidence(self, text: str, labels: Labels, parsed: Sequence[Parsed]) -> tuple[EvidenceMap, int]:
        """Per non-blank label of the report ``text``, the span of the quote its deciding unit gave
        (the first unit of the label's class, as :func:`combine_scores` takes), and how many
        quotes the report does not hold. A sentence's quote is sought in that sentence first, then
        anywhere in the report; a label without a quote (a bare word, a sentence-unit No Finding)
        has no span and is no miss."""
        spans = sentence_spans(text) if self.prompt.unit == "sentence" else [(0, len(text))]
        found: dict[str, Evidence | None] = {}
        misses = 0
        for name, code in labels.items():
            if code is None:
                continue
            deciding = next((i for i, unit in enumerate(parsed) if unit.labels.get(name) == code), None)
            quote = parsed[deciding].quotes.get(name) if deciding is not None else None
            found[name] = None
            if not quote:
                continue
            span = _locate(text, quote, *spans[deciding], lowercase=self.prompt.lowercase) or _locate(text, quote, lowercase=self.prompt.lowercase)
            if span is None:
                misses += 1
            else:
                found[name] = Evidence(span[0], span[1], text[span[0] : span[1]])
        return found, misses

    def sample(self, prompts: Sequence[list[int]], n: int, temperature: float, seed: int) -> list[list[str]]:
        """``n`` completions per prompt sampled at ``temperature`` from the whole distribution (no
        top-k or top-p), decoded as :meth:`generate` decodes. Each candidate draws from its own
        generator, seeded by ``seed``, the prompt's tokens and the candidate's number
        (:func:`candidate_seed`): a prompt's samples do not depend on the batch it shares, nor on
        which process of a sharded job draws them."""
        rows = [(i, k) for i in range(len(prompts)) for k in range(n)]
        device = self.model.device
        generators = [torch.Generator(device=device).manual_seed(candidate_seed(seed, prompts[i], k)) for i, k in rows]
        outputs = self.decode_texts(self._complete([prompts[i] for i, _ in rows], generators, temperature))
        return [outputs[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _complete(
        self, prompts: Sequence[list[int]], generators: Sequence[torch.Generator] | None, temperature: float, sources: Sequence[str] | None = None
    ) -> list[Completion]:
        """Completions of ``prompts``: greedy without ``generators``, else each row sampled with its
        own; with ``sources`` (each prompt's unit text as prompted, JSON-escaped), every quote copied from its source."""
        outputs: list[Completion] = [Completion([], [])] * len(prompts)
        shared = [i for i, ids in enumerate(prompts) if ids[: len(self.prefix)] == self.prefix]
        cut = sorted(set(range(len(prompts))) - set(shared))
        for indices, prefix in ((shared, self.prefix), (cut, [])):
            suffixes = [prompts[i][len(prefix) :] for i in indices]
            for batch in self.batches([len(s) for s in suffixes]):
                drawing = [generators[indices[i]] for i in batch] if generators is not None else None
                copying = [sources[indices[i]] for i in batch] if sources is not None else None
                for row, completion in zip(batch, self._decode([suffixes[i] for i in batch], prefix, drawing, temperature, copying)):
                    outputs[indices[row]] = completion
        return outputs

    def pieces(self) -> list[str]:
        """Each token's text, by id (built once, for copying quotes)."""
        if self._pieces is None:
            self._pieces = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
        return self._pieces

    def copied(self, tokens: torch.Tensor, logits: torch.Tensor, rows: Sequence[int], spelled: list[str], sources: Sequence[str]) -> torch.Tensor:
        """``tokens`` (one per row still decoding, chosen from ``logits``) with each that would break
        its row's quote (:func:`quote_fits` on the row's answer text ``spelled`` and its source)
        replaced by the row's likeliest token that does not (tried in order of the logits: the
        greedy token is kept by all but a few steps, and a closing quote mark fits soon)."""
        pieces = self.pieces()
        for at, (row, token) in enumerate(zip(rows, tokens.tolist())):
            before = spelled[row]
            if quote_fits(before, before + pieces[token], sources[row]):
                continue
            for candidate in logits[at].argsort(descending=True).tolist():
                if quote_fits(before, before + pieces[candidate], sources[row]):
                    tokens[at] = candidate
                    break
        return tokens

    @torch.inference_mode()
    def hf_generate(self, prompts: Sequence[list[int]], options: dict) -> list[list[str]]:
        """Completions of token-id prompts by ``transformers``' ``generate``, batched by similar
        length, left-padded: the reference that benchmarks/llm_inference.py times the labeler against."""
        outputs: list[list[str]] = [[] for _ in prompts]
        pad = self.tokenizer.pad_token_id
        per_prompt = options.get("num_return_sequences", 1)
        for batch in self.batches([len(p) for p in prompts]):
            input_ids, attention = left_pad([prompts[i] for i in batch], pad)
            width = input_ids.shape[1]
            generated = self.model.generate(
                input_ids=input_ids.to(self.model.device),
                attention_mask=attention.to(self.model.device),
                max_new_tokens=self.max_new_tokens,
                use_cache=True,
                pad_token_id=pad,
                eos_token_id=self.tokenizer.eos_token_id,
                **options,
            )
            texts = self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            for row, i in enumerate(batch):
                outputs[i] = texts[row * per_prompt : (row + 1) * per_prompt]
        return outputs

    def prefix_cache(self, prefix: list[int]) -> DynamicCache:
        """The KV cache of ``prefix`` (computed once per labeler for the shared instruction)."""
        if not prefix:
            return DynamicCache()
        if self._prefix_cache is None:
            self._prefix_cache = DynamicCache()
            self.model(input_ids=torch.tensor([prefix], device=self.model.device), past_key_values=self._prefix_cache, use_cache=True)
        return copy.deepcopy(self._prefix_cache)

    @torch.inference_mode()
    def _decode(
        self, suffixes: Sequence[list[int]], prefix: list[int], generators: Sequence[torch.Generator] | None, temperature: float, sources: Sequence[str] | None = None
    ) -> list[Completion]:
        """Completions of ``prefix + suffix`` for a batch of suffixes: the prefix from its cache, the
        suffixes left-padded after it (masked, and positioned as if unpadded). Greedy without
        ``generators`` (with the certainty words' logits where one is written); else row r samples
        at ``temperature`` with ``generators[r]``. With ``sources``, row r's quotes are copied from
        ``sources[r]`` (:meth:`copied`)."""
        device = self.model.device
        ids, mask = (t.to(device) for t in left_pad(suffixes, self.tokenizer.pad_token_id))
        cache = self.prefix_cache(prefix)
        cache.batch_repeat_interleave(len(suffixes))
        attention = torch.cat([torch.ones(len(suffixes), len(prefix), dtype=torch.long, device=device), mask], dim=1)
        positions = (len(prefix) + mask.cumsum(dim=1) - 1).clamp(min=len(prefix))
        logits = self.model(input_ids=ids, attention_mask=attention, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        next_position = positions[:, -1:] + 1
        rows = torch.arange(len(suffixes), device=device)  # the batch rows still decoding
        answers: list[list[int]] = [[] for _ in suffixes]
        spelled = [""] * len(suffixes)  # each row's answer text, where quotes are copied
        choices: list[list[tuple[int, list[float]]]] = [[] for _ in suffixes]
        certainty = torch.tensor(list(self.certainty), dtype=torch.long, device=device) if generators is None else None
        for step in range(self.max_new_tokens):
            tokens = next_tokens(logits[:, -1], [generators[row] for row in rows.tolist()] if generators is not None else None, temperature)
            if sources is not None:
                tokens = self.copied(tokens, logits[:, -1], rows.tolist(), spelled, sources)
                for row, token in zip(rows.tolist(), tokens.tolist()):
                    spelled[row] += self.pieces()[token]
            for row, token in zip(rows.tolist(), tokens.tolist()):
                answers[row].append(token)
            if certainty is not None and (written := torch.isin(tokens, certainty)).any():
                for at in written.nonzero().squeeze(1).tolist():
                    choices[rows[at]].append((step, logits[at, -1, certainty].float().tolist()))
            going = tokens != self.tokenizer.eos_token_id
            if step == self.max_new_tokens - 1 or not going.any():
                break
            if not going.all():
                keep = going.nonzero().squeeze(1)
                rows, tokens, attention, next_position = rows[keep], tokens[keep], attention[keep], next_position[keep]
                cache.batch_select_indices(keep)
            attention = torch.cat([attention, attention.new_ones(len(rows), 1)], dim=1)
            logits = self.model(input_ids=tokens[:, None], attention_mask=attention, position_ids=next_position, past_key_values=cache, use_cache=True).logits
            next_position = next_position + 1
        return [Completion(tokens, written) for tokens, written in zip(answers, choices)]

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices of prompts in batches of similar length: at most ``batch_size`` prompts, and at
        most ``batch_size`` x (the median length) padded prompt tokens, so that a few very long
        reports get small batches of their own instead of padding 32 short ones to their length."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        budget = self.batch_size * (lengths[order[len(order) // 2]] if order else 0)
        batches: list[list[int]] = []
        for i in order:  # ascending length: the newest prompt is the batch's longest
            if batches and len(batches[-1]) < self.batch_size and (len(batches[-1]) + 1) * lengths[i] <= budget:
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def label_batch(self, texts: Sequence[str], evidence: bool = False) -> list[Labeled]:
        """The labels of each report (with their scores); with ``evidence`` (an ``evidence``-format
        model only), each label's quote placed in the report too: the same labels, one decoding."""
        units = [self.units(text) for text in texts]
        distinct = list(dict.fromkeys(unit for report in units for unit in report))
        prompts, truncated = zip(*(self.prompt_ids(unit) for unit in distinct)) if distinct else ((), ())
        sources = [json.dumps(quote_text(unit, self.prompt), ensure_ascii=False)[1:-1] for unit in distinct] if self.copy_quotes else None
        completions = self._complete(prompts, None, 1.0, sources)
        parsed = dict(zip(distinct, (self.parse(output) for output in self.decode_texts(completions))))
        scored = {unit: self.scores(completion, parsed[unit].labels) for unit, completion in zip(distinct, completions)}
        cut = dict(zip(distinct, truncated))
        results = []
        for text, report in zip(texts, units):
            errors = any(parsed[unit].error is not None for unit in report)
            labels = self.combine([parsed[unit] for unit in report])
            scores = combine_scores(labels, [(parsed[unit].labels, scored[unit]) for unit in report])
            found, misses = self.evidence(text, labels, [parsed[unit] for unit in report]) if evidence and self.provides_evidence else (None, 0)
            results.append(Labeled(labels, format_error=errors, fallback_used=errors, truncated=any(cut[unit] for unit in report), evidence=found, scores=scores, evidence_miss=misses))
        return apply_expert_stage(self.expert_stage, texts, apply_no_finding_model(self.no_finding, texts, results))
