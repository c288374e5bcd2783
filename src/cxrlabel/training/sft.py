"""Supervised fine-tuning of the base causal LM on the instruction set, with TRL's SFTTrainer.

Prompt/completion records give completion-only loss (TRL's default for that format). Settings
come from config: paper 1 used batch 2, gradient accumulation 2, 5 epochs, Adam, lr 1e-4, bf16
on GPUs. On a CPU keep bf16 and gradient checkpointing off (20x slower otherwise).
Checkpoints are kept in ``<out>/checkpoints``; a rerun resumes from the last one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from cxrlabel.training.base_model import weights_dtype

log = logging.getLogger(__name__)


def instruction_dataset(path: str) -> Dataset:
    """A prompt/completion dataset from an instruction parquet."""
    return Dataset.from_polars(pl.read_parquet(path, columns=["prompt", "completion"]))


def run_sft(base_dir: str, train_path: str, validate_path: str, out_dir: str, settings: dict[str, Any], threads: int) -> dict[str, float]:
    """Fine-tune ``base_dir`` on the training instructions; save the final model to ``out_dir``.

    ``settings`` holds SFTConfig fields (epochs, batch size, learning rate, bf16...).
    Returns the final training metrics and the validation loss.
    """
    torch.set_num_threads(threads)
    checkpoints = Path(out_dir) / "checkpoints"
    tokenizer = AutoTokenizer.from_pretrained(base_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=weights_dtype(settings))
    defaults = {
        "save_strategy": "steps",
        "save_total_limit": 2,
        "eval_strategy": "no",
        "dataloader_num_workers": 0,
        "completion_only_loss": True,
        "packing": False,
        "disable_tqdm": False,
        "logging_first_step": True,
    }
    config = SFTConfig(output_dir=str(checkpoints), report_to="none", **(defaults | settings))
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=instruction_dataset(train_path),
        eval_dataset=instruction_dataset(validate_path),
        processing_class=tokenizer,
    )
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last:
        log.info("resuming from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    metrics = dict(result.metrics)
    metrics.update(trainer.evaluate())
    log.info("sft metrics: %s", metrics)
    trainer.save_model(out_dir)
    tokenizer.save_pretrained(out_dir)
    return metrics
