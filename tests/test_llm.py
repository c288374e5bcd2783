"""The LLM stages on a micro model: tokenizer and Qwen2 built here, TRL SFT with checkpoint
resume, batched generation equal to one-at-a-time generation, and the context limit."""

from __future__ import annotations

import json
import logging
import shutil

import polars as pl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from cxrlabel.instruct import PromptSettings, build_prompt, serialize_labels
from cxrlabel.labelers.llm import Completion, LLMLabeler, write_llm_settings
from cxrlabel.labelers.rule import RuleLabeler
from cxrlabel.observations import OBSERVATIONS, aggregate_mentions
from cxrlabel.sampling import CandidateSampler
from cxrlabel.training.preferences import simulated_preferences
from cxrlabel.training.base_model import OfflineModelError, TinyModelSpec, build_base_model, resolve_model_path
from cxrlabel.training.curves import CURVE_COLUMNS, curves_table
from cxrlabel.training.rlhf import SampledCompletions, format_error_reward, gold_agreement_reward, run_group_rl, run_ppo, sentence_contexts, sequence_classifier, train_reward_model
from cxrlabel.predict import predict, write_predictions
from micro_models import MICRO, REPORTS, sft_settings
from cxrlabel.training.sft import EpochSelection, run_sft

@pytest.fixture(scope="module")
def reward_dir(base, tmp_path_factory):
    """A reward model on the micro model with an untrained head: a real, if arbitrary, reward."""
    path = tmp_path_factory.mktemp("reward")
    sequence_classifier(str(base), torch.float32).save_pretrained(path)
    AutoTokenizer.from_pretrained(base).save_pretrained(path)
    return path


def test_hub_ids_are_refused_offline_naming_the_setting():
    with pytest.raises(OfflineModelError, match=r"^llm\.base: .* downloads are off: point llm\.base at a local copy, or set llm\.allow_download: true"):
        resolve_model_path("Qwen/Qwen1.5-0.5B", allow_download=False)
    with pytest.raises(OfflineModelError, match=r"^labelers\.bert\.encoder: .* point labelers\.bert\.encoder at a local copy$"):
        resolve_model_path("bert-base-uncased", allow_download=False, setting="labelers.bert.encoder", download_setting=None)


def test_sft_resumes_from_its_last_checkpoint(base, tmp_path, caplog):
    out = str(tmp_path / "sft")
    first = run_sft(str(base), str(base / "train.parquet"), str(base / "train.parquet"), out, sft_settings(4), threads=1)
    assert first["epoch"] > 0 and (tmp_path / "sft/checkpoints/checkpoint-4").is_dir()
    with caplog.at_level(logging.INFO, logger="cxrlabel.training.sft"):
        run_sft(str(base), str(base / "train.parquet"), str(base / "train.parquet"), out, sft_settings(6), threads=1)
    assert "resuming from" in caplog.text and "checkpoint-4" in caplog.text
    assert (tmp_path / "sft/checkpoints/checkpoint-6").is_dir() and (tmp_path / "sft/model.safetensors").is_file()


@pytest.fixture
def selection(tmp_path):
    """Validate reports (and two train ones, left out) with the rule labeler's silver labels."""
    reports = pl.DataFrame({"study_id": [f"v{i}" for i in range(8)], "text": REPORTS[:8], "split": ["validate"] * 6 + ["train"] * 2})
    write_predictions(predict(RuleLabeler(), reports.select("study_id", "text")), str(tmp_path / "silver.parquet"))
    reports.write_parquet(tmp_path / "reports.parquet")
    return EpochSelection.on_validate_split(str(tmp_path / "reports.parquet"), str(tmp_path / "silver.parquet"), PromptSettings("mentioned"), patience=2, max_new_tokens=12)


def test_epoch_selection_scores_a_model_by_how_it_labels_the_validate_reports(base, tuned, selection):
    assert selection.reports["study_id"].to_list() == [f"v{i}" for i in range(6)] and selection.reference.labels.height == 6
    scores = [selection.score(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path, padding_side="left")) for path in (base, tuned)]
    assert scores[1] > scores[0]  # the model tuned to the silver answers agrees with them better


def test_sft_keeps_the_best_epoch_and_stops_patience_epochs_after_it(base, tuned, selection, tmp_path, monkeypatch):
    """A real TRL run whose epoch scores are set (0.1, 0.5, 0.3, 0.2): it stops after epoch 4
    and saves epoch 2's weights."""
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.5])  # the 5th: the final evaluation, of the kept model
    monkeypatch.setattr(EpochSelection, "score", lambda self, model, tokenizer: next(scores))
    train = str(tmp_path / "train.parquet")  # the tuned model's answers: 8 steps an epoch
    pl.concat([pl.read_parquet(tuned.parent / "train.parquet")] * 2).write_parquet(train)
    run_sft(str(base), train, train, str(tmp_path / "sft"), sft_settings(-1) | {"num_train_epochs": 10}, threads=1, selection=selection)
    checkpoints = {int(path.name.split("-")[1]): path for path in (tmp_path / "sft/checkpoints").glob("checkpoint-*")}
    state = json.loads(checkpoints[max(checkpoints)].joinpath("trainer_state.json").read_text())
    assert [entry["eval_validate_f1"] for entry in state["log_history"] if "eval_validate_f1" in entry] == [0.1, 0.5, 0.3, 0.2]
    assert state["best_model_checkpoint"].endswith("checkpoint-16") and sorted(checkpoints) == [16, 32]
    saved, best, last = (AutoModelForCausalLM.from_pretrained(path).state_dict() for path in (tmp_path / "sft", checkpoints[16], checkpoints[32]))
    assert all(torch.equal(saved[name], best[name]) for name in saved) and not all(torch.equal(saved[name], last[name]) for name in saved)


def test_sft_is_deterministic_in_a_fresh_folder(base, tmp_path):
    """Same base, data and seed: the same weights, also with batches grouped by length."""
    weights = []
    for run in ("a", "b"):
        run_sft(str(base), str(base / "train.parquet"), str(base / "train.parquet"), str(tmp_path / run), sft_settings(4) | {"train_sampling_strategy": "group_by_length"}, threads=2)
        weights.append(AutoModelForCausalLM.from_pretrained(tmp_path / run).state_dict())
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_bf16_is_mixed_precision_over_float32_weights_that_a_tiny_learning_rate_moves(base, tmp_path):
    """``bf16: true`` autocasts; the weights load as ``dtype`` says, float32 unless set (as TRL
    loads a model), so the optimizer updates a float32 master copy: one step at paper 2's PPO
    learning rate 1e-6 moves each norm weight (near 1) by about that much. In bf16 weights
    (spacing 2^-8 to 2^-7 there) the same step is lost."""
    from cxrlabel.training.base_model import trainer_dtype

    assert trainer_dtype({"bf16": True, "seed": 0}) == (torch.float32, {"bf16": True, "seed": 0})
    assert trainer_dtype({"dtype": "bfloat16", "bf16": True}) == (torch.bfloat16, {"bf16": True})
    train, tiny = str(base / "train.parquet"), sft_settings(1) | {"learning_rate": 1e-6}
    before = AutoModelForCausalLM.from_pretrained(base).state_dict()
    norms = [name for name in before if name.endswith("norm.weight")]
    assert len(norms) == 5 and {before[name].dtype for name in norms} == {torch.float32}  # 2 layers x 2, the final one
    run_sft(str(base), train, train, str(tmp_path / "mixed"), tiny | {"bf16": True}, threads=1)
    mixed = AutoModelForCausalLM.from_pretrained(tmp_path / "mixed").state_dict()
    assert {weights.dtype for weights in mixed.values()} == {torch.float32}
    assert all(0 < (mixed[name] - before[name]).abs().max() <= 2e-6 for name in norms)
    run_sft(str(base), train, train, str(tmp_path / "bf16"), tiny | {"dtype": "bfloat16"}, threads=1)
    pure = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16").state_dict()
    assert {weights.dtype for weights in pure.values()} == {torch.bfloat16}
    assert all(torch.equal(pure[name], before[name].to(torch.bfloat16)) for name in norms)


def test_labeler_decoding_equals_transformers_generate_one_prompt_at_a_time_and_long_reports_are_flagged(tuned):
    """The labeler's own greedy loop (instruction from its cache, finished rows dropped) against
    ``transformers``' ``generate`` on each prompt alone, unpadded: the same completions, for
    prompts that open with the instruction and for one that does not."""
    labeler = LLMLabeler(str(tuned), batch_size=3, max_new_tokens=12)
    ids, truncated = labeler.prompt_ids("Small left pleural effusion. " * 40)
    assert truncated and len(ids) <= labeler.context - labeler.max_new_tokens
    assert labeler.tokenizer.decode(ids).endswith("effusion.\n\nLabels:\n")  # the end of the report is kept
    prompts = [labeler.prompt_ids(r)[0] for r in ["No pneumothorax.", "Heart size is normal. No effusion.", *REPORTS[1:4], "Possible pneumonia. Lungs clear."]] + [ids]
    prompts.append(labeler.tokenizer("Report: No pneumothorax.\n\nLabels:\n")["input_ids"])
    assert [p[: len(labeler.prefix)] == labeler.prefix for p in prompts[-2:]] == [True, False]
    reference = [labeler.model.generate(input_ids=torch.tensor([p]), max_new_tokens=12, do_sample=False, pad_token_id=labeler.tokenizer.pad_token_id)[0, len(p) :] for p in prompts]
    assert len({len(r) for r in reference}) > 1  # some rows end early: the loop drops them mid-batch
    assert labeler.generate(prompts) == labeler.tokenizer.batch_decode(reference, skip_special_tokens=True)
    results = labeler.label_batch(["No pneumothorax.", "Small left pleural effusion. " * 40])
    assert [r.truncated for r in results] == [False, True]
    assert all(set(r.labels) == set(OBSERVATIONS) for r in results)


def test_gold_agreement_reward_prefers_the_completion_that_agrees_with_the_expert():
    expert = {"s1": {name: None for name in OBSERVATIONS} | {"Pneumothorax": 0}}
    reward = gold_agreement_reward(expert, "full", "mentioned")
    right, wrong, broken = serialize_labels(expert["s1"], "mentioned"), serialize_labels(expert["s1"] | {"Pneumothorax": 1}, "mentioned"), "{not json"
    scores = reward(prompts=["p"] * 3, completions=[right, wrong, broken], study_id=["s1"] * 3, position=[0] * 3)
    assert scores[0] == 1.0 and scores[0] > scores[1] > scores[2]


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_group_rl_tunes_a_policy_the_labeler_loads(base, reward_dir, tmp_path, algorithm):
    """A real TRL GRPO/RLOO run (2 steps) with the learned and the verifiable reward together."""
    write_llm_settings(str(base), PromptSettings("mentioned"))
    ids = [f"s{i}" for i in range(4)]
    reports = pl.DataFrame({"study_id": ids, "text": REPORTS[:4]})
    expert = pl.DataFrame({"study_id": ids} | {name: pl.Series([0 if name == "Pneumothorax" else None] * 4, dtype=pl.Int8) for name in OBSERVATIONS})
    settings = {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 12, "beta": 0.05,
                "learning_rate": 1e-2, "dtype": "float32", "bf16": False, "gradient_checkpointing": False, "use_cpu": True, "seed": 0, "logging_steps": 1}
    out = tmp_path / algorithm
    run_group_rl(algorithm, str(base), reports, str(out), settings, threads=1, reward_dir=str(reward_dir), expert=expert, kind="full")
    before = AutoModelForCausalLM.from_pretrained(base).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before)  # the policy moved
    assert len(LLMLabeler(str(out), max_new_tokens=12).label_batch(REPORTS[:2])) == 2
    assert_curves(out / "rl_curves.csv", algorithm, steps=2, samples_per_step=4)


def assert_curves(path, algorithm: str, steps: int, samples_per_step: int) -> None:
    """The curves of a real run: one row per logged step, every column, values in their ranges."""
    curves = pl.read_csv(path)
    assert tuple(curves.columns) == CURVE_COLUMNS and curves.height == steps
    assert (curves["algorithm"] == algorithm).all() and curves["step"].to_list() == list(range(1, steps + 1))
    assert curves["samples"].to_list() == [samples_per_step * step for step in range(1, steps + 1)]
    assert curves.select(pl.all().is_null().any()).row(0) == (False,) * len(CURVE_COLUMNS), curves
    assert curves["format_error_rate"].is_between(0, 1).all() and curves["kl"].is_finite().all()  # k1 estimates (RLOO, PPO) can be negative
    assert curves["completion_length"].is_between(1, 12).all() and (curves["learning_rate"] > 0).all()


def test_format_error_reward_is_one_for_a_malformed_completion():
    reward = format_error_reward("mentioned")
    assert reward(completions=['{"Pneumothorax": "negative"}', "{}", '{"Pneumothorax": "neg', '{"Lung": "positive"}']) == [0.0, 0.0, 1.0, 1.0]


def test_ppo_sampled_completions_end_at_eos_and_join_the_log_entry_of_their_update(base):
    tokenizer = AutoTokenizer.from_pretrained(base)
    well_formed, malformed = (tokenizer(text)["input_ids"] for text in ('{"Pneumothorax": "negative"}', '{"Pneumothorax": "neg'))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    width = len(well_formed) + 3
    rows = [well_formed + [eos] + [pad] * 2, malformed + [pad] * (width - len(malformed))]  # the second ran out of tokens (no EOS)
    samples = SampledCompletions(torch.nn.Linear(1, 1), tokenizer, "mentioned")
    samples.record(torch.tensor(rows))
    history = [{"objective/scores": 0.5, "objective/kl": 3.0, "episode": 2, "step": 1}]
    samples.on_log(None, type("State", (), {"log_history": history})(), None)
    assert history[0]["format_error_rate"] == 0.5 and history[0]["completion_length"] == (len(well_formed) + 1 + len(malformed)) / 2
    curves = curves_table("ppo", history + [{"train_runtime": 1.0, "step": 1}])  # the closing summary is no curve point
    assert curves.height == 1 and curves["kl"][0] == 3.0 / history[0]["completion_length"] and curves["samples"][0] == 2


def test_batches_cover_every_prompt_once_and_long_prompts_do_not_pad_short_ones(base):
    write_llm_settings(str(base), PromptSettings("mentioned"))
    labeler = LLMLabeler(str(base), batch_size=4)
    lengths = [10, 12, 11, 10, 13, 12, 200, 11, 90]
    batches = labeler.batches(lengths)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(len(batch) <= 4 and len(batch) * max(lengths[i] for i in batch) <= 4 * 12 or len(batch) == 1 for batch in batches)
    assert [6] in batches and [8] in batches  # the long ones alone


def test_reward_model_training_is_deterministic(base, tmp_path):
    """Same pairs, same seed, same reward model (its new score head included)."""
    write_llm_settings(str(base), PromptSettings("mentioned"))
    prompts = [build_prompt(r, "mentioned") for r in REPORTS[:4]]
    good, bad = serialize_labels({"Pneumothorax": 0}, "mentioned"), serialize_labels({"Pneumothorax": 1}, "mentioned")
    pairs = pl.DataFrame({"study_id": [f"s{i}" for i in range(12)], "prompt": prompts * 3, "chosen": [good] * 12, "rejected": [bad] * 12})
    pairs.write_parquet(tmp_path / "pairs.parquet")
    settings = {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "dtype": "float32", "bf16": False, "gradient_checkpointing": False, "use_cpu": True,
                "seed": 0, "max_length": 128}
    weights = []
    for run in ("a", "b"):
        train_reward_model(str(base), str(tmp_path / "pairs.parquet"), str(tmp_path / run), settings, held_out_fraction=0.3, threads=1)
        weights.append(AutoModelForSequenceClassification.from_pretrained(tmp_path / run).state_dict())
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_ppo_tunes_a_policy_the_labeler_loads(base, reward_dir, tmp_path):
    """A real trl.experimental.ppo run (2 updates): reward model, value model, KL to the reference."""
    write_llm_settings(str(base), PromptSettings("mentioned"))
    reports = pl.DataFrame({"study_id": [f"s{i}" for i in range(4)], "text": REPORTS[:4]})
    settings = {"total_episodes": 4, "per_device_train_batch_size": 2, "num_mini_batches": 1, "num_ppo_epochs": 1,
                "local_rollout_forward_batch_size": 2, "response_length": 12, "temperature": 0.7, "kl_coef": 0.05,
                "learning_rate": 1e-2, "dtype": "float32", "bf16": False, "gradient_checkpointing": False, "seed": 0, "use_cpu": True}
    run_ppo(str(base), str(reward_dir), reports, str(tmp_path / "ppo"), settings, threads=1)
    before = AutoModelForCausalLM.from_pretrained(base).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "ppo").state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before)
    assert len(LLMLabeler(str(tmp_path / "ppo"), max_new_tokens=12).label_batch(REPORTS[:2])) == 2
    assert_curves(tmp_path / "ppo/rl_curves.csv", "ppo", steps=2, samples_per_step=2)


@pytest.fixture()
def sentence_model(base, tmp_path):
    """The micro model, prompted one sentence at a time."""
    path = tmp_path / "sentence"
    shutil.copytree(base, path, ignore=shutil.ignore_patterns("*.parquet"))
    write_llm_settings(str(path), PromptSettings("mentioned", "sentence"))
    return path


def test_the_answer_room_is_stored_with_the_model_and_every_later_use_takes_it(sentence_model, tmp_path, monkeypatch):
    """cxrlabel_llm.json records max_new_tokens: the labeler, `cxrlabel label` (unless
    --max-new-tokens says otherwise) and the RL sentence contexts give the model that room; a
    folder from before it was recorded gets 128."""
    from cxrlabel.cli import main
    from cxrlabel.labelers import Labeled

    write_llm_settings(str(sentence_model), PromptSettings("mentioned", "sentence", max_new_tokens=300))
    recorded = json.loads((sentence_model / "cxrlabel_llm.json").read_text())
    assert recorded == {"format": "mentioned", "unit": "sentence", "lowercase": False, "max_new_tokens": 300}
    assert LLMLabeler(str(sentence_model)).max_new_tokens == 300
    assert LLMLabeler(str(sentence_model), max_new_tokens=40).max_new_tokens == 40
    rooms = []

    def label_batch(self, texts, evidence=False):
        rooms.append(self.max_new_tokens)
        return [Labeled(dict.fromkeys(OBSERVATIONS))] * len(texts)

    def generate(self, prompts):
        rooms.append(self.max_new_tokens)
        return ["{}"] * len(prompts)

    monkeypatch.setattr(LLMLabeler, "label_batch", label_batch)
    monkeypatch.setattr(LLMLabeler, "generate", generate)
    (tmp_path / "in.csv").write_text("report\nNo edema.\n")
    label = ["label", "--labeler", "llm", "--model", str(sentence_model), "--input", str(tmp_path / "in.csv"),
             "--output", str(tmp_path / "out.csv")]
    assert main(label) == 0 and main([*label, "--max-new-tokens", "64"]) == 0
    sentence_contexts(str(sentence_model), pl.DataFrame({"study_id": ["s0"], "text": ["No pneumothorax. No edema."]}))
    assert rooms == [300, 64, 300]
    before_recorded = {"format": "mentioned", "unit": "sentence", "lowercase": False}
    (sentence_model / "cxrlabel_llm.json").write_text(json.dumps(before_recorded))
    old = LLMLabeler(str(sentence_model))
    assert old.max_new_tokens == 128 and old.prompt == PromptSettings("mentioned", "sentence")


def test_a_sentence_unit_labeler_labels_each_distinct_sentence_once_and_aggregates(sentence_model, monkeypatch):
    labeler = LLMLabeler(str(sentence_model), max_new_tokens=12)
    reports = ["No pneumothorax. Small left pleural effusion.", "Small left pleural effusion. Possible pneumonia. No pneumothorax."]
    answers = {"No pneumothorax.": '{"Pneumothorax": "negative"}', "Small left pleural effusion.": '{"Pleural Effusion": "positive"}', "Possible pneumonia.": '{"Pneumonia": "uncertain", "Pleural Effusion": "negative"}'}
    prompted = []

    def complete(prompts, generators, temperature, sources=None):  # the real decoding is covered above; here: which prompts, and how answers combine
        texts = [labeler.tokenizer.decode(p).rsplit("Sentence: ", 1)[1].removesuffix("\n\nLabels:\n") for p in prompts]
        prompted.extend(texts)
        return [Completion(labeler.tokenizer(answers[t], add_special_tokens=False)["input_ids"], []) for t in texts]

    monkeypatch.setattr(labeler, "_complete", complete)
    first, second = labeler.label_batch(reports)
    assert sorted(prompted) == sorted(answers)  # three distinct sentences, each prompted once
    assert {k: v for k, v in first.labels.items() if v is not None} == {"Pneumothorax": 0, "Pleural Effusion": 1}
    assert {k: v for k, v in second.labels.items() if v is not None} == {"Pneumothorax": 0, "Pleural Effusion": 1, "Pneumonia": -1}
    assert not first.format_error and not second.format_error


def test_a_sentence_unit_labeler_generates_for_real_and_flags_a_malformed_sentence(sentence_model):
    labeler = LLMLabeler(str(sentence_model), max_new_tokens=12)
    [result] = labeler.label_batch(["No pneumothorax. Small left pleural effusion."])
    outputs = labeler.generate([labeler.prompt_ids(s)[0] for s in ("No pneumothorax.", "Small left pleural effusion.")])
    parsed = [labeler.parse(o) for o in outputs]
    assert result.labels == aggregate_mentions(p.labels for p in parsed)
    assert result.format_error == any(p.error is not None for p in parsed)


def test_sentence_unit_group_rl_judges_a_sentence_by_the_report_labels_it_leads_to(sentence_model, tmp_path):
    """A real TRL GRPO run (2 steps) on sentence prompts with the verifiable reward, whose contexts
    are the policy's own greedy labels of the other sentences."""
    reports = pl.DataFrame({"study_id": ["s0", "s1"], "text": ["No pneumothorax. Small left pleural effusion.", "Possible pneumonia. No pneumothorax."]})
    contexts = sentence_contexts(str(sentence_model), reports)
    assert set(contexts) == {("s0", 0), ("s0", 1), ("s1", 0), ("s1", 1)} and all(len(c) == 1 for c in contexts.values())
    expert = pl.DataFrame({"study_id": ["s0", "s1"]} | {name: pl.Series([1 if name == "Pleural Effusion" else None] * 2, dtype=pl.Int8) for name in OBSERVATIONS})
    settings = {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 12, "beta": 0.05,
                "learning_rate": 1e-2, "bf16": False, "gradient_checkpointing": False, "use_cpu": True, "seed": 0, "logging_steps": 1}
    out = tmp_path / "grpo"
    run_group_rl("grpo", str(sentence_model), reports, str(out), settings, threads=1, expert=expert, kind="positive_only")
    assert LLMLabeler(str(out)).prompt == PromptSettings("mentioned", "sentence")
    reward = gold_agreement_reward({"s0": {"Pleural Effusion": 1}}, "positive_only", "mentioned", {("s0", 1): [{"Pleural Effusion": 1}]})
    # the other sentence already finds the effusion: this sentence's false positive costs, its silence does not
    assert reward(prompts=["p"] * 2, completions=["{}", '{"Edema": "positive"}'], study_id=["s0"] * 2, position=[1] * 2) == [1 / 14, 0.0]


def test_sentence_unit_preferences_pair_sentence_outputs_judged_in_their_report(sentence_model, monkeypatch):
    """Which prompts are sampled and how candidates are judged (the sampling itself is real in the report-unit runs)."""
    reports = pl.DataFrame({"study_id": ["s0", "s1"], "text": ["No pneumothorax. Small left pleural effusion.", "Possible pneumonia. No pneumothorax."]})
    expert = pl.DataFrame({"study_id": ["s0", "s1"]} | {name: pl.Series([1 if name == "Pleural Effusion" else None] * 2, dtype=pl.Int8) for name in OBSERVATIONS})
    greedy = {"No pneumothorax.": "{}", "Small left pleural effusion.": '{"Pleural Effusion": "positive"}', "Possible pneumonia.": "{}"}
    samples = {"No pneumothorax.": ["{}", '{"Edema": "positive"}'], "Small left pleural effusion.": ["{}", '{"Pleural Effusion": "positive"}'], "Possible pneumonia.": ["{}", '{"Pleural Effusion": "positive"}']}
    sentence = lambda labeler, ids: labeler.tokenizer.decode(ids).rsplit("Sentence: ", 1)[1].removesuffix("\n\nLabels:\n")  # noqa: E731
    monkeypatch.setattr(LLMLabeler, "generate", lambda self, prompts: [greedy[sentence(self, p)] for p in prompts])
    monkeypatch.setattr(LLMLabeler, "sample", lambda self, prompts, n, temperature, seed: [samples[sentence(self, p)] for p in prompts])
    pairs, summary = simulated_preferences(CandidateSampler(str(sentence_model), batch_size=8, max_new_tokens=12), reports, expert, "positive_only", 2, 1.0, 10, 0)
    found = {(study, p.rsplit("Sentence: ", 1)[1].removesuffix("\n\nLabels:\n"), chosen, rejected) for study, p, chosen, rejected in pairs.select("study_id", "prompt", "chosen", "rejected").rows()}
    assert found == {
        ("s0", "No pneumothorax.", "{}", '{"Edema": "positive"}'),  # a false positive costs
        ("s0", "Small left pleural effusion.", '{"Pleural Effusion": "positive"}', "{}"),  # the only effusion finding
        ("s1", "Possible pneumonia.", '{"Pleural Effusion": "positive"}', "{}"),  # its report's effusion is found nowhere else
    }  # s1's "No pneumothorax.": a tie, both wrong once (the report's No Finding or an edema, where gold has an effusion)
    assert summary == {"reports_judged": 2, "units_judged": 4, "candidates_per_unit": 2, "distinct_candidates_per_unit": 2.0,
                       "tie_rate": 0.25, "pairs": 3, "reports_with_pairs": 2, "reports_without_pairs": 0, "format_pairs": 0}


def test_sampling_is_seeded_per_candidate_whatever_the_batch(tuned):
    """A candidate's draw depends on the seed, its prompt and its number, not on the prompts it is
    batched with; another seed draws other candidates."""
    labeler = LLMLabeler(str(tuned), max_new_tokens=24)
    prompts = [labeler.prompt_ids(text)[0] for text in REPORTS]
    together = labeler.sample(prompts, 4, 1.5, seed=3)
    labeler.batch_size = 1
    assert [labeler.sample([p], 4, 1.5, seed=3)[0] for p in prompts] == together
    assert labeler.sample(prompts, 4, 1.5, seed=4) != together
    assert all(len(candidates) == 4 for candidates in together) and any(len(set(candidates)) > 1 for candidates in together)


def test_each_label_gets_the_certainty_logits_of_the_step_that_wrote_it(tuned):
    """Greedy decoding writes the most likely token, so among the certainty words' logits kept
    for a label, the label's own word is the highest; blank labels get none."""
    labeler = LLMLabeler(str(tuned), batch_size=3, max_new_tokens=16)
    assert sorted(labeler.certainty.values()) == [-1, 0, 1]
    results = labeler.label_batch(REPORTS[:4])
    assert any(r.scores for r in results)
    for result in results:
        assert set(result.scores) == {name for name, code in result.labels.items() if code is not None}
        for name, logits in result.scores.items():
            assert set(logits) == {-1, 0, 1} and max(logits, key=logits.get) == result.labels[name]


def test_a_report_label_takes_the_scores_of_its_first_unit_of_the_final_class():
    from cxrlabel.labelers.llm import combine_scores

    labels = {name: None for name in OBSERVATIONS} | {"Edema": 1, "No Finding": 1}
    units = [({"Edema": 0}, {"Edema": {1: 0.0, 0: 2.0, -1: 0.0}}), ({"Edema": 1}, {"Edema": {1: 3.0, 0: 0.0, -1: 0.0}}), ({"Edema": 1}, {"Edema": {1: 1.0, 0: 0.0, -1: 0.0}})]
    assert combine_scores(labels, units) == {"Edema": {1: 3.0, 0: 0.0, -1: 0.0}}  # No Finding: no unit wrote it


@pytest.fixture()
def evidence_labeler(base, tmp_path):
    """The micro model, told it answers in the evidence format; its completions are replaced by
    the ``answers`` given (unit text as prompted -> completion), so that what is tested is how
    quotes become spans."""

    def make(unit: str, lowercase: bool, answers: dict[str, str], monkeypatch) -> LLMLabeler:
        path = tmp_path / f"evidence-{unit}-{lowercase}"
        shutil.copytree(base, path, ignore=shutil.ignore_patterns("*.parquet"))
        write_llm_settings(str(path), PromptSettings("evidence", unit, lowercase))
        labeler = LLMLabeler(str(path), max_new_tokens=12)
        labeler.context = 1024  # the model never runs here: the longer instruction need not fit its 128 positions
        label = f"{unit.capitalize()}: "

        def complete(prompts, generators, temperature, sources=None):
            texts = [labeler.tokenizer.decode(p).rsplit(label, 1)[1].removesuffix("\n\nLabels:\n") for p in prompts]
            return [Completion(labeler.tokenizer(answers[t], add_special_tokens=False)["input_ids"], []) for t in texts]

        monkeypatch.setattr(labeler, "_complete", complete)
        return labeler

    return make


def test_locate_finds_a_quote_verbatim_or_across_whitespace_runs_and_case_only_where_lowered():
    from cxrlabel.labelers.llm import _locate

    text = "FINDINGS:\nHeart size is   normal.\nNo pleural\teffusion. No pleural effusion."
    assert _locate(text, "No pleural effusion") == (text.rindex("No pleural effusion"), len(text) - 1)  # verbatim wins
    assert _locate(text, "No pleural effusion", 0, text.index("effusion") + 8) == (text.index("No pleural\t"), text.index("effusion") + 8)
    start, end = _locate(text, "Heart size is normal")
    assert text[start:end] == "Heart size is   normal"
    assert _locate(text, "heart size is normal") is None  # the model read the case as written
    start, end = _locate(text, "heart size is normal", lowercase=True)
    assert text[start:end] == "Heart size is   normal"
    assert _locate(text, "findings: heart", lowercase=True) == (0, text.index("Heart") + 5)
    assert _locate(text, "pulmonary edema") is None and _locate(text, "") is None and _locate(text, "  ") is None
    assert _locate(text, "Heart", 15) is None  # only inside [start, end)


@pytest.mark.parametrize("lowercase", [False, True])
def test_an_evidence_model_places_each_quote_in_the_original_report_and_counts_misses(evidence_labeler, monkeypatch, lowercase):
    from cxrlabel.labelers import label_batch, supports_evidence

    text = "Heart size is   normal.\nNo pleural\teffusion. Possible PNEUMONIA."
    quotes = {"Cardiomegaly": "Heart size is normal", "Pleural Effusion": "No pleural effusion", "Pneumonia": "Possible PNEUMONIA", "Edema": "pulmonary edema"}
    if lowercase:
        quotes = {k: v.lower() for k, v in quotes.items()}
    labels = {"No Finding": None, "Cardiomegaly": 0, "Pleural Effusion": 0, "Pneumonia": -1, "Edema": 1, "Fracture": 1}
    answer = serialize_labels(labels, "evidence", quotes)  # Fracture: a bare word
    prompted = " ".join((text.lower() if lowercase else text).split())
    labeler = evidence_labeler("report", lowercase, {prompted: answer}, monkeypatch)
    assert supports_evidence(labeler)
    [plain] = labeler.label_batch([text])
    [result] = label_batch(labeler, [text], evidence=True)
    assert plain.evidence is None and plain.evidence_miss == 0
    assert result.labels == plain.labels and result.scores == plain.scores and result.format_error is False
    assert set(result.evidence) == {"Cardiomegaly", "Pleural Effusion", "Pneumonia", "Edema", "Fracture"}
    expected = {"Cardiomegaly": "Heart size is   normal", "Pleural Effusion": "No pleural\teffusion", "Pneumonia": "Possible PNEUMONIA"}
    for name, quote in expected.items():
        evidence = result.evidence[name]
        assert text[evidence.start : evidence.end] == evidence.quote == quote
    assert result.evidence["Edema"] is None and result.evidence["Fracture"] is None
    assert result.evidence_miss == 1  # Edema's quote is nowhere; Fracture gave none


def test_a_sentence_unit_evidence_model_places_a_quote_in_the_sentence_that_decided_the_label(evidence_labeler, monkeypatch):
    from cxrlabel.labelers import label_batch

    reports = ["No pleural effusion. Small pleural effusion. Heart is enlarged.", "Lungs are clear. Small pleural effusion."]
    answers = {
        "No pleural effusion.": '{"Pleural Effusion": ["negative", "No pleural effusion"]}',
        "Small pleural effusion.": '{"Pleural Effusion": ["positive", "pleural effusion"]}',
        "Heart is enlarged.": '{"Cardiomegaly": ["positive", "No pleural"]}',  # a quote from another sentence: found there
        "Lungs are clear.": '{"Lung Opacity": ["negative", "lungs are clear"]}',  # the case differs: a miss for a model that reads case
    }
    labeler = evidence_labeler("sentence", False, answers, monkeypatch)
    plain = labeler.label_batch(reports)
    first, second = label_batch(labeler, reports, evidence=True)
    assert [r.labels for r in plain] == [first.labels, second.labels]
    effusion = first.evidence["Pleural Effusion"]
    assert first.labels["Pleural Effusion"] == 1 and (effusion.start, effusion.quote) == (reports[0].index("pleural effusion", 5), "pleural effusion")
    assert first.evidence["Cardiomegaly"].start == 0 and first.evidence_miss == 0
    assert second.labels["No Finding"] is None and second.evidence["Lung Opacity"] is None and second.evidence_miss == 1
    assert reports[1][second.evidence["Pleural Effusion"].start :].startswith("pleural effusion.")


def test_certainty_tokens_tell_the_words_apart_in_both_shapes_of_the_evidence_format(base, tmp_path):
    from cxrlabel.labelers.llm import certainty_shapes, certainty_tokens

    tokenizer = AutoTokenizer.from_pretrained(base)
    shapes = certainty_shapes(tokenizer, "evidence")
    assert len(shapes) == 2 and all(sorted(shape.values()) == [-1, 0, 1] for shape in shapes)
    assert sorted(set(certainty_tokens(tokenizer, "evidence").values())) == [-1, 0, 1]
    assert certainty_shapes(tokenizer, "mentioned") == [certainty_tokens(tokenizer, "mentioned")]
    # a label written in either shape gets the logits of its shape's tokens at its step
    path = tmp_path / "evidence"
    shutil.copytree(base, path, ignore=shutil.ignore_patterns("*.parquet"))
    write_llm_settings(str(path), PromptSettings("evidence"))
    labeler = LLMLabeler(str(path))
    answer = '{"No Finding": "positive", "Edema": ["negative", "no edema"]}'
    tokens = labeler.tokenizer(answer, add_special_tokens=False)["input_ids"]
    steps = [i for i, t in enumerate(tokens) if t in labeler.certainty]
    assert len(steps) >= 2
    logits = [[float(i) for i in range(len(labeler.certainty))] for _ in steps]
    scores = labeler.scores(Completion(tokens, list(zip(steps, logits))), labeler.parse(answer).labels)
    assert set(scores) == {"No Finding", "Edema"} and all(sorted(s) == [-1, 0, 1] for s in scores.values())
    by_token = dict(zip(labeler.certainty, logits[0]))
    for name, shape_of_step in (("No Finding", steps[0]), ("Edema", steps[1])):
        shape = next(s for s in labeler.certainty_groups if tokens[shape_of_step] in s)
        assert scores[name] == {code: by_token[t] for t, code in shape.items()}


def test_cli_jsonl_carries_an_evidence_model_s_spans_and_logs_its_misses(evidence_labeler, monkeypatch, tmp_path, caplog):
    import cxrlabel.cli
    from cxrlabel.cli import main

    reports = {"1": "No pneumothorax.  Small left\npleural effusion.", "2": "Heart size is normal."}
    answers = {
        " ".join(reports["1"].split()): '{"Pneumothorax": ["negative", "No pneumothorax"], "Pleural Effusion": ["positive", "left pleural effusion"]}',
        reports["2"]: '{"No Finding": "positive", "Cardiomegaly": ["negative", "heart is normal"]}',
    }
    labeler = evidence_labeler("report", False, answers, monkeypatch)
    monkeypatch.setattr(cxrlabel.cli, "make_labeler", lambda kind, model: labeler)
    source = tmp_path / "in.csv"
    pl.DataFrame({"id": list(reports), "report": list(reports.values())}).write_csv(source)
    with caplog.at_level(logging.INFO):
        assert main(["label", "--labeler", "llm", "--model", "x", "--input", str(source), "--output", str(tmp_path / "out.jsonl"), "--format", "jsonl"]) == 0
    first, second = (json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines())
    effusion = first["evidence"]["Pleural Effusion"]
    assert reports["1"][effusion["start"] : effusion["end"]] == effusion["quote"] == "left\npleural effusion" and effusion["cue"] is None
    assert first["evidence"]["Pneumothorax"]["quote"] == "No pneumothorax"
    assert second["evidence"] == {"No Finding": None, "Cardiomegaly": None}  # no quote; a quote the report does not hold
    assert "evidence: 2 of 4 non-blank labels have a span; 1 quotes were not found" in caplog.text


def test_an_evidence_model_decoding_for_real_gives_the_same_labels_and_scores_with_and_without_evidence(base, tmp_path):
    from cxrlabel.labelers import label_batch

    path = tmp_path / "evidence"
    shutil.copytree(base, path, ignore=shutil.ignore_patterns("*.parquet"))
    write_llm_settings(str(path), PromptSettings("evidence", "sentence"))
    labeler = LLMLabeler(str(path), batch_size=3, max_new_tokens=16)
    assert labeler.provides_evidence and sorted(set(labeler.certainty.values())) == [-1, 0, 1]
    texts = ["No pneumothorax. Small left pleural effusion.", "Heart size is normal.", "Possible pneumonia. No pneumothorax."]
    plain, found = labeler.label_batch(texts), label_batch(labeler, texts, evidence=True)
    assert [(r.labels, r.scores, r.format_error) for r in plain] == [(r.labels, r.scores, r.format_error) for r in found]
    for text, result in zip(texts, found):
        assert set(result.evidence) == {name for name, code in result.labels.items() if code is not None}
        assert all(e is None or text[e.start : e.end] == e.quote for e in result.evidence.values())


@pytest.fixture(scope="module")
def evidence_tuned(tmp_path_factory):
    """A micro model of its own (tokenizer trained with the evidence instruction, 256 positions)
    tuned (300 steps) to the evidence-format completions the instruction tables write for REPORTS."""
    from cxrlabel.instruct import instruction_table
    from cxrlabel.io.labels import labels_schema

    path = tmp_path_factory.mktemp("evidence_tuned")
    prompt = PromptSettings("evidence")
    reports = pl.DataFrame({"study_id": [str(i) for i in range(len(REPORTS))], "text": REPORTS})
    labels = pl.DataFrame([{"study_id": str(i), **RuleLabeler().label(r)} for i, r in enumerate(REPORTS)], schema=labels_schema(), orient="row")
    table = instruction_table(reports, labels, prompt)
    table.select("prompt", "completion").write_parquet(path / "train.parquet")
    spec = TinyModelSpec(**(MICRO.__dict__ | {"max_position_embeddings": 256}))
    build_base_model(str(path / "base"), None, False, REPORTS, table["prompt"].to_list() + table["completion"].to_list(), spec)
    run_sft(str(path / "base"), str(path / "train.parquet"), str(path / "train.parquet"), str(path / "sft"), sft_settings(300) | {"learning_rate": 3e-3, "save_steps": 300, "max_length": 256}, threads=1)
    write_llm_settings(str(path / "sft"), prompt)
    return path / "sft", table


def test_a_tuned_evidence_model_quotes_the_report_and_keeps_its_scores(evidence_tuned):
    """End to end on a model that learned the format: its quotes are placed in the reports, and each
    label still gets the certainty logits of the step that wrote its word (in either shape)."""
    from cxrlabel.labelers import label_batch

    model, table = evidence_tuned
    labeler = LLMLabeler(str(model), batch_size=3, max_new_tokens=64)  # quotes: answers over 40 tokens
    texts = REPORTS[:4]
    assert any('["' in completion for completion in table["completion"]) and labeler.prompt_ids(texts[0])[1] is False
    results = label_batch(labeler, texts, evidence=True)
    assert [r.labels for r in results] == [RuleLabeler().label(t) for t in texts]  # it learned its training set
    assert not any(r.format_error for r in results) and sum(r.evidence_miss for r in results) == 0
    placed = [(t, e) for t, r in zip(texts, results) for e in r.evidence.values() if e is not None]
    assert len(placed) >= 3 and all(t[e.start : e.end] == e.quote for t, e in placed)
    for result in results:
        assert set(result.scores) == {name for name, code in result.labels.items() if code is not None}
        assert all(max(logits, key=logits.get) == result.labels[name] for name, logits in result.scores.items())


def test_quote_fits_checks_only_the_quote_a_token_writes_into_or_closes():
    from cxrlabel.labelers.llm import quote_fits

    source = "the heart is again mildly enlarged."
    opened = '{"Cardiomegaly": ["positive", "heart is'
    assert quote_fits(opened, opened + " again", source) and not quote_fits(opened, opened + " mildly", source)
    assert quote_fits(opened, opened + '"]}', source) and quote_fits(opened, opened + '"', source)  # closing a substring
    assert not quote_fits(opened, opened + '",', source) and not quote_fits(opened + '"', opened + '", "', source)  # then only "]"
    assert not quote_fits(opened + '"', opened + '" ', source) and not quote_fits(opened + '"', opened + '"]**', source)
    assert quote_fits(opened + '"', opened + '"]', source) and quote_fits(opened + '"]', opened + '"], "', source)
    assert not quote_fits(opened + '"], "', opened + '"], ""]}', source) and not quote_fits(opened + '"], "', opened + '"], "{}', source)
    assert quote_fits(opened + '"], "', opened + '"], "Edema', source) and quote_fits(opened + '"], "Edema', opened + '"], "Edema": [', source)
    assert not quote_fits('{"Edema": ["negative", ', '{"Edema": ["negative", ""', source)  # closing an empty quote
    said = 'the "heart" is enlarged.'
    escaped = json.dumps(said)[1:-1]  # as the answer writes it
    quoting = '{"Cardiomegaly": ["positive", "the \\"heart'
    assert quote_fits(quoting, quoting + '\\" is', escaped)  # an escaped mark does not close the quote
    assert not quote_fits(quoting, quoting + "\\{", escaped)
    assert quote_fits('{"No Finding"', '{"No Finding": "positive"', source)  # no quote opened
    written = '{"Edema": ["positive", "lungs"], "Pneumothorax'  # a quote closed before this token is not checked again
    assert quote_fits(written, written + '":', source)


def test_copied_quotes_are_substrings_of_the_report_where_free_ones_are_not(evidence_tuned):
    """Reports worded unlike its training set: the tuned micro model writes a quote it learned,
    which the report does not hold (a miss); with its quotes copied (the default), every quote is a
    substring of its report as prompted, so each quote gets a span."""
    from cxrlabel.labelers import label_batch

    model, _ = evidence_tuned
    texts = ["Heart size is again normal.", "No new pneumothorax.", "Small left sided pleural effusion.", "Possible early pneumonia."]
    free = label_batch(LLMLabeler(str(model), batch_size=4, max_new_tokens=64, copy_quotes=False), texts, evidence=True)
    copied = label_batch(LLMLabeler(str(model), batch_size=4, max_new_tokens=64), texts, evidence=True)
    assert sum(r.evidence_miss for r in free) >= 1  # "No pneumothorax", learned, for "No new pneumothorax."
    assert sum(r.evidence_miss for r in copied) == 0
    for text, result in zip(texts, copied):
        assert all(text[e.start : e.end] == e.quote for e in result.evidence.values() if e is not None)


def test_a_learned_no_finding_model_clears_no_finding_where_the_experts_would(tuned, tmp_path):
    """An LLM labeler with the report-level No Finding stage, in the package and through
    `cxrlabel label --no-finding-model`: No Finding stays where its rule gives it and the stage
    finds the report normal; every other label is the labeler's own."""
    from cxrlabel.cli import main
    from cxrlabel.labelers.no_finding import NoFindingSettings, train_no_finding

    normal = ["No pneumothorax.", "Heart size is normal.", "The lungs are clear."]
    texts = normal + [f"{a} The aorta is tortuous." for a in normal] + [f"{a} Degenerative changes of the spine." for a in normal]
    train_no_finding(texts, [True] * 3 + [False] * 6, str(tmp_path / "nf"), NoFindingSettings(epochs=200, threads=1))
    reports = ["No pneumothorax.", "No pneumothorax. The aorta is tortuous."]
    plain = LLMLabeler(str(tuned)).label_batch(reports)
    staged = LLMLabeler(str(tuned), no_finding=str(tmp_path / "nf")).label_batch(reports)
    assert [item.labels["No Finding"] for item in plain] == [1, 1] and [item.labels["No Finding"] for item in staged] == [1, None]
    assert all({k: v for k, v in a.labels.items() if k != "No Finding"} == {k: v for k, v in b.labels.items() if k != "No Finding"} for a, b in zip(plain, staged))
    pl.DataFrame({"report": reports}).write_csv(tmp_path / "in.csv")
    assert main(["label", "--labeler", "llm", "--model", str(tuned), "--no-finding-model", str(tmp_path / "nf"), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv")]) == 0
    assert pl.read_csv(tmp_path / "out.csv", infer_schema=False)["No Finding"].to_list() == ["1.0", None]
    assert main(["label", "--labeler", "rule", "--no-finding-model", str(tmp_path / "nf"), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "x.csv")]) == 2
