"""Every rule's conda env exists, parses, and pins what pyproject.toml pins (conda cannot run here)."""

from __future__ import annotations

import re
import tomllib

import yaml

from conftest import ROOT

PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>\S+)$")


def project_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values() for s in extra]
    pins = {m["name"].lower(): m["version"] for m in map(PIN.match, specs) if m}
    assert len(pins) == len(specs), "every dependency in pyproject.toml is pinned with =="
    return pins


def conda_paths() -> set[str]:
    paths = set()
    for smk in (ROOT / "rules").glob("*.smk"):
        paths |= set(re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()))
    return paths


def test_every_rule_declares_an_existing_env():
    rules = sum(smk.read_text().count("\nrule ") + smk.read_text().startswith("rule ") for smk in (ROOT / "rules").glob("*.smk"))
    declared = sum(smk.read_text().count("conda:") for smk in (ROOT / "rules").glob("*.smk"))
    assert rules and declared == rules
    for path in conda_paths():
        assert (ROOT / "rules" / path).resolve().is_file(), path


def test_env_pins_agree_with_pyproject():
    pins = project_pins()
    for env_file in (ROOT / "envs").glob("*.yaml"):
        env = yaml.safe_load(env_file.read_text())
        assert env["channels"][0] == "conda-forge"
        assert "python=3.11" in env["dependencies"]
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        assert "--editable .." in pip, f"{env_file.name} installs the cxrlabel package"
        for spec in pip:
            if spec.startswith("--"):
                continue
            match = PIN.match(spec)
            assert match, f"{env_file.name}: {spec} is not pinned"
            assert pins.get(match["name"].lower()) == match["version"], f"{env_file.name}: {spec} disagrees with pyproject.toml"
