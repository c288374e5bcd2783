"""Every rule's conda env exists, parses, and pins what pyproject.toml pins (conda cannot run here);
``./dev`` stamps its .venv only after pip installed the pins."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib

import pytest
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


FAKE_PYTHON = """#!/bin/sh
# python3.11 as ./dev calls it: the version check passes; -m venv DIR makes DIR/bin/pip (which prints the
# warning ./dev filters, a pip error when it fails, and exits with PIP_STATUS) and DIR/bin/python
if [ "$1" = -m ]; then
    mkdir -p "$3/bin"
    printf '#!/bin/sh\\necho "WARNING: Location x is ignored"\\n' > "$3/bin/pip"
    printf '[ "$PIP_STATUS" = 0 ] || echo "ERROR: no matching distribution" >&2\\nexit $PIP_STATUS\\n' >> "$3/bin/pip"
    printf '#!/bin/sh\\nexit 0\\n' > "$3/bin/python"
    chmod +x "$3/bin/pip" "$3/bin/python"
fi
"""


@pytest.mark.parametrize("pip_status", [1, 0])
def test_dev_stamps_the_venv_only_when_pip_installed_it(tmp_path, pip_status):
    """./dev in a copy of the repository's script, a fake python3.11 first on PATH (the real .venv is
    never touched): a failed pip install stops it loudly with no stamp; a good one is stamped, its
    harmless location warnings filtered."""
    shutil.copy(ROOT / "dev", tmp_path / "dev")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["no-such-package==0"]\n')
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/python3.11").write_text(FAKE_PYTHON)
    (tmp_path / "bin/python3.11").chmod(0o755)
    env = os.environ | {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "PIP_STATUS": str(pip_status)}
    done = subprocess.run(["./dev", "echo", "ran"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    stamps = list((tmp_path / ".venv").glob(".installed-*"))
    assert "WARNING: Location" not in done.stderr
    if pip_status:
        assert done.returncode != 0 and "ran" not in done.stdout and not stamps
        assert "no matching distribution" in done.stderr and "pip install failed" in done.stderr
    else:
        assert done.returncode == 0 and done.stdout == "ran\n" and len(stamps) == 1, done.stderr
