"""LLM labeler throughput on this CPU: batched generation versus one report at a time, in one run.

usage: python benchmarks/llm_inference.py MODEL_DIR REPORTS_PARQUET [N_REPORTS]
The prompts are the model's units of the first N test reports (the reports, or their distinct
sentences for a sentence-unit model); the rows count prompts.
"One at a time" is the loop a user would write first: tokenize one prompt, generate, decode.
"Compute floor" is no generation at all: one forward pass over the exact prompt + answer tokens
of every report (the batched outputs), batched like the labeler's prompts. Any decoder must at
least spend that, so naive time / floor bounds the speed-up any batching can reach on this CPU.
Peak memory (max RSS) is read from the OS after each mode.
"""

from __future__ import annotations

import resource
import sys
import time

import polars as pl
import torch

from cxrlabel.instruct import build_prompt
from cxrlabel.labelers.llm import LLMLabeler, left_pad

model_dir, reports_path = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 128
torch.set_num_threads(2)
reports = pl.read_parquet(reports_path).filter(pl.col("split") == "test")["text"].head(n).to_list()
labeler = LLMLabeler(model_dir, batch_size=32, max_new_tokens=128)
texts = list(dict.fromkeys(unit for report in reports for unit in labeler.units(report)))  # what the model is prompted with


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def naive() -> list[str]:
    outputs = []
    for text in texts:
        inputs = labeler.tokenizer(build_prompt(text, labeler.prompt.format, labeler.prompt.unit), return_tensors="pt")
        generated = labeler.model.generate(**inputs, max_new_tokens=128, do_sample=False, pad_token_id=labeler.tokenizer.pad_token_id)
        outputs.append(labeler.tokenizer.decode(generated[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    return outputs


def batched() -> list[str]:
    return labeler.generate([labeler.prompt_ids(text)[0] for text in texts])


@torch.inference_mode()
def floor(answers: list[str]) -> None:
    sequences = [labeler.prompt_ids(text)[0] + labeler.tokenizer(answer)["input_ids"] + [labeler.tokenizer.eos_token_id] for text, answer in zip(texts, answers)]
    for batch in labeler.batches([len(s) for s in sequences]):
        ids, mask = left_pad([sequences[i] for i in batch], labeler.tokenizer.pad_token_id)
        labeler.model(input_ids=ids, attention_mask=mask, logits_to_keep=1)


results = {}
for name, run in (("one report at a time", naive), ("batched (32, token budget, left padding, KV cache)", batched)):
    start = time.perf_counter()
    outputs = run()
    seconds = time.perf_counter() - start
    tokens = sum(len(labeler.tokenizer(o)["input_ids"]) for o in outputs)
    results[name] = outputs
    print(f"| {name} | {len(texts)} | {seconds:.1f} | {len(texts) / seconds:.1f} | {tokens / len(texts):.1f} | {peak_mb():.0f} |")
start = time.perf_counter()
floor(outputs)
seconds = time.perf_counter() - start
print(f"| compute floor (batched forward over prompt + answer, no generation) | {len(texts)} | {seconds:.1f} | {len(texts) / seconds:.1f} | | {peak_mb():.0f} |")
same = sum(a == b for a, b in zip(*results.values()))
print(f"identical outputs: {same}/{len(texts)}")
