"""The workflow configuration's rules that span several keys, which its JSON schema cannot say:
checked by the Snakefile right after the schema, before the DAG is built, so that a wrong
combination stops there, naming the key, and not at the last rule that reads it."""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A configuration the schema accepts but the workflow cannot run; the message starts with the key path."""


def check_config(config: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` at the first rule ``config`` breaks (the schema already held)."""
    fractions = {"demo.split_fractions": config.get("demo", {}).get("split_fractions"),
                 "corpus.openi.split_fractions": (config["corpus"].get("openi") or {}).get("split_fractions")}
    for key, value in fractions.items():
        if value is None:
            continue
        parts = value.values() if isinstance(value, dict) else value
        if not math.isclose(sum(parts), 1.0, abs_tol=1e-6):
            raise ConfigError(f"{key}: the train, validate and test fractions sum to {sum(parts):g}, not 1")
    evaluated = config["evaluation"]["labelers"]
    figures = config["figures"]
    if figures["reference"] not in evaluated:
        raise ConfigError(f"figures.reference: {figures['reference']!r} is not evaluated (evaluation.labelers: {', '.join(evaluated)})")
    for baseline in figures["baselines"]:
        if baseline not in evaluated:
            raise ConfigError(f"figures.baselines: {baseline!r} is not evaluated (evaluation.labelers: {', '.join(evaluated)})")
    if figures["reference"] in figures["baselines"]:
        raise ConfigError(f"figures.baselines: {figures['reference']!r} is figures.reference: a labeler is not compared with itself")
    trained = set(evaluated) | set(config["robustness"]["labelers"])
    for algorithm in ("grpo", "rloo"):
        settings = config["rlhf"][algorithm]
        batch = settings.get("per_device_train_batch_size", 8) * settings.get("gradient_accumulation_steps", 1)
        generations = settings.get("num_generations", 8)
        if algorithm in trained and batch % generations:
            raise ConfigError(f"rlhf.{algorithm}.num_generations: {generations} does not divide the batch of {batch} completions "
                              "(per_device_train_batch_size x gradient_accumulation_steps): every prompt's group must fit in it")
