"""Supervised fine-tuning of the base causal LM on the instruction set, with TRL's SFTTrainer.

Prompt/completion records give completion-only loss (TRL's default for that format). Settings
come from config: paper 1 used batch 2, gradient accumulation 2, 5 epochs, Adam, lr 1e-4, bf16
on GPUs (here bf16 mixed precision over float32 weights, ``dtype``). On a CPU keep bf16 and
gradient checkpointing off (20x slower otherwise).
Checkpoints are kept in ``<out>/checkpoints``; a rerun resumes from the last one.

With an :class:`EpochSelection`, the model is scored after every epoch by labeling the validate
reports (the BERT classifier's selection score: mean weighted F1 over observations against their
silver labels), the best epoch is kept, and training stops after ``patience`` epochs without a
better one (transformers' ``load_best_model_at_end`` and ``EarlyStoppingCallback``, so a resumed
run remembers its best epoch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.trainer_utils import EvalLoopOutput, get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from cxrlabel.instruct import PromptSettings
from cxrlabel.labelers.llm import LLMLabeler
from cxrlabel.predict import predict
from cxrlabel.training.base_model import trainer_dtype
from cxrlabel.training.selection import SelectionReference, selection_reference

log = logging.getLogger(__name__)


def instruction_dataset(path: str) -> Dataset:
    """A prompt/completion dataset from an instruction parquet."""
    return Dataset.from_polars(pl.read_parquet(path, columns=["prompt", "completion"]))


SELECTION_METRIC = "validate_f1"


@dataclass(frozen=True)
class EpochSelection:
    """The validate reports (``study_id``, ``text``) and the labels an SFT epoch is scored on
    (:mod:`cxrlabel.training.selection`: the experts' where they cover validate), how the model is
    prompted, and the epochs without a better score before stopping."""

    reports: pl.DataFrame
    reference: SelectionReference
    prompt: PromptSettings
    patience: int
    batch_size: int = 256
    max_new_tokens: int = 128

    @classmethod
    def on_validate_split(cls, reports_path: str, labels_path: str, prompt: PromptSettings, patience: int, gold_path: str | None = None, **inference: int) -> EpochSelection:
        reference = selection_reference(reports_path, labels_path, gold_path)
        log.info("epochs are scored by the %s", reference.metric)
        reports = pl.read_parquet(reports_path).join(reference.labels.select("study_id"), on="study_id", how="semi", maintain_order="left")
        return cls(reports.select("study_id", "text"), reference, prompt, patience, **inference)

    def score(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> float:
        """The selection metric of ``model``'s labels of the reports (:meth:`SelectionReference.score`)."""
        training = model.training
        model.eval()
        try:
            labeler = LLMLabeler.of(model, tokenizer, self.prompt, "sft", self.batch_size, self.max_new_tokens)
            predicted = predict(labeler, self.reports, chunk_size=len(self.reports))
        finally:
            model.train(training)
        return self.reference.score(predicted)


class SelectingSFTTrainer(SFTTrainer):
    """SFTTrainer whose evaluation also scores the model on :class:`EpochSelection` (``eval_validate_f1``)."""

    def __init__(self, *args: Any, selection: EpochSelection, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.selection = selection

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> EvalLoopOutput:
        output = super().evaluation_loop(*args, **kwargs)
        output.metrics[f"{kwargs.get('metric_key_prefix', 'eval')}_{SELECTION_METRIC}"] = self.selection.score(self.model, self.processing_class)
        return output


def run_sft(base_dir: str, train_path: str, validate_path: str, out_dir: str, settings: dict[str, Any], threads: int, selection: EpochSelection | None = None) -> dict[str, float]:
    """Fine-tune ``base_dir`` on the training instructions; save the final model (or, with a
    ``selection``, the best epoch's) to ``out_dir``.

    ``settings`` holds SFTConfig fields (epochs, batch size, learning rate, bf16...) and the
    weights' ``dtype`` (:func:`~cxrlabel.training.base_model.trainer_dtype`).
    Returns the final training metrics and the validation loss (and score).
    """
    torch.set_num_threads(threads)
    checkpoints = Path(out_dir) / "checkpoints"
    tokenizer = AutoTokenizer.from_pretrained(base_dir, padding_side="left")
    dtype, settings = trainer_dtype(settings)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
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
    trainer_options: dict[str, Any] = {}
    if selection:
        settings = settings | {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True, "metric_for_best_model": SELECTION_METRIC, "greater_is_better": True}
        trainer_options = {"selection": selection, "callbacks": [EarlyStoppingCallback(early_stopping_patience=selection.patience)]}
    config = SFTConfig(output_dir=str(checkpoints), report_to="none", **(defaults | settings))
    trainer = (SelectingSFTTrainer if selection else SFTTrainer)(
        model=model,
        args=config,
        train_dataset=instruction_dataset(train_path),
        eval_dataset=instruction_dataset(validate_path),
        processing_class=tokenizer,
        **trainer_options,
    )
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last:
        log.info("resuming from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    metrics = dict(result.metrics)
    metrics.update(trainer.evaluate())
    if selection:
        log.info("kept %s (validate F1 %.4f) after %.0f epochs", trainer.state.best_model_checkpoint, trainer.state.best_metric, trainer.state.epoch)
    log.info("sft metrics: %s", metrics)
    trainer.save_model(out_dir)  # the main process only
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out_dir)
    return metrics


def sft_job(base: str, train: str, validate: str, out: str, settings: dict[str, Any], threads: int, prompt: dict[str, Any],
            epoch_selection: dict[str, int] | None = None, reports: str | None = None, labels: str | None = None,
            inference: dict[str, int] | None = None, silver: str | None = None, gold: str | None = None) -> None:
    """The sft rule's work, from its inputs and params (paths and plain values, so that it can run
    in each process of a data-parallel job: :func:`cxrlabel.distributed.launch`): fine-tune with
    the configured global batch, and write the LLM labeler's settings beside the model."""
    from cxrlabel.distributed import per_process_batch, world_size
    from cxrlabel.labelers.llm import write_llm_settings

    settings_of_prompt = PromptSettings(**prompt)
    selection = None
    if epoch_selection:
        selection = EpochSelection.on_validate_split(reports, silver or labels, settings_of_prompt, epoch_selection["patience"], gold, **(inference or {}))
    run_sft(base, train, validate, out, per_process_batch(settings, world_size()), max(1, threads // world_size()), selection)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        write_llm_settings(out, settings_of_prompt)
