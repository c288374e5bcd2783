"""RLHF after SFT: a reward model on the preference set, then PPO against it (paper 2).

- Reward model: TRL's RewardTrainer (pairwise loss -log sigmoid(r(chosen) - r(rejected))),
  initialised from the SFT model with a one-output sequence-classification head. Pairs are
  split by report into train and held-out; the held-out pairwise accuracy is reported.
- PPO: trl.experimental.ppo (trl 1.12, the last release with PPO): the SFT model as policy and
  as frozen reference (KL penalty), the reward model as reward, a value model initialised from
  the reward model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import polars as pl
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

log = logging.getLogger(__name__)


def held_out(study_id: str, fraction: float, seed: int) -> bool:
    """Whether a report's pairs are held out (a hash of the id: all pairs of a report go together)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{study_id}".encode()).digest()[:8], "big") / 2**64 < fraction


def sequence_classifier(model_dir: str, dtype: torch.dtype) -> AutoModelForSequenceClassification:
    """A one-output sequence classifier on top of a causal LM's weights (the score head is new)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def train_reward_model(sft_dir: str, preferences_path: str, out_dir: str, settings: dict[str, Any], held_out_fraction: float, threads: int) -> dict[str, float]:
    """Train the reward model on the preference pairs; save it and its metrics to ``out_dir``."""
    from trl import RewardConfig, RewardTrainer

    torch.set_num_threads(threads)
    pairs = pl.read_parquet(preferences_path).with_columns(
        pl.col("study_id").map_elements(lambda s: held_out(s, held_out_fraction, settings.get("seed", 0)), return_dtype=pl.Boolean).alias("held_out")
    )
    train, test = pairs.filter(~pl.col("held_out")), pairs.filter(pl.col("held_out"))
    if train.height == 0 or test.height == 0:
        raise ValueError(f"{preferences_path}: {pairs.height} pairs leave no training or no held-out pairs")
    columns = ["prompt", "chosen", "rejected"]
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    model = sequence_classifier(sft_dir, torch.bfloat16 if settings.get("bf16") else torch.float32)
    trainer = RewardTrainer(
        model=model,
        args=RewardConfig(output_dir=str(Path(out_dir) / "checkpoints"), report_to="none", save_strategy="no", **settings),
        train_dataset=Dataset.from_polars(train.select(columns)),
        eval_dataset=Dataset.from_polars(test.select(columns)),
        processing_class=tokenizer,
    )
    trainer.train()
    metrics = {key: float(value) for key, value in trainer.evaluate().items() if isinstance(value, (int, float))}
    metrics |= {"train_pairs": train.height, "held_out_pairs": test.height}
    log.info("reward model: held-out pairwise accuracy %.3f on %d pairs", metrics.get("eval_accuracy", float("nan")), test.height)
    trainer.save_model(out_dir)
    tokenizer.save_pretrained(out_dir)
    (Path(out_dir) / "reward_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def run_ppo(sft_dir: str, reward_dir: str, reports: pl.DataFrame, out_dir: str, settings: dict[str, Any], threads: int) -> None:
    """PPO of the SFT policy against the reward model, on the prompts of ``reports``; saves the policy."""
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from cxrlabel.instruct import build_prompt
    from cxrlabel.labelers.llm import SETTINGS_FILE, write_llm_settings

    torch.set_num_threads(threads)
    fmt = json.loads((Path(sft_dir) / SETTINGS_FILE).read_text())["format"]
    tokenizer = AutoTokenizer.from_pretrained(sft_dir, padding_side="left")
    dtype = torch.bfloat16 if settings.get("bf16") else torch.float32
    policy = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=dtype)
    reference = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=dtype)
    reward = AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1, dtype=dtype)
    value = AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1, dtype=dtype)
    prompts = [tokenizer(build_prompt(text, fmt))["input_ids"] for text in reports["text"]]
    dataset = Dataset.from_dict({"input_ids": prompts})
    config = PPOConfig(output_dir=str(Path(out_dir) / "checkpoints"), report_to="none", save_strategy="no", stop_token="eos", num_sample_generations=0, **settings)
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=reference, reward_model=reward, value_model=value, train_dataset=dataset)
    trainer.train()
    trainer.save_model(out_dir)  # the policy alone, without the value head
    tokenizer.save_pretrained(out_dir)
    write_llm_settings(out_dir, fmt)
