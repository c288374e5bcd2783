"""Evaluation outputs on small hand-made frames: the reward-hacking guard table and the RL curves figure."""

from __future__ import annotations

import polars as pl
import pytest

from cxrlabel.evaluation.figures import FigureStyle, rl_curves
from cxrlabel.evaluation.tables import rl_guard_table, score
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.training.curves import CURVE_COLUMNS


def labels(rows: list[dict[str, int]], format_errors: list[bool] | None = None) -> pl.DataFrame:
    """A labels table of ``len(rows)`` studies: the given observations, every other one blank."""
    table = pl.DataFrame({"study_id": [f"s{i}" for i in range(len(rows))]} | {name: pl.Series([row.get(name) for row in rows], dtype=pl.Int8) for name in OBSERVATIONS})
    errors = format_errors or [False] * len(rows)
    return table.with_columns(pl.Series("format_error", errors), pl.Series("fallback_used", errors))


def test_rl_guard_table_counts_labels_per_report_against_sft_and_gold():
    gold = labels([{"Edema": 1, "Pneumothorax": 0}, {"No Finding": 1}])
    predictions = {
        "rule": labels([{"Edema": 1}, {"Edema": 1}]),  # not an LLM: no row
        "sft": labels([{"Edema": 1, "Pneumothorax": 0}, {"No Finding": 1}]),
        "ppo": labels([{"Edema": 1, "Cardiomegaly": 1, "Pneumothorax": -1}, {"Edema": 1, "Fracture": 1}], format_errors=[False, True]),
    }
    table = rl_guard_table({name: score(gold, "full", p) for name, p in predictions.items()})
    assert table["labeler"].to_list() == ["sft", "ppo", "gold"] and (table["n_reports"] == 2).all()
    rows = {row["labeler"]: row for row in table.iter_rows(named=True)}
    assert rows["sft"] | {"labeler": "gold", "format_error_pct": None, "format_error_pct_vs_sft": None} == rows["gold"]
    assert rows["sft"]["positives_per_report"] == 1.0 and rows["sft"]["labeled_per_report"] == 1.5
    assert rows["ppo"]["positives_per_report"] == 2.0 and rows["ppo"]["labeled_per_report"] == 2.5 and rows["ppo"]["format_error_pct"] == 50.0
    assert (rows["ppo"]["format_error_pct_vs_sft"], rows["ppo"]["positives_per_report_vs_sft"], rows["ppo"]["labeled_per_report_vs_sft"]) == (50.0, 1.0, 1.0)
    assert rows["sft"]["positives_per_report_vs_sft"] == 0.0


def test_rl_guard_table_without_sft_leaves_the_comparison_blank():
    gold = labels([{"Edema": 1}])
    table = rl_guard_table({"grpo": score(gold, "full", labels([{"Edema": 1}]))})
    assert table["labeler"].to_list() == ["grpo", "gold"] and table["positives_per_report_vs_sft"].is_null().all()


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
