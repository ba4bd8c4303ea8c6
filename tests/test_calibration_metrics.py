"""Calibration and ensemble numbers against values computed by hand (dermo.metrics.calibration / .ensemble),
and the model contract's in-place update."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from dermo import metrics
from dermo.metrics.ensemble import combine, geometric_mean, rank_average, rank_scores

# 4 images, each [0.9, 0.1]; 3 of class 0: temperature scaling must give sigmoid(log 9 / T) = 3/4 -> T = 2
BIN_P = np.tile([0.9, 0.1], (4, 1))
BIN_Y = np.array([0, 0, 0, 1])
# 4 images, each [0.8, 0.1, 0.1]; half of class 0: 8^(1/T) / (8^(1/T) + 2) = 1/2 -> T = 3, p = [1/2, 1/4, 1/4]
MULTI_P = np.tile([0.8, 0.1, 0.1], (4, 1))
MULTI_Y = np.array([0, 0, 1, 2])


def test_ece_by_hand():
    # confidences 0.9, 0.82, 0.7, 0.62 in four different 1/15 bins; correct 1, 0, 1, 1
    p = np.array([[0.9, 0.1], [0.82, 0.18], [0.3, 0.7], [0.38, 0.62]])
    y = np.array([0, 1, 1, 1])
    assert metrics.expected_calibration_error(y, p) == pytest.approx((0.1 + 0.82 + 0.3 + 0.38) / 4)
    # two images in bin (13/15, 14/15]: accuracy 1/2, mean confidence 0.915
    p2, y2 = np.array([[0.91, 0.09], [0.92, 0.08]]), np.array([0, 1])
    assert metrics.expected_calibration_error(y2, p2) == pytest.approx(0.415)
    r = metrics.reliability_bins(y2, p2)
    assert r["count"].tolist() == [0] * 13 + [2, 0]
    assert r["confidence"][13] == pytest.approx(0.915) and r["accuracy"][13] == 0.5
    assert np.isnan(r["accuracy"][0])
    assert metrics.expected_calibration_error(MULTI_Y, MULTI_P) == pytest.approx(0.3)     # conf .8, acc .5


def test_reliability_bins_are_closed_on_the_right():
    p = np.array([[0.75, 0.25], [0.76, 0.24], [1.0, 0.0], [0.5, 0.5]])
    r = metrics.reliability_bins([0, 0, 0, 0], p, bins=4)               # edges 0, .25, .5, .75, 1 exactly
    assert r["count"].tolist() == [0, 1, 1, 2]                          # .5 -> (.25,.5], .75 -> (.5,.75]


def test_brier_by_hand():
    p, y = np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1])
    assert metrics.brier_score(y, p) == pytest.approx((0.01 + 0.01 + 0.04 + 0.04) / 2)
    assert metrics.brier_score(y, p) == pytest.approx(2 * brier_score_loss(y, p[:, 1]))
    # y=0: .04+.01+.01 = .06; y=1 or 2: .64+.81+.01 = 1.46
    assert metrics.brier_score(MULTI_Y, MULTI_P) == pytest.approx((2 * 0.06 + 2 * 1.46) / 4)


@pytest.mark.parametrize("p, y, t, calibrated", [(BIN_P, BIN_Y, 2.0, [0.75, 0.25]),
                                                 (MULTI_P, MULTI_Y, 3.0, [0.5, 0.25, 0.25])])
def test_fit_temperature_by_hand(p, y, t, calibrated):
    fitted = metrics.fit_temperature(y, p)
    assert fitted == pytest.approx(t, rel=1e-4)
    np.testing.assert_allclose(metrics.apply_temperature(p, t), np.tile(calibrated, (4, 1)), atol=1e-12)


def test_calibration_numbers_before_and_after_by_hand():
    before = metrics.calibration_metrics(MULTI_Y, MULTI_P)
    after = metrics.calibration_metrics(MULTI_Y, metrics.apply_temperature(MULTI_P, 3.0))
    assert before == pytest.approx({"ece": 0.3, "brier": 0.76, "nll": -(np.log(0.8) + np.log(0.1)) / 2})
    # after: [.5,.25,.25] -> y=0: .25+.0625+.0625 = .375; y=1,2: .25+.5625+.0625 = .875
    assert after == pytest.approx({"ece": 0.0, "brier": 0.625, "nll": -(np.log(0.5) + np.log(0.25)) / 2})


def test_apply_temperature_keeps_the_argmax_and_survives_underflowed_zeros():
    p = np.array([[1.0, 0.0], [0.2, 0.8], [0.5, 0.5]])
    np.testing.assert_allclose(metrics.apply_temperature(p, 1.0), p, atol=1e-15)
    hot = metrics.apply_temperature(p, 4.0)
    assert np.isfinite(hot).all() and (hot.argmax(1) == p.argmax(1)).all()
    z = np.log(np.float32(np.finfo(np.float32).tiny)) / 4                # log p of p = 0, kept at float32 tiny
    assert hot[0, 1] == pytest.approx(np.exp(z) / (1 + np.exp(z)), rel=1e-9)
    assert hot[1, 1] == pytest.approx(0.8 ** 0.25 / (0.8 ** 0.25 + 0.2 ** 0.25))
    with pytest.raises(ValueError, match="positive"):
        metrics.apply_temperature(p, 0.0)


A = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
B = np.array([[0.5, 0.5], [0.7, 0.3], [0.4, 0.6]])


def test_geometric_mean_by_hand():
    # row 0: sqrt(.9·.5) : sqrt(.1·.5) = 3 : 1
    assert geometric_mean([A, B])[0] == pytest.approx([0.75, 0.25])
    # weights 1, 3: (.8^.25 .5^.75) : (.2^.25 .5^.75) = sqrt(2) : 1
    out = geometric_mean([np.array([[0.8, 0.2]]), np.array([[0.5, 0.5]])], weights=[1, 3])
    assert out[0] == pytest.approx([np.sqrt(2) / (1 + np.sqrt(2)), 1 / (1 + np.sqrt(2))])
    np.testing.assert_allclose(geometric_mean([A, B]).sum(1), 1.0)


def test_rank_average_by_hand():
    # A: class 0 ranks 3,2,1 -> 1, .5, 0; class 1 -> 0, .5, 1. B: class 0 ranks 2,3,1 -> .5, 1, 0; class 1 -> .5, 0, 1
    np.testing.assert_allclose(rank_average([A, B]), [[0.75, 0.25], [0.75, 0.25], [0.0, 1.0]])
    np.testing.assert_allclose(rank_average([A, B], weights=[1, 3]), [[0.625, 0.375], [0.875, 0.125], [0, 1]])
    tied = np.array([[0.5, 0.5], [0.5, 0.5], [0.1, 0.9]])                   # ties share the average rank 2.5
    np.testing.assert_allclose(rank_scores(tied), [[0.75, 0.25], [0.75, 0.25], [0.0, 1.0]])
    assert rank_scores(np.array([[0.3, 0.7]])).tolist() == [[0.5, 0.5]]


def test_combine_dispatches_and_soft_vote_stays_the_weighted_mean():
    np.testing.assert_allclose(combine("mean", [A, B], [1, 3]), 0.25 * A + 0.75 * B)
    np.testing.assert_allclose(combine("geometric", [A, B]), geometric_mean([A, B]))
    np.testing.assert_allclose(combine("rank", [A, B]), rank_average([A, B]))
    with pytest.raises(ValueError, match="unknown ensemble method"):
        combine("median", [A, B])


def test_multiclass_auc_takes_scores_and_equals_sklearn_on_probabilities():
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    p = rng.dirichlet([1, 1, 1], size=30)
    assert metrics.auc_score(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
    scores = rank_average([p, rng.dirichlet([1, 1, 1], size=30)])            # rows do not sum to 1
    expected = np.mean([roc_auc_score(y == k, scores[:, k]) for k in range(3)])
    assert metrics.auc_score(y, scores) == pytest.approx(expected)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_update_contract_replaces_keys_in_place(tmp_path, suffix):
    import keras

    from dermo.run.contract import KERAS_MEMBER, embed_contract, read_contract, update_contract

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    path = tmp_path / f"m{suffix}"
    model.save(path)
    embed_contract(path, {"classes": ["a", "b"], "temperature": 5.0})
    new = update_contract(path, {"temperature": 1.5})
    assert new == read_contract(path) and new["temperature"] == 1.5 and new["classes"] == ["a", "b"]
    if suffix == ".keras":
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            assert names.count(KERAS_MEMBER) == 1
            assert json.loads(z.read(KERAS_MEMBER))["temperature"] == 1.5
    reloaded = keras.models.load_model(path, compile=False)
    np.testing.assert_array_equal(reloaded.get_layer("d").kernel.numpy(), model.get_layer("d").kernel.numpy())
    assert not list(tmp_path.glob(".tmp-*"))
