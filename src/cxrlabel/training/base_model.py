"""The base causal LM: a local or hub model, or one built from scratch for the embedded default.

From scratch: a byte-level BPE tokenizer trained on the training reports and instruction
texts, a small Qwen2-architecture causal LM built from config, and a brief causal-LM
pretraining pass over the report text so that supervised fine-tuning starts from a model
that has seen the language.
"""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

log = logging.getLogger(__name__)

EOS, PAD = "<|endoftext|>", "<|pad|>"


#: A trainer's ``dtype`` setting: what its weights are loaded and trained in.
WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def trainer_dtype(settings: dict[str, Any]) -> tuple[torch.dtype, dict[str, Any]]:
    """The dtype a trainer's model loads in (``dtype``, float32 unless set, as TRL loads one) and
    the settings without it (TRL config fields). ``bf16: true`` is mixed precision over those
    weights: float32 weights keep the master copy that the optimizer updates, where bf16 ones lose
    a small step (AdamW at lr 1e-6 moves a weight near 1 by less than bf16's spacing there)."""
    settings = dict(settings)
    return WEIGHT_DTYPES[settings.pop("dtype", "float32")], settings


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape and pretraining of a from-scratch model (the embedded default)."""

    vocab_size: int = 4096
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 768
    max_position_embeddings: int = 2048
    attention_dropout: float = 0.0
    pretrain_epochs: float = 1.0
    pretrain_block: int = 256
    pretrain_batch_size: int = 8
    pretrain_learning_rate: float = 1e-3
    seed: int = 0
    threads: int = 2


class OfflineModelError(RuntimeError):
    """A hub id was asked for while the hub may not be used."""


def resolve_model_path(
    name_or_path: str, allow_download: bool, setting: str = "llm.base", download_setting: str | None = "llm.allow_download"
) -> str:
    """A local folder as is; a hub id only where downloads are allowed, else a clear error (never a
    hang) naming ``setting``, the config key that gave it, and ``download_setting``, the key that
    allows its download (None: nothing does)."""
    if Path(name_or_path).is_dir():
        return name_or_path
    if not allow_download:
        allow = f", or set {download_setting}: true where the hub is reachable" if download_setting else ""
        raise OfflineModelError(
            f"{setting}: {name_or_path!r} is not a local folder and downloads are off: point {setting} at a local copy{allow}"
        )
    return name_or_path


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2/Qwen style) trained on ``texts``; left padding for generation."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=PAD, padding_side="left", model_max_length=None)


def build_tiny_model(tokenizer: PreTrainedTokenizerFast, spec: TinyModelSpec) -> Qwen2ForCausalLM:
    """A small Qwen2 causal LM with tied embeddings, sized by ``spec``."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        attention_dropout=spec.attention_dropout,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    return Qwen2ForCausalLM(config)


def pretrain(model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, texts: list[str], spec: TinyModelSpec) -> float:
    """A brief causal-LM pass over ``texts`` packed into fixed blocks; returns the last smoothed loss."""
    stream: list[int] = []
    for ids in tokenizer(texts)["input_ids"]:
        stream += ids + [tokenizer.eos_token_id]
    blocks = [stream[i : i + spec.pretrain_block] for i in range(0, len(stream) - spec.pretrain_block + 1, spec.pretrain_block)]
    steps = max(1, int(spec.pretrain_epochs * len(blocks) / spec.pretrain_batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.pretrain_learning_rate, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.pretrain_learning_rate, total_steps=steps, pct_start=0.1)
    rng = random.Random(spec.seed)
    model.train()
    running = math.nan
    with tqdm(total=steps, desc="pretraining", unit="step", mininterval=10) as progress:
        for _ in range(steps):
            batch = torch.tensor(rng.sample(blocks, min(spec.pretrain_batch_size, len(blocks))))
            loss = model(input_ids=batch, labels=batch).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            running = loss.item() if math.isnan(running) else 0.95 * running + 0.05 * loss.item()
            progress.update(1)
            progress.set_postfix(loss=f"{running:.3f}")
    log.info("pretrained %d steps on %d blocks of %d tokens; loss %.3f", steps, len(blocks), spec.pretrain_block, running)
    return running


def build_base_model(out_dir: str, base: str | None, allow_download: bool, reports: list[str], instruction_texts: list[str], spec: TinyModelSpec, lowercase: bool = False) -> None:
    """Write the base model folder: a copy of ``base`` (local or hub), or a tiny model built from
    scratch, its tokenizer trained on and its pretraining done on ``reports`` (lower-cased where
    the prompts are) and the instruction texts."""
    torch.manual_seed(spec.seed)
    torch.set_num_threads(spec.threads)
    if base:
        path = resolve_model_path(base, allow_download)
        if not allow_download:
            os.environ["HF_HUB_OFFLINE"] = "1"
        tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    else:
        reports = [text.lower() for text in reports] if lowercase else reports
        tokenizer = train_tokenizer(reports + instruction_texts, spec.vocab_size)
        model = build_tiny_model(tokenizer, spec)
        log.info("built a Qwen2 model with %d parameters, vocabulary %d", model.num_parameters(), len(tokenizer))
        pretrain(model, tokenizer, reports, spec)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
