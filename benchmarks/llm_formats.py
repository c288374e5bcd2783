"""Completion formats side by side: tokens generated per report, reports/s, format errors and F1.

usage: python benchmarks/llm_formats.py REPORTS_PARQUET GOLD_PARQUET MODEL_DIR [MODEL_DIR ...]
Each model folder records the format it was tuned on (cxrlabel_llm.json: mentioned, full or
evidence); all label the same test reports, one after the other, in one process. An
``evidence``-format model answers with quotes (longer answers: 400 new tokens at most, against 200)
and its labels are taken with evidence: the last columns give the share of its non-blank labels
whose quote was placed in the report and the quotes the report does not hold (misses); the
labels are the same with and without evidence (tests/test_llm.py).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import polars as pl
import torch

from cxrlabel.evaluation.metrics import label_matrix, weighted_f1_by_observation
from cxrlabel.io.labels import read_labels
from cxrlabel.labelers import label_batch
from cxrlabel.labelers.llm import LLMLabeler, read_llm_settings
from cxrlabel.predict import labeled_frame

reports_path, gold_path, *models = sys.argv[1:]
torch.set_num_threads(2)
reports = pl.read_parquet(reports_path).filter(pl.col("split") == "test")
gold = read_labels(gold_path)[0].join(reports.select("study_id"), on="study_id", how="semi")
print("| format | model | reports | s | reports/s | tokens generated / report | format errors | weighted F1 | labels with a span | quotes not found |")
print("|---|---|---|---|---|---|---|---|---|---|")
for model in models:
    labeler = LLMLabeler(model, batch_size=32, max_new_tokens=400 if read_llm_settings(model).format == "evidence" else 200)
    prompts = [labeler.prompt_ids(text)[0] for text in reports["text"]]
    start = time.perf_counter()
    outputs = labeler.generate(prompts)
    seconds = time.perf_counter() - start
    tokens = np.mean([len(labeler.tokenizer(o)["input_ids"]) + 1 for o in outputs])  # + EOS
    labeled = label_batch(labeler, reports["text"].to_list(), evidence=True)  # evidence: None unless the format gives it
    predictions = pl.concat([reports.select("study_id"), labeled_frame(labeled)], how="horizontal")
    g, p, _ = label_matrix(gold, predictions)
    f1 = np.nanmean(list(weighted_f1_by_observation(g, p).values()))
    errors = sum(item.format_error for item in labeled)
    stated = sum(code is not None for item in labeled for code in item.labels.values())
    spans = sum(e is not None for item in labeled for e in (item.evidence or {}).values())
    evidence = f"{100 * spans / max(stated, 1):.1f}% | {sum(item.evidence_miss for item in labeled)}" if labeler.provides_evidence else "– | –"
    print(f"| {labeler.prompt.format} | {model} | {len(outputs)} | {seconds:.1f} | {len(outputs) / seconds:.1f} | {tokens:.1f} | {errors} | {f1:.3f} | {evidence} |")
