"""The LLM labeler: batched greedy decoding of a fine-tuned causal LM, parsed by the instruction module.

- The model's unit (recorded beside it) decides what one prompt holds: the whole report, or one
  sentence; a sentence-unit model labels each distinct sentence of a batch once, and a report's
  labels are its sentences' aggregated as the CheXpert labeler aggregates mentions.
- Batches of similar prompt length under a padded-token budget, left padding, KV cache, greedy
  decoding, stop at EOS.
- A report whose prompt would not fit the model's context (with room for the answer) keeps
  its end (the impression) and loses its beginning; it is counted (``truncated``), never cut
  silently.
- A malformed output never stops a run: it is counted (``format_error``) and the fallback
  keeps the observation/certainty pairs that can be salvaged from it (``fallback_used``);
  observations it cannot salvage stay blank.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from cxrlabel.instruct import Parsed, PromptSettings, parse_completion, units_of
from cxrlabel.labelers import Labeled, Labels
from cxrlabel.observations import aggregate_mentions

log = logging.getLogger(__name__)

SETTINGS_FILE = "cxrlabel_llm.json"


def write_llm_settings(model_dir: str, settings: PromptSettings) -> None:
    """Record how a model was tuned to be prompted, so that any later use prompts it the same way."""
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


class LLMLabeler:
    """A fine-tuned causal LM (SFT or RLHF policy) loaded from its folder."""

    def __init__(self, model_dir: str, name: str = "llm", batch_size: int = 32, max_new_tokens: int = 128, threads: int | None = None) -> None:
        path = Path(model_dir)
        self.prompt = read_llm_settings(model_dir)
        if threads:
            torch.set_num_threads(threads)
        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(path)
        self.model.eval()
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.context = self.model.config.max_position_embeddings

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
        """Greedy completions of token-id prompts."""
        return [outputs[0] for outputs in self._generate(prompts, {"do_sample": False})]

    def sample(self, prompts: Sequence[list[int]], n: int, temperature: float, seed: int) -> list[list[str]]:
        """``n`` sampled completions per prompt (reproducible for a given seed)."""
        torch.manual_seed(seed)
        return self._generate(prompts, {"do_sample": True, "temperature": temperature, "top_k": 0, "num_return_sequences": n})

    @torch.inference_mode()
    def _generate(self, prompts: Sequence[list[int]], options: dict) -> list[list[str]]:
        """Completions of token-id prompts, batched by similar length, left-padded, with KV cache."""
        outputs: list[list[str]] = [[] for _ in prompts]
        pad = self.tokenizer.pad_token_id
        per_prompt = options.get("num_return_sequences", 1)
        for batch in self.batches([len(p) for p in prompts]):
            input_ids, attention = left_pad([prompts[i] for i in batch], pad)
            width = input_ids.shape[1]
            generated = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
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

    def label_batch(self, texts: Sequence[str]) -> list[Labeled]:
        units = [self.units(text) for text in texts]
        distinct = list(dict.fromkeys(unit for report in units for unit in report))
        prompts, truncated = zip(*(self.prompt_ids(unit) for unit in distinct)) if distinct else ((), ())
        parsed = dict(zip(distinct, (self.parse(output) for output in self.generate(prompts))))
        cut = dict(zip(distinct, truncated))
        results = []
        for report in units:
            errors = any(parsed[unit].error is not None for unit in report)
            labels = self.combine([parsed[unit] for unit in report])
            results.append(Labeled(labels, format_error=errors, fallback_used=errors, truncated=any(cut[unit] for unit in report)))
        return results
