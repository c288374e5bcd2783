"""LLM labeler throughput on this CPU, every way of decoding side by side in one run.

usage: python benchmarks/llm_inference.py MODEL_DIR REPORTS_PARQUET [N_REPORTS] [BATCH_SIZE] [REPEATS]
The prompts are the model's units of the first N test reports (the reports, or their distinct
sentences for a sentence-unit model).
- "one at a time": the loop a user would write first: tokenize one prompt, ``generate``, decode.
- "generate, batched": ``transformers``' ``generate`` on left-padded batches of similar length.
- "labeler": ``LLMLabeler.generate``, the pipeline's path: the instruction's KV cache computed
  once and copied into each batch, rows dropped from a batch at their EOS.
- "compute floor": no generation at all: one batched forward pass over the exact tokens that a
  decoder must run (prompt + answer), with the LM head only where a token is chosen (the last
  prompt position and each answer token). "instruction cached" runs the floor from the shared
  instruction's cache, as the labeler does; "whole prompt" runs every prompt token.
Peak memory (max RSS) is read from the OS after each mode. With REPEATS > 1, the labeler and
the cached-instruction floor then run REPEATS more times, alternating, and their best and median
times and ratio are printed: on a noisy VM only same-run ratios compare.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable

import polars as pl
import torch

from cxrlabel.labelers.llm import LLMLabeler, left_pad

model_dir, reports_path = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 128
batch_size = int(sys.argv[4]) if len(sys.argv) > 4 else 32
repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 1
torch.set_num_threads(2)
reports = pl.read_parquet(reports_path).filter(pl.col("split") == "test")["text"].head(n).to_list()
labeler = LLMLabeler(model_dir, batch_size=batch_size, max_new_tokens=128)
texts = list(dict.fromkeys(unit for report in reports for unit in labeler.units(report)))  # what the model is prompted with
prompts = [labeler.prompt_ids(text)[0] for text in texts]
tokenizer, model = labeler.tokenizer, labeler.model


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.inference_mode()
def one_at_a_time() -> list[str]:
    outputs = []
    for ids in prompts:
        generated = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=128, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        outputs.append(tokenizer.decode(generated[0, len(ids) :], skip_special_tokens=True))
    return outputs


def generate_batched() -> list[str]:
    return [outputs[0] for outputs in labeler.hf_generate(prompts, {"do_sample": False})]


@torch.inference_mode()
def floor(answers: list[str], prefix: list[int]) -> None:
    """Forward passes over ``prefix``-less prompt + answer tokens (the prefix from its cache),
    with the LM head only at the positions whose next token a decoder chooses."""
    answer_ids = [tokenizer(answer)["input_ids"] + [tokenizer.eos_token_id] for answer in answers]
    sequences = [ids[len(prefix) :] + answer[:-1] for ids, answer in zip(prompts, answer_ids)]
    for batch in labeler.batches([len(s) for s in sequences]):
        ids, mask = left_pad([sequences[i] for i in batch], tokenizer.pad_token_id)
        cache = labeler.prefix_cache(prefix)
        cache.batch_repeat_interleave(len(batch))
        attention = torch.cat([torch.ones(len(batch), len(prefix), dtype=torch.long), mask], dim=1)
        positions = (len(prefix) + mask.cumsum(dim=1) - 1).clamp(min=len(prefix))
        hidden = model.model(input_ids=ids, attention_mask=attention, position_ids=positions, past_key_values=cache).last_hidden_state
        chosen = torch.zeros_like(mask, dtype=torch.bool)
        for row, i in enumerate(batch):
            chosen[row, ids.shape[1] - len(answer_ids[i]) :] = True
        model.lm_head(hidden[chosen]).argmax(dim=-1)


def timed(name: str, run: Callable[[], list[str] | None]) -> list[str] | None:
    start = time.perf_counter()
    outputs = run()
    seconds = time.perf_counter() - start
    tokens = f"{sum(len(tokenizer(o)['input_ids']) for o in outputs) / len(outputs):.1f}" if outputs else ""
    print(f"| {name} | {len(reports)} | {len(prompts)} | {seconds:.2f} | {len(reports) / seconds:.1f} | {tokens} | {peak_mb():.0f} |")
    return outputs


print(f"{len(reports)} reports, {len(prompts)} prompts, instruction {len(labeler.prefix)} tokens, prompt tokens / prompt {sum(map(len, prompts)) / len(prompts):.1f}, batch size {batch_size}")
print("| mode | reports | prompts | s | reports/s | tokens generated / prompt | peak RSS MB |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
reference = timed("one at a time (`generate`, no padding)", one_at_a_time)
batched = timed("`generate`, batched (left padding, KV cache)", generate_batched)
ours = timed("labeler: instruction cached once, finished rows dropped", lambda: labeler.generate(prompts))
timed("compute floor, whole prompt", lambda: floor(ours, []))
timed("compute floor, instruction cached", lambda: floor(ours, labeler.prefix))
print(f"identical outputs: batched {sum(a == b for a, b in zip(reference, batched))}/{len(prompts)}, labeler {sum(a == b for a, b in zip(reference, ours))}/{len(prompts)}")

if repeats > 1:
    times: dict[str, list[float]] = {"labeler": [], "floor": []}
    for _ in range(repeats):
        for name, run in (("labeler", lambda: labeler.generate(prompts)), ("floor", lambda: floor(ours, labeler.prefix))):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    best, median = ({name: pick(t) for name, t in times.items()} for pick in (min, statistics.median))
    print(f"{repeats} alternating runs: labeler best {best['labeler']:.3f} s, median {median['labeler']:.3f} s; floor (instruction cached) best {best['floor']:.3f} s, median {median['floor']:.3f} s; floor / labeler {best['floor'] / best['labeler']:.2f} (bests), {median['floor'] / median['labeler']:.2f} (medians)")
