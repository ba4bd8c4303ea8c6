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


@pytest.fixture(scope="module")
def cam_model64():
    """A B0 CAMModel at 64 px (2x2 feature maps, the smallest grid where the CAM terms are defined),
    random weights, random centres; one per test module."""
    import keras
    import numpy as np

    from dermo.cam_model import CAMModel, LossConfig
    from dermo.network import build_graph

    keras.utils.set_random_seed(0)
    inputs, outputs = build_graph("B0", 2, 64, "none")
    m = CAMModel(inputs, outputs, LossConfig())
    m.set_centers(np.random.default_rng(1).normal(size=tuple(m.centers.shape)).astype("float32"))
    return m
