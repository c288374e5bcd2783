"""The Snakemake workflow itself: lint, formatting, the DAG, and a real run of the embedded default."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import ROOT


def snakemake(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["snakemake", *args], cwd=ROOT, capture_output=True, text=True, check=check)


def overlay(tmp_path: Path, n_studies: int = 300) -> str:
    """A config overlay that sends every output under tmp_path and shrinks the demo corpus."""
    demo_dir = f"{tmp_path}/demo_corpus"
    names = {"reports": "mimic-cxr-reports.zip", "silver_labels": "mimic-cxr-2.0.0-chexpert.csv.gz",
             "split": "mimic-cxr-2.0.0-split.csv.gz", "gold_labels": "mimic-cxr-2.1.0-test-set-labeled.csv"}
    config = {
        "results": str(tmp_path / "results"),
        "demo": {"out_dir": demo_dir, "n_studies": n_studies},
        "corpus": {"mimic": {key: f"{demo_dir}/{name}" for key, name in names.items()}},
    }
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_lint_is_clean():
    result = snakemake("--lint", check=False)
    assert "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


def test_snakefmt_is_quiet():
    result = subprocess.run(["snakefmt", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/openi.yaml", "config/mimic.yaml"])
def test_every_config_validates_and_plans(configfile, tmp_path):
    result = snakemake("-n", "--configfile", configfile, "--config", f"results={tmp_path}", check=False)
    output = result.stdout + result.stderr
    if configfile == "config/mimic.yaml":  # the MIMIC-CXR files are the user's own: only they are missing
        assert "MissingInputException" in output and "mimic-cxr-2.1.0-test-set-labeled.csv" in output, output
    else:
        assert result.returncode == 0, output


def test_embedded_default_runs_and_accounts_for_every_record(tmp_path):
    config = overlay(tmp_path)
    snakemake("--cores", "2", "--configfile", config)
    results = tmp_path / "results"
    summary = json.loads((results / "corpus/ingest_summary.json").read_text())
    assert summary["kept"]["reports"] == 300 and summary["dropped"] == {}
    train = pl.read_parquet(results / "instruct/instruct_train.parquet")
    assert train.height == summary["kept"]["reports_by_split"]["train"]
    assert (results / "benchmarks/ingest.tsv").is_file()
    # nothing is stale after a run
    assert "Nothing to be done" in snakemake("-n", "--configfile", config).stdout


def test_paper_config_runs_on_files_shaped_like_mimic_cxr(tmp_path):
    from mimic_fixture import write_release

    release = write_release(tmp_path / "mimic", as_zip=True)
    path = tmp_path / "paths.yaml"
    path.write_text(yaml.safe_dump({"results": str(tmp_path / "results"), "corpus": {"mimic": {k: str(v) for k, v in release.items()}}}))
    snakemake("--cores", "1", "--configfile", "config/mimic.yaml", str(path), "--", str(tmp_path / "results/instruct/instruct_train.parquet"))
    summary = json.loads((tmp_path / "results/corpus/ingest_summary.json").read_text())
    assert summary["kept"]["reports"] == 7 and summary["dropped"]["no_split"] == 2
