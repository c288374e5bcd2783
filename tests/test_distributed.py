"""A job of N processes (a rule with gpu: N): torchrun data-parallel training with the configured
global batch, and sharded inference identical to one process; on CPU with gloo, on the micro model."""

from __future__ import annotations

import json
import logging

import polars as pl
import pytest
import torch
from micro_models import REPORTS, sft_settings
from transformers import AutoModelForCausalLM

from cxrlabel.distributed import launch, per_process_batch
from cxrlabel.training.rlhf import rl_processes


@pytest.mark.parametrize(
    ("batch", "accumulation", "processes", "expected"),
    [(16, 1, 2, (8, 1)), (2, 2, 4, (1, 1)), (4, 4, 2, (4, 2)), (6, 1, 3, (2, 1)), (8, 3, 4, (2, 3))],
)
def test_each_process_gets_its_share_of_the_configured_global_batch(batch, accumulation, processes, expected):
    settings = per_process_batch({"per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation, "seed": 0}, processes)
    assert (settings["per_device_train_batch_size"], settings["gradient_accumulation_steps"]) == expected
    assert settings["per_device_train_batch_size"] * settings["gradient_accumulation_steps"] * processes == batch * accumulation and settings["seed"] == 0


def test_a_global_batch_that_does_not_split_is_refused_with_the_settings_to_change():
    with pytest.raises(ValueError, match=r"global batch of 6 \(per_device_train_batch_size 3 x gradient_accumulation_steps 2\) cannot be split over 4"):
        per_process_batch({"per_device_train_batch_size": 3, "gradient_accumulation_steps": 2}, 4)


def test_ppo_stays_in_one_process_and_says_why(caplog):
    with caplog.at_level(logging.WARNING):
        assert rl_processes("ppo", 4) == 1 and rl_processes("grpo", 4) == 4 and rl_processes("ppo", 1) == 1
    assert "hung in a data-parallel run" in caplog.text


def test_sft_in_two_processes_follows_one_process_with_the_same_global_batch(base, tmp_path):
    """2 processes x batch 8 against 1 x 16, same data order: the same losses step by step (to a
    relative 1e-4: each process averages its own tokens' loss) and nearly the same weights."""
    settings = sft_settings(12) | {"per_device_train_batch_size": 16, "learning_rate": 3e-3, "save_steps": 12, "train_sampling_strategy": "random"}
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"sft{processes}"
        job = {"base": str(base), "train": str(base / "train.parquet"), "validate": str(base / "train.parquet"), "out": str(out), "settings": settings, "threads": 2, "prompt": {"format": "mentioned"}}
        launch("cxrlabel.training.sft:sft_job", job, processes, tmp_path / f"sft{processes}.log")
        state = json.loads((out / "checkpoints/checkpoint-12/trainer_state.json").read_text())
        assert state["train_batch_size"] == 16 // processes  # per device: the global batch is kept
        runs[processes] = ([entry["loss"] for entry in state["log_history"] if "loss" in entry], AutoModelForCausalLM.from_pretrained(out).state_dict())
    log = (tmp_path / "sft2.log").read_text()
    assert "process 0 of 2" in log and "process 1 of 2" in log
    (losses1, weights1), (losses2, weights2) = runs[1], runs[2]
    assert len(losses1) == len(losses2) == 12 and losses1[-1] < losses1[0] - 0.5  # it learned
    assert losses2 == pytest.approx(losses1, rel=1e-4)
    assert all(torch.allclose(weights1[name], weights2[name], atol=1e-4) for name in weights1)
    assert json.loads((tmp_path / "sft2/cxrlabel_llm.json").read_text())["format"] == "mentioned"


def test_sharded_predictions_equal_one_process_predictions_in_input_order(tuned, tmp_path):
    from cxrlabel.predict import join_parts, scores_path

    reports = tmp_path / "reports.parquet"
    pl.DataFrame({"study_id": [f"s{i:02d}" for i in range(len(REPORTS) + 3)], "split": "test", "text": [*REPORTS, "No effusion.", "Edema.", "Clear lungs."]}).write_parquet(reports)
    predictions, scores = {}, {}
    for processes in (1, 2):
        out = str(tmp_path / f"predictions{processes}.parquet")
        job = {"kind": "llm", "model": str(tuned), "reports": str(reports), "out": out, "options": {"batch_size": 4, "max_new_tokens": 48}, "threads": 2, "chunk_size": 8}
        launch("cxrlabel.predict:predict_split_job", job, processes, tmp_path / f"predict{processes}.log")
        join_parts(out, processes)
        predictions[processes] = pl.read_parquet(out)
        scores[processes] = pl.read_parquet(scores_path(out))
    assert "process 1 of 2" in (tmp_path / "predict2.log").read_text() and not list(tmp_path.glob("*.part*"))
    assert predictions[2]["study_id"].to_list() == [f"s{i:02d}" for i in range(len(REPORTS) + 3)]
    # the scores too: one row per (study, non-blank label, class), the label one of its classes
    assert scores[2].height > 0 and scores[2]["study_id"].unique(maintain_order=True).to_list() == sorted(scores[2]["study_id"].unique().to_list())
    assert scores[2].drop("logit").equals(scores[1].drop("logit")) and scores[2]["logit"].to_numpy() == pytest.approx(scores[1]["logit"].to_numpy(), abs=1e-4)
    assert predictions[2].equals(predictions[1]) and predictions[1].drop("study_id", "format_error", "fallback_used", "truncated").null_count().sum_horizontal().item() < 14 * predictions[1].height


def test_sharded_sampling_draws_the_candidates_of_one_process_in_input_order(tuned, tmp_path):
    """The preferences and review_set rules' sampling: each candidate's draw depends on its prompt
    and number only, so 2 processes sample what 1 does, whatever their batches."""
    from cxrlabel.sampling import CandidateSampler

    units = [*REPORTS, "No effusion.", "Edema.", "Clear lungs."]
    drawn = {}
    for processes, batch_size in ((1, 16), (2, 3)):
        sampler = CandidateSampler(str(tuned), batch_size=batch_size, max_new_tokens=24, threads=2, processes=processes, log_path=str(tmp_path / f"sample{processes}.log"))
        drawn[processes] = sampler.sample(units, n=3, temperature=1.5, seed=7, greedy=True)
    assert "process 1 of 2" in (tmp_path / "sample2.log").read_text()
    assert drawn[2] == drawn[1]
    candidates, greedy = drawn[1]
    assert len(candidates) == len(greedy) == len(units) and all(len(c) == 3 for c in candidates)
    assert any(len(set(unit)) > 1 for unit in candidates)  # the draws differ
