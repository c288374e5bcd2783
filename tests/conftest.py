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
