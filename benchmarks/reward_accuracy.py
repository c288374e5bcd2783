"""Held-out pairwise accuracy of a reward model, label pairs and format pairs apart.

The reward_model rule reports one accuracy over its held-out pairs; most simulated pairs reject a
malformed output, which is easy, so this says how well the model ranks the pairs that compare labels.
Each pair is scored as the RewardTrainer reads it: prompt + output + EOS.

usage: ./dev python benchmarks/reward_accuracy.py RESULTS/rlhf/preferences.parquet RESULTS/models/reward [--held-out-fraction 0.2 --seed 0]
"""

from __future__ import annotations

import argparse

import polars as pl
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from cxrlabel.training.rlhf import held_out


def scores(model: AutoModelForSequenceClassification, tokenizer: AutoTokenizer, texts: list[str], batch_size: int = 32) -> list[float]:
    out: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
            out += model(**encoded).logits[:, 0].tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preferences")
    parser.add_argument("reward_model")
    parser.add_argument("--held-out-fraction", type=float, default=0.2, help="rlhf.held_out_fraction")
    parser.add_argument("--seed", type=int, default=0, help="rlhf.reward.seed")
    args = parser.parse_args()
    pairs = pl.read_parquet(args.preferences).filter(pl.col("study_id").map_elements(lambda s: held_out(s, args.held_out_fraction, args.seed), return_dtype=pl.Boolean))
    tokenizer = AutoTokenizer.from_pretrained(args.reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(args.reward_model, num_labels=1).eval()
    chosen, rejected = ([p + o + tokenizer.eos_token for p, o in zip(pairs["prompt"], pairs[side])] for side in ("chosen", "rejected"))
    right = [c > r for c, r in zip(scores(model, tokenizer, chosen), scores(model, tokenizer, rejected))]
    table = pairs.with_columns(pl.Series("right", right)).group_by("rejected_malformed").agg(pl.len().alias("pairs"), pl.col("right").mean().alias("accuracy"))
    print(table.sort("rejected_malformed").with_columns(pl.col("rejected_malformed").replace_strict({False: "label pairs", True: "format pairs"}).alias("kind")).select("kind", "pairs", "accuracy"))


if __name__ == "__main__":
    main()
