"""Evaluation outputs on small hand-made frames: the RL curves figure."""

from __future__ import annotations

import polars as pl
import pytest

from cxrlabel.evaluation.figures import FigureStyle, rl_curves
from cxrlabel.training.curves import CURVE_COLUMNS


def curve(algorithm: str, steps: int, kl: float | None) -> pl.DataFrame:
    return pl.DataFrame(
        [{"algorithm": algorithm, "step": s, "samples": 8 * s, "reward": 0.1 * s, "kl": None if kl is None else kl * s, "format_error_rate": 0.5 / s,
          "completion_length": 30.0, "entropy": 1.0, "loss": 0.0, "learning_rate": 1e-5} for s in range(1, steps + 1)],
        schema={"algorithm": pl.String, "step": pl.Int64, "samples": pl.Int64} | {c: pl.Float64 for c in CURVE_COLUMNS[3:]},
    )


@pytest.mark.parametrize("grpo_kl", [0.02, None], ids=["kl", "beta-0-no-kl"])
def test_rl_curves_figure_draws_every_algorithm(tmp_path, grpo_kl):
    path = tmp_path / "rl_curves.png"
    rl_curves(pl.concat([curve("ppo", 8, 0.01), curve("grpo", 16, grpo_kl)]), {"ppo": "LLM (SFT+PPO)"}, FigureStyle(dpi=60), str(path))
    assert path.stat().st_size > 5_000
