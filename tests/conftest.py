from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # the fixture builders beside the tests


@pytest.fixture(scope="session")
def openi_csv() -> Path:
    """The real OpenI dev CSV in ../shared/data/openi (override with CXRLABEL_OPENI_CSV)."""
    path = Path(os.environ.get("CXRLABEL_OPENI_CSV", ROOT.parent / "shared/data/openi/openi_dev.csv"))
    assert path.is_file(), f"OpenI dev CSV not found at {path}: set CXRLABEL_OPENI_CSV"
    return path


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    """The micro base model (tests/micro_models.py), built once per run."""
    from micro_models import build_base

    return build_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="session")
def tuned(base, tmp_path_factory) -> Path:
    """The micro model tuned to the rule labeler's answers (tests/micro_models.py), once per run."""
    from micro_models import build_tuned

    return build_tuned(base, tmp_path_factory.mktemp("tuned"))
