"""A micro model for the LLM tests (tokenizer and Qwen2 built here in seconds), and the settings
its SFT runs use; the fixtures ``base`` and ``tuned`` (tests/conftest.py) build it once per run."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cxrlabel.instruct import PromptSettings, build_prompt, serialize_labels
from cxrlabel.labelers.llm import write_llm_settings
from cxrlabel.labelers.rule import RuleLabeler
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.training.base_model import TinyModelSpec, build_base_model
from cxrlabel.training.sft import run_sft

REPORTS = ["No pneumothorax.", "Small left pleural effusion.", "Heart size is normal.", "Possible pneumonia."] * 4
MICRO = TinyModelSpec(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                      max_position_embeddings=128, pretrain_epochs=1, pretrain_block=16, pretrain_batch_size=4)


def sft_settings(max_steps: int) -> dict:
    return {"max_steps": max_steps, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "bf16": False, "gradient_checkpointing": False,
            "save_steps": 2, "logging_steps": 1, "use_cpu": True, "seed": 0, "max_length": 128}


def build_base(path: Path) -> Path:
    """The micro base model, with ``train.parquet``: every report answered "no pneumothorax"."""
    labels = {name: None for name in OBSERVATIONS} | {"Pneumothorax": 0}
    completions = [serialize_labels(labels, "mentioned")] * len(REPORTS)
    build_base_model(str(path), None, False, REPORTS, [build_prompt(r, "mentioned") for r in REPORTS] + completions, MICRO)
    pl.DataFrame({"prompt": [build_prompt(r, "mentioned") for r in REPORTS], "completion": completions}).write_parquet(path / "train.parquet")
    return path


def build_tuned(base: Path, path: Path) -> Path:
    """The micro model tuned (300 steps, ~3 s) to the rule labeler's answers, which differ in
    length: it stops at EOS after a varying number of tokens, as a real labeler does."""
    answers = [serialize_labels(labeled.labels, "mentioned") for labeled in RuleLabeler().label_batch(REPORTS)]
    pl.DataFrame({"prompt": [build_prompt(r, "mentioned") for r in REPORTS], "completion": answers}).write_parquet(path / "train.parquet")
    run_sft(str(base), str(path / "train.parquet"), str(path / "train.parquet"), str(path / "sft"), sft_settings(300) | {"learning_rate": 3e-3, "save_steps": 300}, threads=1)
    write_llm_settings(str(path / "sft"), PromptSettings("mentioned"))
    return path / "sft"
