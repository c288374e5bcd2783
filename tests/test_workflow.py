"""One real run of the whole DAG (every stage, from the demo corpus to the figures) that these
tests inspect and rerun: the embedded default in miniature (config/smoke.yaml), since they check
mechanics; the embedded default itself runs whole in the Slurm stage (tests/cluster), which also
checks what its labelers learn. Lint, formatting and the other configs: test_workflow_configs.py."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from review_browser import ReviewServer, chromium, free_port, require_browser
from snakemake_runs import SMOKE, job_blocks, overlay, snakemake

TRAINING_RULES = {"bert_train", "base_model", "sft", "preferences", "reward_model", "rl_policy"}


def planned_jobs(*configfiles: str, targets: tuple[str, ...] = ()) -> set[str]:
    """The rules a dry run would execute (for ``targets``, by default rule all's)."""
    output = snakemake("-n", "--configfile", *configfiles, *(("--", *targets) if targets else ())).stdout
    return {name for name, _ in job_blocks(output)} - {"all"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict:
    """The whole DAG of the embedded default in miniature (config/smoke.yaml), run once for real
    (every stage, on CPU)."""
    directory = tmp_path_factory.mktemp("pipeline")
    config = overlay(directory, smoke=True)
    snakemake("--cores", "2", "--configfile", config)
    return {"dir": directory, "config": config, "results": directory / "results"}


def test_pipeline_accounts_for_every_record(pipeline):
    summary = json.loads((pipeline["results"] / "corpus/ingest_summary.json").read_text())
    assert summary["kept"]["reports"] == SMOKE["demo"]["n_studies"] and summary["dropped"] == {}
    train = pl.read_parquet(pipeline["results"] / "instruct/instruct_train.parquet")
    assert train.height == summary["kept"]["reports_by_split"]["train"]


def test_pipeline_writes_every_table_and_figure(pipeline):
    tables = pipeline["results"] / "tables"
    table1 = pl.read_csv(tables / "table1_weighted_f1.csv")
    assert table1.columns == ["observation", "rule", "bert", "sft", "ppo", "metric"]
    assert table1["observation"].to_list()[-1] == "Average" and table1.height == 15
    pairs = pl.read_csv(tables / "table3_significance.csv")
    assert pairs.height == 6 and pairs["t_p_value"].is_between(0, 1).all()
    for name in ("table1_average_ci", "table2_positive_negative_f1", "table4_f1_by_certainty", "table5_f1_by_length", "table6_errors_per_report", "table7_agreement_with_silver"):
        assert pl.read_csv(tables / f"{name}.csv").height >= 3, name
    robustness = pl.read_csv(tables / "robustness.csv")
    assert set(robustness["labeler"]) == {"rule", "sft"} and robustness["verdict"].is_not_null().all()
    assert robustness.filter(pl.col("labeler") == "rule", pl.col("meaning_preserving"))["passes"].all()
    guard = pl.read_csv(tables / "table8_rl_guard.csv")
    assert guard["labeler"].to_list() == ["sft", "ppo", "gold"] and guard["positives_per_report"].is_not_null().all()
    curves = pl.read_csv(pipeline["results"] / "models/ppo/rl_curves.csv")  # 16 episodes, 8 an update
    assert curves.height == SMOKE["rlhf"]["ppo"]["total_episodes"] // 8 and curves["reward"].is_not_null().all() and curves["format_error_rate"].is_between(0, 1).all()
    calibration = pl.read_csv(tables / "table9_calibration.csv")  # the demo's gold covers validate and test, 4-class
    assert calibration["labeler"].to_list() == ["bert", "sft", "ppo"] and set(calibration["fitted_on"]) == set(calibration["evaluated_on"]) == {"gold"}
    assert calibration["ece_after"].is_between(0, 1).all() and (calibration["temperature"] > 0).all()
    assert json.loads((pipeline["results"] / "models/sft.calibration.json").read_text())["fitted_on"] == "gold"
    for figure in ("f1_by_observation", "f1_difference_heatmap", "f1_by_length", "robustness_flip_rates", "rl_curves", "reliability"):
        assert (pipeline["results"] / f"figures/{figure}.png").stat().st_size > 10_000
    for rule in ("demo_corpus", "ingest", "instruct", "sft", "ppo", "evaluate"):
        assert (pipeline["results"] / f"benchmarks/{rule}.tsv").is_file()


def test_reward_model_and_preferences_are_real(pipeline):
    pairs = pl.read_parquet(pipeline["results"] / "rlhf/preferences.parquet")
    assert pairs.height > 50 and (pairs["margin"] > 0).all() and (pairs["chosen"] != pairs["rejected"]).all()
    metrics = json.loads((pipeline["results"] / "models/reward/reward_metrics.json").read_text())
    assert metrics["held_out_pairs"] > 0 and 0 <= metrics["eval_accuracy"] <= 1


def test_html_report_bundles_the_figures(pipeline):
    report = pipeline["dir"] / "report.html"
    snakemake("--configfile", pipeline["config"], "--report", str(report))
    html = report.read_text(errors="replace")
    assert report.stat().st_size > 100_000 and "f1_difference_heatmap.png" in html and "Absolute difference in per-observation F1" in html
    assert "rl_curves.png" in html and "shape of reward" in html


def test_nothing_is_stale_after_a_run(pipeline):
    assert planned_jobs(pipeline["config"]) == set()


def test_figure_styling_reruns_only_the_figures(pipeline):
    restyled = overlay(pipeline["dir"], {"figures": {"style": {"dpi": 90}}}, smoke=True)
    assert planned_jobs(restyled) == {"figures"}


def test_evaluation_settings_rerun_only_evaluation_and_figures(pipeline):
    changed = overlay(pipeline["dir"], {"evaluation": {"bootstrap_resamples": 500}}, smoke=True)
    planned = planned_jobs(changed)
    assert planned == {"evaluate", "significance", "figures"} and not planned & TRAINING_RULES


def test_inference_pace_settings_rerun_nothing(pipeline):
    """Batch and chunk sizes set the pace, not the labels (cxrlabel.predict.prediction_settings)."""
    paced = {"llm": {"inference": {"batch_size": 7, "chunk_size": 5}}, "labelers": {"rule": {"batch_size": 3}, "bert": {"batch_size": 3}}}
    assert planned_jobs(overlay(pipeline["dir"], paced, smoke=True)) == set()


def test_the_answer_room_reruns_the_llm_stages_and_nothing_they_do_not_read(pipeline):
    """llm.inference.max_new_tokens is stored with the SFT model: SFT and what follows it rerun."""
    planned = planned_jobs(overlay(pipeline["dir"], {"llm": {"inference": {"max_new_tokens": 96}}}, smoke=True))
    assert {"sft", "preferences", "reward_model", "rl_policy", "predict_llm"} <= planned
    assert not planned & {"demo_corpus", "ingest", "instruct", "base_model", "bert_train", "predict_bert", "predict_rule"}


def test_judge_settings_a_simulated_judge_does_not_read_rerun_nothing(pipeline):
    elsewhere = {"rlhf": {"human_judgements": str(pipeline["dir"] / "not-read.csv")}}
    assert planned_jobs(overlay(pipeline["dir"], elsewhere, smoke=True)) == set()


def test_expert_labels_train_two_stages_the_no_finding_model_and_the_expert_stage(pipeline, tmp_path):
    """expert.targets silver_then_expert with an expert-labels file of training reports, the
    learned No Finding and the expert stage: both trainers learn in two stages, the second on the
    file's reports alone, the trained labelers predict with the No Finding model and the expert
    stage (trained on the file's positives), and a file naming a test study stops the targets rule
    with the study named."""
    from cxrlabel.io.labels import read_labels, write_chexpert_csv

    run = tmp_path / "run"  # a copy: these settings must not replace the shared pipeline's models
    shutil.copytree(pipeline["dir"], run, symlinks=True)
    results = run / "results"
    for model in ("sft", "bert"):  # the first stages are the pipeline's models (the same rules, trained on silver)
        shutil.copytree(results / f"models/{model}", results / f"models/{model}_silver")
    reports = pl.read_parquet(results / "corpus/reports.parquet")
    silver, _ = read_labels(results / "corpus/labels_silver.parquet")
    train_ids = reports.filter(pl.col("split") == "train")["study_id"].head(60)
    # a radiologist's labels of 60 training reports: the silver ones, with every effusion called uncertain
    expert = silver.join(train_ids.to_frame(), on="study_id", how="semi").with_columns(
        pl.when(pl.col("Pleural Effusion").is_not_null()).then(-1).otherwise(None).cast(pl.Int8).alias("Pleural Effusion"))
    write_chexpert_csv(expert, run / "radiologist.csv")
    settings = {"expert": {"targets": "silver_then_expert", "labels": str(run / "radiologist.csv"), "no_finding": "learned",
                           "second_stage": {"llm": {"max_steps": 10}, "bert": {"epochs": 1}}, "no_finding_model": {"epochs": 20},
                           "stage": "learned", "stage_model": {"min_positives": 5, "epochs": 5}}}
    targets = [str(results / p) for p in ("predictions/sft.parquet", "predictions/bert.parquet", "corpus/targets_summary.json")]
    snakemake("--cores", "2", "--rerun-triggers", "mtime", "--configfile", overlay(run, settings, smoke=True), "--", *targets)
    summary = json.loads((results / "corpus/targets_summary.json").read_text())
    assert summary["file_reports"] == 60 and summary["expert_sets"][-1]["kind"] == "full"
    assert set(summary["changed"]["Pleural Effusion"]) <= {"positive -> uncertain", "negative -> uncertain"}
    second = pl.read_parquet(results / "instruct/instruct_expert.parquet")
    assert set(second["study_id"]) == set(train_ids) and not second["completion"].str.contains('"Pleural Effusion": "(positive|negative)"').any()
    for model in ("sft_silver", "sft", "bert_silver", "bert", "no_finding", "expert_stage"):
        assert (results / f"models/{model}").is_dir(), model
    assert "starting from the trained labeler" in (results / "logs/bert.log").read_text()
    for log in ("predict_sft", "predict_bert"):
        text = (results / f"logs/{log}.log").read_text()
        assert f"also normal by the learned model in {results / 'models/no_finding'}" in text, log
        assert f"labels corrected by the learned model in {results / 'models/expert_stage'}" in text, log
    assert "no finding" in (results / "logs/no_finding_model.log").read_text()
    staged = json.loads((results / "models/expert_stage/cxrlabel_expert_stage.json").read_text())
    assert staged["training"]["training_reports"] == 60 and "Pleural Effusion" not in staged["observations"]  # the file calls every effusion uncertain
    leaky = expert.vstack(silver.join(reports.filter(pl.col("split") == "test").head(1).select("study_id"), on="study_id", how="semi"))
    write_chexpert_csv(leaky, run / "radiologist.csv")
    failed = snakemake("--cores", "1", "--rerun-triggers", "mtime", "--configfile", overlay(run, settings, smoke=True), "--", targets[-1], check=False)
    test_study = reports.filter(pl.col("split") == "test")["study_id"][0]
    assert failed.returncode != 0 and test_study in (results / "logs/targets.log").read_text()


def test_same_config_same_predictions(pipeline):
    """Deterministic: rerunning a labeler with the same config gives the same predictions."""
    paths = {name: pipeline["results"] / f"predictions/{name}.parquet" for name in ("sft", "bert")}
    before = {name: pl.read_parquet(path) for name, path in paths.items()}
    for path in paths.values():
        shutil.move(path, path.with_suffix(".previous"))
    snakemake("--cores", "2", "--configfile", pipeline["config"], "--", *map(str, paths.values()))  # side by side
    for name, path in paths.items():
        assert pl.read_parquet(path).equals(before[name]), name


def test_radiologists_judge_in_a_browser_and_the_reward_model_learns_from_their_judgements(pipeline, tmp_path):
    """The review_set rule's pairs, judged in headless Chromium (by click and by key), survive a
    reload and a killed server, and feed the preferences rule and the reward model (judge: human)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    from cxrlabel.training.rlhf import held_out

    require_browser()
    run = tmp_path / "run"  # a copy: the human judge must not replace the shared pipeline's preferences
    shutil.copytree(pipeline["dir"], run, symlinks=True)
    pairs_csv, judgements = run / "results/review/pairs.csv", tmp_path / "radiologist_judgements.csv"
    two_candidates = {"rlhf": {"candidates": 2}}  # half the sampling of the default's 4: a pair per report at most
    snakemake("--cores", "2", "--rerun-triggers", "mtime", "--configfile", overlay(run, two_candidates, smoke=True), "--", str(pairs_csv))
    # the review set depends on the sampling settings only, not on the judge's or its judgements file
    not_sampling = {"rlhf": two_candidates["rlhf"] | {"judge": "human", "human_judgements": str(tmp_path / "not-yet.csv")}}
    assert planned_jobs(overlay(run, not_sampling, smoke=True), targets=(str(pairs_csv),)) == set()
    pairs = pl.read_csv(pairs_csv, infer_schema=False)
    assert pairs.height > 20 and pairs.columns == ["pair_id", "study_id", "text", "output_a", "output_b"]

    server = ReviewServer(pairs_csv, judgements, free_port(), tmp_path / "server.log").start()
    try:
        with chromium() as browser:
            browser.get(server.url)
            browser.find_element(By.ID, "annotator").send_keys("Dr Rivera")
            browser.find_element(By.ID, "begin").click()
            progress = lambda: browser.find_element(By.ID, "progress").text
            assert progress() == f"Pair 1 of {pairs.height}"
            assert browser.find_element(By.ID, "report-text").text.split() == pairs["text"][0].split()
            browser.find_element(By.ID, "comment").send_keys("A misses the effusion")
            browser.find_element(By.ID, "choose-a").click()  # by click
            assert progress() == f"Pair 2 of {pairs.height}"
            browser.find_element(By.TAG_NAME, "body").send_keys("b")  # by key
            WebDriverWait(browser, 30).until(lambda _: progress() == f"Pair 3 of {pairs.height}")
            browser.find_element(By.TAG_NAME, "body").send_keys("B")
            WebDriverWait(browser, 30).until(lambda _: progress() == f"Pair 4 of {pairs.height}")
            browser.refresh()
            assert progress() == f"Pair 4 of {pairs.height}"  # a reload resumes
            browser.save_screenshot(str(tmp_path / "review.png"))
            server.kill()
            assert len(pl.read_csv(judgements)) == 3  # on disk before the server died
            server.start()
            browser.refresh()
            assert progress() == f"Pair 4 of {pairs.height}" and browser.find_element(By.CSS_SELECTOR, "input[name=pair_id]").get_attribute("value") == pairs["pair_id"][3]
    finally:
        server.kill()
    judged = pl.read_csv(judgements, infer_schema=False)
    assert judged["preferred"].to_list() == ["a", "b", "b"] and judged["pair_id"].to_list() == pairs["pair_id"][:3].to_list()
    assert judged["comment"][0] == "A misses the effusion" and (judged["annotator"] == "Dr Rivera").all()

    # hold out some of the judged reports' pairs: three judgements, so pick the fraction that splits them
    studies = judged["study_id"].to_list()
    fraction = next(f for f in (0.2, 0.35, 0.5, 0.65, 0.8) if 0 < sum(held_out(s, f, 0) for s in studies) < len(studies))
    human = overlay(run, {"rlhf": {"judge": "human", "human_judgements": str(judgements), "held_out_fraction": fraction, "candidates": 2}}, smoke=True)
    snakemake("--cores", "2", "--rerun-triggers", "mtime", "--configfile", human, "--", str(run / "results/models/reward"))
    preferences = pl.read_parquet(run / "results/rlhf/preferences.parquet")
    assert preferences.height == 3 and (preferences["source"] == "human").all()
    chosen = [row["output_a"] if row["preferred"] == "a" else row["output_b"] for row in judged.iter_rows(named=True)]
    assert preferences["chosen"].to_list() == [c.strip() for c in chosen]
    metrics = json.loads((run / "results/models/reward/reward_metrics.json").read_text())
    assert metrics["train_pairs"] + metrics["held_out_pairs"] == 3 and metrics["train_pairs"] > 0
