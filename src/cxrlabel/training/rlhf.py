"""RLHF after SFT: a reward model on the preference set, then PPO against it (paper 2), or GRPO/RLOO.

- Reward model: TRL's RewardTrainer (pairwise loss -log sigmoid(r(chosen) - r(rejected))),
  initialised from the SFT model with a one-output sequence-classification head. Pairs are
  split by report into train and held-out; the held-out pairwise accuracy is reported.
- PPO: trl.experimental.ppo (trl 1.12, the last release with PPO): the SFT model as policy and
  as frozen reference (KL penalty), the reward model as reward, a value model initialised from
  the reward model.
- GRPO / RLOO (TRL's maintained trainers): the same SFT start and KL to it, rewarded by the
  reward model, by agreement with the expert labels (a verifiable reward), or by both.
- Prompts are cut to the context exactly as the LLM labeler cuts them at inference.
- Every RL run writes its training curves, one row per logged step, to ``<model>/rl_curves.csv``
  (:mod:`cxrlabel.training.curves`), format errors of the sampled completions included.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    TrainerCallback,
    set_seed,
)

from cxrlabel.instruct import CompletionFormat, PromptSettings, parse_completion, unit_table
from cxrlabel.io.labels import LabelKind, read_labels
from cxrlabel.labelers.llm import fit_prompt, read_llm_settings, write_llm_settings
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.training.base_model import trainer_dtype
from cxrlabel.training.curves import CURVES_FILE, curves_table
from cxrlabel.training.preferences import Labels, label_reward

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

    from cxrlabel.distributed import per_process_batch, world_size

    torch.set_num_threads(max(1, threads // world_size()))
    dtype, settings = trainer_dtype(per_process_batch(settings, world_size()))
    pairs = pl.read_parquet(preferences_path).with_columns(
        pl.col("study_id").map_elements(lambda s: held_out(s, held_out_fraction, settings.get("seed", 0)), return_dtype=pl.Boolean).alias("held_out")
    )
    train, test = pairs.filter(~pl.col("held_out")), pairs.filter(pl.col("held_out"))
    if train.height == 0 or test.height == 0:
        raise ValueError(f"{preferences_path}: {pairs.height} pairs leave no training or no held-out pairs")
    columns = ["prompt", "chosen", "rejected"]
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    set_seed(settings.get("seed", 0))  # the new score head is drawn now, before the trainer seeds anything
    model = sequence_classifier(sft_dir, dtype)
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
    trainer.save_model(out_dir)  # the main process only
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out_dir)
        (Path(out_dir) / "reward_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def fitted_prompts(tokenizer: PreTrainedTokenizerBase, texts: list[str], prompt: PromptSettings, context: int, answer_room: int) -> list[list[int]]:
    """Prompt token ids of the texts, cut to the context exactly as the LLM labeler cuts them at inference."""
    fitted = [fit_prompt(tokenizer, text, prompt, context - answer_room) for text in texts]
    cut = sum(truncated for _, truncated in fitted)
    log.info("%d prompts; %d (%.1f%%) lost their beginning to fit the context of %d tokens", len(fitted), cut, 100 * cut / max(len(fitted), 1), context)
    return [ids for ids, _ in fitted]


def load_policy(
    sft_dir: str, dtype: torch.dtype, threads: int
) -> tuple[AutoModelForCausalLM, PreTrainedTokenizerBase, PromptSettings]:
    """The SFT model to tune, in ``dtype`` (:func:`trainer_dtype`), its tokenizer and how it is prompted."""
    torch.set_num_threads(threads)
    policy = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=dtype)
    return policy, AutoTokenizer.from_pretrained(sft_dir, padding_side="left"), read_llm_settings(sft_dir)


def run_ppo(sft_dir: str, reward_dir: str, reports: pl.DataFrame, out_dir: str, settings: dict[str, Any], threads: int) -> None:
    """PPO of the SFT policy against the reward model, on the prompts of ``reports``; saves the policy."""
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    dtype, settings = trainer_dtype(settings)
    policy, tokenizer, prompt = load_policy(sft_dir, dtype, threads)
    reference = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=dtype)
    reward = AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1, dtype=dtype)
    value = AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1, dtype=dtype)
    units = unit_table(reports, prompt.unit)["text"].to_list()
    prompts = fitted_prompts(tokenizer, units, prompt, policy.config.max_position_embeddings, settings["response_length"])
    config = PPOConfig(output_dir=str(Path(out_dir) / "checkpoints"), report_to="none", save_strategy="no", stop_token="eos", num_sample_generations=0, **settings)
    samples = SampledCompletions(policy, tokenizer, prompt.format)
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=reference, reward_model=reward, value_model=value,
                         train_dataset=Dataset.from_dict({"input_ids": prompts}), callbacks=[samples])
    with samples.recording():
        trainer.train()
    save_policy(trainer, tokenizer, out_dir, prompt)  # the policy alone, without the value head
    write_curves(trainer, "ppo", out_dir)


def gold_agreement_reward(expert: dict[str, Labels], kind: LabelKind, fmt: CompletionFormat, contexts: dict[tuple[str, int], list[Labels]] | None = None,
                          counted: Sequence[str] = OBSERVATIONS) -> Callable[..., list[float]]:
    """The verifiable reward: a completion's reward against the expert labels of its report
    (:func:`~cxrlabel.training.preferences.label_reward`, the preference builder's) per
    observation, so -1 to 1 (about -1.07 for a malformed output).

    ``contexts`` (sentence units): per (study_id, position) the labels of the report's other
    sentences, with which a sentence's completion is aggregated before it is judged. ``counted``:
    the observations the policy decides (see ``label_reward``).
    """

    def gold_agreement(prompts: list[str], completions: list[str], study_id: list[str], position: list[int], **_: Any) -> list[float]:
        return [
            label_reward(completion, expert[study], kind, fmt, contexts[(study, at)] if contexts is not None else None, counted) / len(counted)
            for completion, study, at in zip(completions, study_id, position)
        ]

    return gold_agreement


def format_error_reward(fmt: CompletionFormat) -> Callable[..., list[float]]:
    """1.0 for a completion :func:`~cxrlabel.instruct.parse_completion` finds malformed, else 0.0.

    GRPO and RLOO get it as an extra reward function of weight 0 (``reward_weights``): it changes
    no reward and no advantage, and TRL logs its mean over the sampled completions, the
    format-error rate, as ``rewards/format_error/mean``.
    """

    def format_error(completions: list[str], **_: Any) -> list[float]:
        return [float(parse_completion(completion, fmt).error is not None) for completion in completions]

    return format_error


class SampledCompletions(TrainerCallback):
    """What TRL's PPOTrainer does not log about the completions it samples: the share that
    :func:`~cxrlabel.instruct.parse_completion` finds malformed (``format_error_rate``) and their
    mean length in tokens, the EOS included (``completion_length``), added to each log entry.

    While :meth:`recording`, the policy's ``generate`` (which PPO calls for every rollout chunk)
    passes its completions here; a completion ends at its first EOS, as PPO truncates it before
    the reward model scores it. PPO logs once per update, so each entry covers that update's samples.
    """

    def __init__(self, policy: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, fmt: CompletionFormat) -> None:
        self.policy, self.tokenizer, self.fmt = policy, tokenizer, fmt
        self.errors = self.tokens = self.completions = 0

    @contextmanager
    def recording(self) -> Iterator[None]:
        generate = self.policy.generate

        def recorded(*args: Any, **kwargs: Any) -> Any:
            output = generate(*args, **kwargs)
            self.record(output.sequences[:, kwargs["input_ids"].shape[1] :])
            return output

        self.policy.generate = recorded
        try:
            yield
        finally:
            del self.policy.generate  # the class's method again

    def record(self, completions: torch.Tensor) -> None:
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        for ids in completions.tolist():
            ids = ids[: ids.index(eos) + 1] if eos in ids else [t for t in ids if t != pad]
            self.errors += parse_completion(self.tokenizer.decode(ids, skip_special_tokens=True), self.fmt).error is not None
            self.tokens += len(ids)
            self.completions += 1

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if self.completions:  # the trainer appended this entry to its log history just before
            state.log_history[-1] |= {"format_error_rate": self.errors / self.completions, "completion_length": self.tokens / self.completions}
        self.errors = self.tokens = self.completions = 0


def write_curves(trainer: Any, algorithm: str, out_dir: str) -> None:
    """``<out_dir>/rl_curves.csv`` from the trainer's log history (the main process only)."""
    if not trainer.is_world_process_zero():
        return
    args = trainer.args
    # GRPO/RLOO: each step takes gradient accumulation x processes batches of completions, each batch used num_iterations times
    per_step = None if algorithm == "ppo" else args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size // args.num_iterations
    curves = curves_table(algorithm, trainer.state.log_history, per_step)
    curves.write_csv(Path(out_dir) / CURVES_FILE, float_precision=6)
    log.info("%s: %d rows of training curves in %s", algorithm, curves.height, Path(out_dir) / CURVES_FILE)


def sentence_contexts(policy_dir: str, reports: pl.DataFrame) -> dict[tuple[str, int], list[Labels]]:
    """Per (study_id, position) of every sentence of ``reports``, the labels the policy gives the
    report's other sentences (greedy), for judging one sentence's sampled completion."""
    from cxrlabel.labelers.llm import LLMLabeler

    policy = LLMLabeler(policy_dir)
    units = [policy.units(text) for text in reports["text"]]
    distinct = list(dict.fromkeys(unit for report in units for unit in report))
    labels = dict(zip(distinct, (policy.parse(output).labels for output in policy.generate([policy.prompt_ids(u)[0] for u in distinct]))))
    return {
        (study_id, i): [labels[other] for j, other in enumerate(report) if j != i]
        for study_id, report in zip(reports["study_id"], units)
        for i in range(len(report))
    }


def run_group_rl(algorithm: str, sft_dir: str, reports: pl.DataFrame, out_dir: str, settings: dict[str, Any], threads: int,
                 reward_dir: str | None = None, expert: pl.DataFrame | None = None, kind: LabelKind = "full", counted: Sequence[str] = OBSERVATIONS) -> None:
    """GRPO or RLOO (TRL's maintained online methods: a group of sampled completions per prompt,
    advantages relative to the group, no value model) of the SFT policy, rewarded by the learned
    reward model (``reward_dir``), the verifiable gold-agreement reward (``expert``), or the sum of both."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_class, trainer_class = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}[algorithm]
    if reward_dir is None and expert is None:
        raise ValueError(f"{algorithm}: no reward: give the learned reward model, the expert labels, or both")
    dtype, settings = trainer_dtype(settings)
    policy, tokenizer, prompt = load_policy(sft_dir, dtype, threads)
    reward_funcs: list[Any] = []
    if reward_dir is not None:
        reward_funcs.append(AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1, dtype=dtype))
    if expert is not None:
        reports = reports.join(expert.select("study_id"), on="study_id", how="semi", maintain_order="left")
        if reports.height == 0:
            raise ValueError(f"{algorithm}: the verifiable reward needs expert labels, and no report of the prompt split has them")
        labels = {row["study_id"]: {name: row[name] for name in OBSERVATIONS} for row in expert.iter_rows(named=True)}
        contexts = sentence_contexts(sft_dir, reports) if prompt.unit == "sentence" else None
        reward_funcs.append(gold_agreement_reward(labels, kind, prompt.format, contexts, counted))
    settings = dict(settings)  # the format-error rate rides along as a reward of weight 0: logged, never optimised
    weights = [*(settings.pop("reward_weights", None) or [1.0] * len(reward_funcs)), 0.0]
    reward_funcs.append(format_error_reward(prompt.format))
    units = unit_table(reports, prompt.unit)
    prompts = fitted_prompts(tokenizer, units["text"].to_list(), prompt, policy.config.max_position_embeddings, settings["max_completion_length"])
    dataset = Dataset.from_dict({"prompt": tokenizer.batch_decode(prompts), "study_id": units["study_id"].to_list(), "position": units["position"].to_list()})
    config = config_class(output_dir=str(Path(out_dir) / "checkpoints"), report_to="none", save_strategy="no", reward_weights=weights, **settings)
    trainer = trainer_class(model=policy, reward_funcs=reward_funcs, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    save_policy(trainer, tokenizer, out_dir, prompt)
    write_curves(trainer, algorithm, out_dir)


def save_policy(trainer: Any, tokenizer: PreTrainedTokenizerBase, out_dir: str, prompt: PromptSettings) -> None:
    """The tuned policy as a standard HF folder that the LLM labeler loads (written by the main process)."""
    trainer.save_model(out_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out_dir)
        write_llm_settings(out_dir, prompt)


def rl_processes(algorithm: str, gpus: int) -> int:
    """Processes for an RL job on ``gpus`` GPUs: one per GPU, except for PPO, which runs in one.
    TRL 1.12's experimental PPOTrainer is written for accelerate's processes, but in 2 processes
    here (gloo on CPU, the micro model) it did not finish its first step in 4 minutes, where one
    process takes seconds; GRPO and RLOO run data-parallel."""
    if algorithm == "ppo" and gpus > 1:
        log.warning("ppo runs in one process on 1 of its %d GPUs: TRL 1.12's experimental PPOTrainer hung in a data-parallel run (docs/architecture.md)", gpus)
        return 1
    return gpus


def train_rl_policy(algorithm: str, inputs: dict[str, str], out_dir: str, settings: dict[str, Any], rewards: list[str], prompt_split: str, threads: int,
                    counted: Sequence[str] = OBSERVATIONS) -> None:
    """The ``rl_policy`` rule: ``algorithm`` (ppo, grpo or rloo) on the reports of ``prompt_split``.

    ``inputs``: ``sft``, ``reports``, and ``reward`` (the reward model) for the learned reward,
    ``expert`` (expert labels) for the verifiable one, which credits the ``counted`` observations.
    """
    from cxrlabel.distributed import per_process_batch, world_size

    reports = pl.read_parquet(inputs["reports"]).filter(pl.col("split") == prompt_split)
    log.info("%s on %d prompts of the %s split, rewards: %s", algorithm, reports.height, prompt_split, ", ".join(rewards))
    if algorithm == "ppo":
        run_ppo(inputs["sft"], inputs["reward"], reports, out_dir, settings, threads)
        return
    threads, settings = max(1, threads // world_size()), per_process_batch(settings, world_size())
    expert, kind = read_labels(inputs["expert"]) if "verifiable" in rewards else (None, "full")
    reward_dir = inputs["reward"] if "learned" in rewards else None
    run_group_rl(algorithm, inputs["sft"], reports, out_dir, settings, threads, reward_dir=reward_dir, expert=expert, kind=kind, counted=counted)
