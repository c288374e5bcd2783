"""The workflow's plans and configurations: lint and formatting, every config validates and plans
every stage, the schema refuses invalid combinations, the paper config runs on files shaped like
MIMIC-CXR's, and the sentence unit runs through the whole DAG (each on its own folder; the
embedded default's run and what later tests read of it are in test_workflow.py)."""

from __future__ import annotations

import json
import re
import subprocess

import polars as pl
import pytest
import yaml
from conftest import ROOT
from snakemake_runs import job_blocks, overlay, snakemake

from cxrlabel.instruct import PERTURBED_PREFIX

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
SHIPPED = [(), ("config/openi.yaml",), ("config/mimic.yaml",), ("config/smoke.yaml",)]


def checked_config(*overlays: str | dict) -> dict:
    """config/config.yaml with ``overlays`` over it (as --configfile does), validated as the Snakefile does."""
    from snakemake.utils import update_config, validate

    from cxrlabel.workflow_config import check_config

    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    for extra in overlays:
        update_config(config, extra if isinstance(extra, dict) else yaml.safe_load((ROOT / extra).read_text()))
    validate(config, str(SCHEMA))
    check_config(config)
    return config

def test_lint_is_clean():
    result = snakemake("--lint", check=False)
    assert "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


def test_snakefmt_is_quiet():
    result = subprocess.run(["snakefmt", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_max_threads_caps_every_rule(tmp_path):
    """config/smoke.yaml's resources.max_threads: 1 plans every job with one thread; the embedded
    default gives its model rules two."""
    def threads_by_rule(*configfiles: str) -> dict[str, set[int]]:
        output = snakemake("-n", "--cores", "2", "--configfile", *configfiles, "--config", f"results={tmp_path}").stdout
        # a job of one thread has no threads line
        return {name: {int(n) for n in re.findall(r"^\s+threads: (\d+)$", block, re.MULTILINE)} or {1} for name, block in job_blocks(output)}
    default, smoke = threads_by_rule("config/config.yaml"), threads_by_rule("config/config.yaml", "config/smoke.yaml")
    assert default["sft"] == {2} and default["bert_train"] == {2}
    assert set(smoke) == set(default) and all(threads == {1} for threads in smoke.values()), smoke


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/openi.yaml", "config/mimic.yaml"])
def test_every_config_validates_and_plans_every_stage(configfile, tmp_path):
    result = snakemake("-n", "--configfile", configfile, "--config", f"results={tmp_path}", check=False)
    output = result.stdout + result.stderr
    if configfile == "config/mimic.yaml":  # the MIMIC-CXR files are the user's own: only they are missing
        assert "MissingInputException" in output and "mimic-cxr-2.1.0-test-set-labeled.csv" in output, output
    else:
        assert result.returncode == 0, output
        for rule in ("ingest", "instruct", "predict_rule", "bert_train", "base_model", "sft", "preferences", "reward_model", "rl_policy", "predict_llm", "evaluate", "significance", "figures",
                     "perturb", "predict_perturbed", "robustness", "predict_validate", "calibrate", "calibration_table"):
            assert f"rule {rule}:" in output, rule
        for target in ("tables/table9_calibration.csv", "tables/reliability_bins.csv", "figures/reliability.png", "models/sft.calibration.json", "models/bert.calibration.json",
                       "predictions/validate/sft_scores.parquet", "predictions/bert_scores.parquet", "predictions/sft_scores.parquet"):
            assert f"{tmp_path}/{target}" in output, target


def test_paper_config_runs_on_files_shaped_like_mimic_cxr(tmp_path):
    from mimic_fixture import write_release

    release = write_release(tmp_path / "mimic", as_zip=True)
    path = tmp_path / "paths.yaml"
    path.write_text(yaml.safe_dump({"results": str(tmp_path / "results"), "corpus": {"mimic": {k: str(v) for k, v in release.items()}}}))
    snakemake("--cores", "1", "--configfile", "config/mimic.yaml", str(path), "--", str(tmp_path / "results/instruct/instruct_train.parquet"))
    summary = json.loads((tmp_path / "results/corpus/ingest_summary.json").read_text())
    assert summary["kept"]["reports"] == 7 and summary["dropped"]["no_split"] == 2
    # without a judgements file the whole DAG plans (the preferences job says how to get one when it runs)
    assert not (ROOT / "data/preferences/radiologist_judgements.csv").exists()
    whole = snakemake("-n", "--configfile", "config/mimic.yaml", str(path)).stdout
    for rule in ("sft", "preferences", "reward_model", "rl_policy", "predict_llm", "evaluate", "figures"):
        assert f"rule {rule}:" in whole, rule
    assert "rule review_set:" in snakemake("-n", "--configfile", "config/mimic.yaml", str(path), "--", "review_set").stdout


def test_preferences_are_never_judged_on_the_reports_that_choose_or_score_the_labelers(tmp_path):
    """OpenI chooses its RL variants on validate and scores on test: its preference set is the
    train split's; and no configuration may judge test reports."""
    openi = yaml.safe_load((ROOT / "config/openi.yaml").read_text())
    assert set(openi["rlhf"]["preference_splits"]) == {"train"}
    result = snakemake("-n", "--configfile", overlay(tmp_path, {"rlhf": {"preference_splits": ["validate", "test"]}}), check=False)
    assert result.returncode != 0 and "ValidationError" in result.stdout + result.stderr


def test_robustness_levers_can_be_chosen_on_the_validate_split(tmp_path):
    """robustness.split: validate perturbs the validate reports and reads the labelers' validate
    predictions, so that levers such as instruct.perturbed_copies are not chosen on test's misses."""
    output = snakemake("-n", "-p", "--configfile", overlay(tmp_path, {"robustness": {"split": "validate"}}, smoke=True)).stdout
    robustness_job = output[output.index("rule robustness:"):].split("\n\n")[0]
    assert f"{tmp_path}/results/predictions/validate/sft.parquet" in robustness_job and f"{tmp_path}/results/predictions/rule.parquet" in robustness_job
    assert f"{tmp_path}/results/predictions/sft.parquet" not in robustness_job.replace("validate/sft", "")


def test_invalid_combinations_are_refused_by_the_schema(tmp_path):
    """Sentence instructions are labeled by the rule labeler, human judgements compare whole reports,
    and a trainer's weights are float32 or bfloat16."""
    for extra in ({"instruct": {"unit": "sentence", "labels": "corpus"}}, {"instruct": {"labels": "corpus", "recombined_reports": 10}},
                  {"instruct": {"unit": "sentence", "labels": "rule"}, "rlhf": {"judge": "human", "human_judgements": "j.csv"}},
                  {"rlhf": {"ppo": {"dtype": "float16"}}}):
        result = snakemake("-n", "--configfile", overlay(tmp_path, extra), check=False)
        assert result.returncode != 0 and "ValidationError" in result.stdout + result.stderr, extra


@pytest.mark.slow
def test_the_sentence_unit_runs_through_the_whole_dag(tmp_path):
    """OpenI's path (rule silver labels, sentence prompts, perturbed training copies, sentence-level
    RL with the learned and the verifiable reward) on the demo corpus, with tiny training budgets
    and jobs of 2 processes: every stage runs and the models, logs and tables say what they are."""
    budget = {
        "demo": {"n_studies": 200},  # half the miniature's: 150 train, 20 validate, 30 test studies
        "instruct": {"unit": "sentence", "labels": "rule", "perturbed_copies": ["deid_xxxx", "negation_removed"]},
        "llm": {"tiny": {"pretrain_epochs": 0.2}, "sft": {"max_steps": 40, "per_device_train_batch_size": 16}, "inference": {"max_new_tokens": 32}},
        # the demo's expert labels cover validate and test: the verifiable reward needs them
        "rlhf": {"rewards": ["learned", "verifiable"], "prompt_split": "validate", "ppo": {"total_episodes": 16}, "grpo": {"max_steps": 2}},
        "evaluation": {"labelers": ["rule", "sft", "ppo", "grpo"]},
        "figures": {"baselines": ["rule"]},
        # two "GPUs": torchrun runs SFT and GRPO in 2 processes (gloo here), prediction and sampling in 2 shards
        "resources": {name: {"gpu": 2} for name in ("sft", "predict_llm", "preferences", "rl_policy")},
    }
    config = overlay(tmp_path, budget, smoke=True)
    snakemake("--cores", "2", "--configfile", config)
    results = tmp_path / "results"
    train = pl.read_parquet(results / "instruct/instruct_train.parquet")
    assert train.height > 3 * pl.read_parquet(results / "corpus/reports.parquet").filter(pl.col("split") == "train").height
    assert train["prompt"].str.contains("\n\nSentence: ").all() and not train["completion"].str.contains("No Finding").any()
    copies = train.filter(pl.col("study_id").str.starts_with(PERTURBED_PREFIX))["study_id"].str.split("-").list.get(1)
    assert set(copies) == {"deid_xxxx", "negation_removed"}
    for model in ("sft", "ppo", "grpo"):
        recorded = json.loads((results / f"models/{model}/cxrlabel_llm.json").read_text())
        assert recorded == {"format": "mentioned", "unit": "sentence", "lowercase": False, "max_new_tokens": 32}
    pairs = pl.read_parquet(results / "rlhf/preferences.parquet")
    assert pairs.height > 0 and pairs["prompt"].str.contains("\n\nSentence: ").all()
    summary = json.loads((results / "rlhf/preferences_summary.json").read_text())
    validate = pl.read_parquet(results / "corpus/reports.parquet").filter(pl.col("split") == "validate").height
    assert summary["pairs"] == pairs.height and summary["reports_judged"] == validate and 1 <= summary["distinct_candidates_per_unit"] <= 4
    for log in ("sft", "preferences", "grpo", "predict_sft", "predict_grpo"):
        text = (results / f"logs/{log}.log").read_text()
        assert "process 0 of 2" in text and "process 1 of 2" in text, log
    assert "ppo runs in one process" in (results / "logs/ppo.log").read_text()
    for model in ("ppo", "grpo"):  # 16 episodes of 8; 2 steps logged each (the main process writes them)
        assert pl.read_csv(results / f"models/{model}/rl_curves.csv")["step"].to_list() == [1, 2], model
    agreement = pl.read_csv(results / "tables/table7_agreement_with_silver.csv")
    assert agreement.columns == ["observation", "rule", "sft", "ppo", "grpo", "metric"]
    assert (agreement.filter(pl.col("observation") == "Average")["rule"] == 1.0).all()  # the silver labels are the rule labeler's


@pytest.mark.parametrize("overlays", SHIPPED, ids=["config", "openi", "mimic", "smoke"])
def test_the_shipped_configs_pass_the_schema_and_the_cross_key_checks(overlays):
    checked_config(*overlays)


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ({"llm": {"sft": {"num_train_epochs": -1}}}, "['llm']['sft']['num_train_epochs']"),
        ({"llm": {"sft": {"num_train_epochs": "eight"}}}, "['llm']['sft']['num_train_epochs']"),
        ({"llm": {"sft": {"num_train_epoch": 8}}}, "'num_train_epoch' was unexpected"),
        ({"llm": {"sft": {"learning_rate": 0}}}, "['llm']['sft']['learning_rate']"),
        ({"llm": {"sft": {"lr_scheduler_type": "cosin"}}}, "['llm']['sft']['lr_scheduler_type']"),
        ({"rlhf": {"ppo": {"total_episodes": -64}}}, "['rlhf']['ppo']['total_episodes']"),
        ({"rlhf": {"ppo": {"kl_coeff": 0.05}}}, "'kl_coeff' was unexpected"),
        ({"rlhf": {"grpo": {"num_generations": 1}}}, "['rlhf']['grpo']['num_generations']"),
        ({"rlhf": {"rloo": {"max_step": 16}}}, "'max_step' was unexpected"),
        ({"rlhf": {"reward": {"per_device_train_batch_size": 0}}}, "['rlhf']['reward']['per_device_train_batch_size']"),
        ({"expert": {"second_stage": {"llm": {"num_train_epochs": -2}}}}, "['expert']['second_stage']['llm']['num_train_epochs']"),
        ({"expert": {"second_stage": {"bert": {"epoch": 2}}}}, "'epoch' was unexpected"),
        ({"figures": {"labels": {"spt": "LLM"}}}, "['figures']['labels']"),
        ({"resources": {"sfft": {"threads": 4}}}, "['resources']"),
    ],
)
def test_the_schema_types_every_trainer_and_refuses_unknown_keys_naming_the_key(extra, where):
    from snakemake.exceptions import WorkflowError

    with pytest.raises(WorkflowError) as error:
        checked_config(extra)
    message = str(error.value)
    assert "ValidationError" in message or "validating" in message
    assert where in message.replace('"', "'"), message[-2000:]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"demo": {"split_fractions": [0.1, 0.1, 0.1]}}, "demo.split_fractions: the train, validate and test fractions sum to 0.3, not 1"),
        ({"demo": {"split_fractions": [1, 1, 1]}}, "demo.split_fractions: the train, validate and test fractions sum to 3, not 1"),
        ("config/openi.yaml", None),  # the overlay below
        ({"figures": {"reference": "grpo"}}, "figures.reference: 'grpo' is not evaluated (evaluation.labelers: rule, bert, sft, ppo)"),
        ({"figures": {"baselines": ["rule", "rloo"]}}, "figures.baselines: 'rloo' is not evaluated"),
        ({"figures": {"baselines": ["rule", "sft"]}}, "figures.baselines: 'sft' is figures.reference"),
        ({"evaluation": {"labelers": ["rule", "bert", "sft", "grpo"]}, "rlhf": {"grpo": {"num_generations": 3}}}, "rlhf.grpo.num_generations: 3 does not divide the batch of 8"),
    ],
)
def test_rules_across_keys_are_checked_before_the_dag_naming_the_key(extra, problem):
    from cxrlabel.workflow_config import ConfigError

    overlays = ["config/openi.yaml", {"corpus": {"openi": {"split_fractions": {"train": 1, "validate": 1, "test": 1}}}}] if problem is None else [extra]
    with pytest.raises(ConfigError) as error:
        checked_config(*overlays)
    assert str(error.value).startswith(problem or "corpus.openi.split_fractions: the train, validate and test fractions sum to 3, not 1")


def test_the_snakefile_stops_at_a_cross_key_error_before_planning(tmp_path):
    result = snakemake("-n", "--configfile", overlay(tmp_path, {"figures": {"reference": "grpo"}}), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "figures.reference: 'grpo' is not evaluated" in output and "Building DAG" not in output, output[-2000:]


def test_the_trainer_fields_are_trl_config_fields_and_the_resources_name_rules():
    """Each trainer's fields in the schema are fields of the TRL config it is passed to (dtype
    aside), and resources' keys are the workflow's rules: the schema refuses nothing real."""
    import dataclasses

    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames
    from trl import GRPOConfig, RewardConfig, RLOOConfig, SFTConfig
    from trl.experimental.ppo import PPOConfig

    defs = yaml.safe_load(SCHEMA.read_text())["$defs"]
    common = set(defs["training_arguments"]["properties"]) - {"dtype"}
    for name, classes in {"sft_config": [SFTConfig], "reward_config": [RewardConfig], "ppo_config": [PPOConfig], "group_config": [GRPOConfig, RLOOConfig]}.items():
        for config_class in classes:
            fields = {field.name for field in dataclasses.fields(config_class)}
            assert common | set(defs[name]["properties"]) <= fields, (name, config_class.__name__, (common | set(defs[name]["properties"])) - fields)
    assert set(defs["training_arguments"]["properties"]["optim"]["enum"]) <= {o.value for o in OptimizerNames}
    assert set(defs["training_arguments"]["properties"]["lr_scheduler_type"]["enum"]) <= {s.value for s in SchedulerType}
    rules = set(re.findall(r"^(?:local)?rule (\w+):", "".join(path.read_text() for path in (ROOT / "rules").glob("*.smk")), re.MULTILINE))
    named = set(yaml.safe_load(SCHEMA.read_text())["properties"]["resources"]["propertyNames"]["enum"])
    assert named == rules | {"max_threads", "default"}
