"""Bootstrap intervals of balanced accuracy (dermo.metrics.bootstrap) on hand-made cases whose answer is known
without resampling, and against a plain numpy bootstrap written here."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from dermo.metrics.bootstrap import balanced_accuracy_interval, paired_difference_interval


def test_perfect_and_constant_predictions_have_degenerate_intervals():
    y = np.repeat([0, 1, 2], 20)
    assert balanced_accuracy_interval(y, y, resamples=200) == (1.0, 1.0)
    # one model perfect, the other always class 0: on every resample BA = 1 and 1/3 → the difference is 2/3
    diff, low, high = paired_difference_interval(y, y, np.zeros_like(y), resamples=200)
    assert diff == pytest.approx(2 / 3) and low == pytest.approx(2 / 3) and high == pytest.approx(2 / 3)
    assert paired_difference_interval(y, y, y, resamples=200) == (0.0, 0.0, 0.0)


def test_interval_matches_a_plain_numpy_percentile_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    pred = np.where(rng.random(400) < 0.7, y, rng.integers(0, 3, 400))
    low, high = balanced_accuracy_interval(y, pred, resamples=2000)
    idx = np.random.default_rng(1).integers(0, len(y), (2000, len(y)))
    reference = np.percentile([balanced_accuracy_score(y[i], pred[i]) for i in idx], [2.5, 97.5])
    ba = balanced_accuracy_score(y, pred)
    assert low < ba < high
    # two independent 2000-draw bootstraps: their percentiles agree to Monte-Carlo error (~0.005 here)
    np.testing.assert_allclose([low, high], reference, atol=0.01)


def test_pairing_narrows_the_interval_of_a_difference_between_correlated_models():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    a = np.where(rng.random(300) < 0.8, y, 1 - y)
    b = a.copy()
    b[rng.choice(300, 6, replace=False)] ^= 1                  # b differs from a on 6 images only
    diff, low, high = paired_difference_interval(y, a, b, resamples=1000)
    a_low, a_high = balanced_accuracy_interval(y, a, resamples=1000)
    assert low <= diff <= high and (high - low) < (a_high - a_low) / 2
