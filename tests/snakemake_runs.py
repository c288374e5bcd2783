"""Running the workflow from tests: snakemake in the repository root, and config overlays that
send every output of the embedded default (or of its miniature, config/smoke.yaml) into a test's
own directory."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from conftest import ROOT


def snakemake(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["snakemake", *args], cwd=ROOT, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


#: config/smoke.yaml: the embedded default in miniature, for the tests that check mechanics
SMOKE = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())


def job_blocks(log: str) -> list[tuple[str, str]]:
    """(rule, its indented block) of every job a Snakemake log or dry run lists (``rule X:`` or
    ``localrule X:``, then the job's ``input:``, ``wildcards:``, ``threads:`` ... lines)."""
    return re.findall(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n)*)", log, re.MULTILINE)


def overlay(directory: Path, extra: dict | None = None, smoke: bool = False) -> str:
    """A config overlay that sends every output under ``directory``: the embedded default
    otherwise, or with ``smoke`` its miniature (config/smoke.yaml), then ``extra`` over it."""
    demo_dir = f"{directory}/demo_corpus"
    names = {"reports": "mimic-cxr-reports.zip", "silver_labels": "mimic-cxr-2.0.0-chexpert.csv.gz",
             "split": "mimic-cxr-2.0.0-split.csv.gz", "gold_labels": "mimic-cxr-2.1.0-test-set-labeled.csv"}
    config = {
        "results": str(directory / "results"),
        "demo": {"out_dir": demo_dir},
        "corpus": {"mimic": {key: f"{demo_dir}/{name}" for key, name in names.items()}},
    }
    path = directory / f"overlay-{len(list(directory.glob('overlay-*')))}.yaml"
    path.write_text(yaml.safe_dump(_merge(_merge(SMOKE if smoke else {}, config), extra or {})))
    return str(path)


def _merge(base: dict, extra: dict) -> dict:
    return {k: _merge(base[k], extra[k]) if isinstance(base.get(k), dict) and isinstance(extra.get(k), dict) else extra.get(k, base.get(k)) for k in base | extra}
