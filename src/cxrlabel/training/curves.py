"""The training curves of an RL run: one row per logged step, from the trainer's log history.

Polars only (no torch), so that the figures read them in the evaluation environment.
"""

from __future__ import annotations

from typing import Any

import polars as pl

#: The training curves of an RL run, in its model folder (``models/<algorithm>/``).
CURVES_FILE = "rl_curves.csv"

#: The columns of ``rl_curves.csv``, one row per logged step of an RL run (values are means over
#: the completions sampled, or the updates made, since the previous row):
#:
#: - ``algorithm``: ppo, grpo or rloo.
#: - ``step``: optimizer steps so far (PPO: updates, one per rollout batch).
#: - ``samples``: completions sampled so far (PPO: its ``episode``; GRPO/RLOO: steps x
#:   completions per step, ``per_device_train_batch_size`` x gradient accumulation x processes
#:   / ``num_iterations``).
#: - ``reward``: mean reward of the sampled completions, without the KL term (PPO:
#:   ``objective/scores``, the reward model's score less ``missing_eos_penalty`` where a completion
#:   has no EOS; GRPO/RLOO: ``reward``, the weighted sum of the reward functions).
#: - ``kl``: KL divergence of the policy from the SFT reference, per completion token (GRPO/RLOO:
#:   ``kl``, logged only when ``beta`` > 0, else null; PPO: ``objective/kl``, summed over a
#:   completion's tokens, divided by ``completion_length``, which is the same token-weighted mean).
#:   GRPO estimates it with k3 (never negative), RLOO and PPO (``kl_estimator`` k1) with the log
#:   ratio, unbiased but negative in some batches.
#: - ``format_error_rate``: share of the sampled completions that
#:   :func:`~cxrlabel.instruct.parse_completion` finds malformed (GRPO/RLOO:
#:   ``rewards/format_error/mean`` of the zero-weight :func:`~cxrlabel.training.rlhf.format_error_reward`; PPO:
#:   :class:`~cxrlabel.training.rlhf.SampledCompletions`).
#: - ``completion_length``: mean tokens of a sampled completion (GRPO/RLOO: ``completions/mean_length``;
#:   PPO: :class:`~cxrlabel.training.rlhf.SampledCompletions`).
#: - ``entropy``: mean per-token entropy of the policy (PPO: ``policy/entropy_avg``; GRPO/RLOO: ``entropy``).
#: - ``loss``: the policy loss (PPO: ``loss/policy_avg``; GRPO/RLOO: ``loss``).
#: - ``learning_rate``: (PPO: ``lr``; GRPO/RLOO: ``learning_rate``).
CURVE_COLUMNS = ("algorithm", "step", "samples", "reward", "kl", "format_error_rate", "completion_length", "entropy", "loss", "learning_rate")

#: The key TRL 1.12 logs each column under (``samples`` and PPO's ``kl`` are derived, see above).
LOG_KEYS = {
    "ppo": {"reward": "objective/scores", "kl": "objective/kl", "format_error_rate": "format_error_rate", "completion_length": "completion_length",
            "entropy": "policy/entropy_avg", "loss": "loss/policy_avg", "learning_rate": "lr"},
    "group": {"reward": "reward", "kl": "kl", "format_error_rate": "rewards/format_error/mean", "completion_length": "completions/mean_length",
              "entropy": "entropy", "loss": "loss", "learning_rate": "learning_rate"},
}


def curves_table(algorithm: str, log_history: list[dict[str, Any]], samples_per_step: int | None = None) -> pl.DataFrame:
    """The training curves of an RL run (:data:`CURVE_COLUMNS`) from its trainer's log history:
    the entries that carry a reward (not the run's closing summary). ``samples_per_step``:
    completions per optimizer step, for GRPO/RLOO (PPO logs its own count)."""
    keys = LOG_KEYS["ppo" if algorithm == "ppo" else "group"]
    rows = []
    for entry in (e for e in log_history if keys["reward"] in e):
        row = {column: entry.get(key) for column, key in keys.items()}
        if algorithm == "ppo":
            row["samples"] = entry.get("episode")
            row["kl"] = row["kl"] / row["completion_length"] if row["kl"] is not None and row["completion_length"] else None
        else:
            row["samples"] = entry["step"] * samples_per_step if samples_per_step else None
        rows.append({"algorithm": algorithm, "step": entry["step"]} | row)
    schema = {"algorithm": pl.String, "step": pl.Int64, "samples": pl.Int64} | {column: pl.Float64 for column in CURVE_COLUMNS[3:]}
    return pl.DataFrame(rows, schema=schema).select(CURVE_COLUMNS)
