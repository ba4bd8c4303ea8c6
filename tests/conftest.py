"""Shared fixtures: repo root on sys.path, quiet TF, a per-session preprocessing cache, tiny datasets."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ISIC = SHARED / "data" / "isic-uda1"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Never touch the user's ~/.cache/dermo from tests."""
    os.environ["DERMO_CACHE"] = str(tmp_path_factory.mktemp("dermo-cache"))


@pytest.fixture(scope="session")
def isic_dir():
    if not (ISIC / "metadata.csv").exists():
        pytest.skip("../shared/data/isic-uda1 not available")
    return ISIC
