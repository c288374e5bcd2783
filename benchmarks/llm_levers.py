"""The sentence-unit levers of docs/benchmarks.md, one run per command: build (or reuse) a tiny base
model, fine-tune it with TRL's SFTTrainer on the training split's sentences labeled by the rule
labeler, and score it on the validate split (never test).

usage: python benchmarks/llm_levers.py NAME --results RESULTS_DIR --out DIR [lever options]
RESULTS_DIR holds a report-unit run of the OpenI configuration (corpus/, predictions/rule.parquet,
instruct/): its training split is the data, its report-unit training prompts go into the
tokenizer's corpus (as in the runs recorded). The prompts keep the report-unit instruction
("Report: <sentence>"); the pipeline's sentence unit words it for a sentence.

Scores, against the expert (indexer) labels and against the rule labeler's output of the 216
validate reports: positive F1 per observation and its mean, micro positive F1 and weighted F1
against the rule labeler, and on the distinct validate sentences the share labeled exactly as the
rule labeler labels them and the mean per-observation weighted F1.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from cxrlabel.evaluation.metrics import (
    extraction_f1,
    label_matrix,
    positive_f1_by_observation,
    weighted_f1_by_observation,
)
from cxrlabel.instruct import PromptSettings, oversample_rare, sentence_instruction_table
from cxrlabel.io.labels import read_labels
from cxrlabel.labelers import Labeled
from cxrlabel.labelers.llm import LLMLabeler, write_llm_settings
from cxrlabel.labelers.rule import RuleLabeler
from cxrlabel.observations import OBSERVATIONS, aggregate_mentions
from cxrlabel.predict import labeled_frame, predict
from cxrlabel.text import split_sentences
from cxrlabel.training.base_model import TinyModelSpec, build_base_model
from cxrlabel.training.sft import run_sft

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("name")
parser.add_argument("--results", required=True)
parser.add_argument("--out", required=True, help="folder for the base models and fine-tuned models")
parser.add_argument(
    "--distinct", action="store_true", help="each distinct sentence once (default: every sentence of every report)"
)
parser.add_argument("--epochs", type=float, default=2)
parser.add_argument(
    "--oversample", type=int, default=1, help="repeat sentences of rare label classes up to this many times"
)
parser.add_argument("--lower", action="store_true", help="lower-case the text (prompts, tokenizer, pretraining)")
parser.add_argument("--weight-decay", type=float, default=0.0)
parser.add_argument("--dropout", type=float, default=0.0, help="attention dropout during fine-tuning")
parser.add_argument("--pretrain", type=float, default=3.0, help="pretraining epochs of the base model")
parser.add_argument("--hidden", type=int, default=256)
parser.add_argument("--layers", type=int, default=4)
parser.add_argument("--intermediate", type=int, default=768)
parser.add_argument("--heads", type=int, default=4)
parser.add_argument("--kv-heads", type=int, default=2)
args = parser.parse_args()

results, out = Path(args.results), Path(args.out)
rule = RuleLabeler()
# the report-unit instruction, as in the runs recorded
prompt = PromptSettings("mentioned", "report", lowercase=args.lower)
reports = pl.read_parquet(results / "corpus/reports.parquet")
train_reports = reports.filter(pl.col("split") == "train")
sentences = sentence_instruction_table(train_reports, predict(rule, train_reports), prompt)
if args.distinct:
    sentences = sentences.unique("prompt", keep="first", maintain_order=True)
train = oversample_rare(sentences, prompt.format, args.oversample)
model_dir = out / args.name
model_dir.mkdir(parents=True, exist_ok=True)
train.write_parquet(model_dir / "train.parquet")
print(f"{sentences.height} training sentences, {train.height} instances", flush=True)

corpus = f"-lower-o{args.oversample}" if args.lower else ""
base = out / f"base-h{args.hidden}-l{args.layers}-i{args.intermediate}-p{args.pretrain}-d{args.dropout}{corpus}"
if not base.is_dir():
    # the tokenizer's corpus: the report-unit prompts as recorded, or once lower-cased this run's instances (as the
    # pipeline's base_model reads its instruct_train), hence the repeats in the cached model's name
    instructions = train if args.lower else pl.read_parquet(results / "instruct/instruct_train.parquet")
    spec = TinyModelSpec(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        intermediate_size=args.intermediate,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        pretrain_epochs=args.pretrain,
    )
    texts = (instructions["prompt"] + instructions["completion"]).to_list()
    build_base_model(str(base), None, False, train_reports["text"].to_list(), texts, spec, args.lower)
    if args.dropout:  # dropout only while fine-tuning: set after pretraining
        config = base / "config.json"
        dropout = f'"attention_dropout": {args.dropout}'
        config.write_text(config.read_text().replace('"attention_dropout": 0.0', dropout))

settings = dict(
    num_train_epochs=args.epochs,
    per_device_train_batch_size=16,
    learning_rate=3e-4,
    optim="adamw_torch",
    weight_decay=args.weight_decay,
    lr_scheduler_type="cosine",
    warmup_steps=0.05,
    bf16=False,
    gradient_checkpointing=False,
    max_length=512,
    logging_steps=100,
    save_strategy="no",
    seed=0,
    use_cpu=True,
)
start = time.perf_counter()
validate_instructions = str(results / "instruct/instruct_validate.parquet")
run_sft(str(base), str(model_dir / "train.parquet"), validate_instructions, str(model_dir), settings, threads=2)
write_llm_settings(str(model_dir), prompt)
print(f"sft {time.perf_counter() - start:.0f} s", flush=True)

llm = LLMLabeler(str(model_dir), threads=2, max_new_tokens=64)
validate = reports.filter(pl.col("split") == "validate")
per_report = [split_sentences(text) for text in validate["text"]]
distinct = sorted({s for report in per_report for s in report})
parsed = dict(zip(distinct, (llm.parse(o) for o in llm.generate([llm.prompt_ids(s)[0] for s in distinct]))))
truth = {s: rule.sentence_labels(s) for s in distinct}
exact = np.mean([parsed[s].labels == truth[s] for s in distinct])


def mean(scores: dict[str, float]) -> float:
    return float(np.nanmean(list(scores.values())))


def as_matrix(rows):
    return np.array([[np.nan if row[n] is None else row[n] for n in OBSERVATIONS[1:]] for row in rows], dtype=float)


truth_matrix, parsed_matrix = as_matrix(truth.values()), as_matrix(parsed[s].labels for s in distinct)
by_sentence = weighted_f1_by_observation(truth_matrix, parsed_matrix, OBSERVATIONS[1:])
labeled = [Labeled(aggregate_mentions(parsed[s].labels for s in report)) for report in per_report]
predictions = pl.concat([validate.select("study_id"), labeled_frame(labeled)], how="horizontal")
in_validate = validate.select("study_id")
expert = read_labels(results / "corpus/labels_gold.parquet")[0].join(in_validate, on="study_id", how="semi")
teacher = read_labels(results / "predictions/rule.parquet")[0].join(in_validate, on="study_id", how="semi")
g, p, _ = label_matrix(expert, predictions)
vs_expert = positive_f1_by_observation(g, p)
g, p, _ = label_matrix(teacher, predictions)
vs_rule = positive_f1_by_observation(g, p)
micro, weighted = extraction_f1(g.ravel(), p.ravel(), 1.0), weighted_f1_by_observation(g, p)
print(
    f"RESULT {args.name}: expert {mean(vs_expert):.3f} | vs rule: positive {mean(vs_rule):.3f} "
    f"micro positive {micro:.3f} weighted {mean(weighted):.3f} "
    f"| sentences exact {exact:.3f}, per-observation weighted {mean(by_sentence):.3f}"
)
print({name: round(score, 2) for name, score in vs_expert.items()})
