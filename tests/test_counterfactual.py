"""dermo.pipeline.counterfactual and val_counterfactual_accuracy: hand-made 2x2 images with answers by hand."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from dermo.model.names import PROBS_LAYER
from dermo.pipeline.counterfactual import donor_pool, swap_with_other_class
from dermo.training.callbacks import ValidationMetrics

M0 = np.array([[1, 0], [0, 0]], np.float32)[..., None]      # image 0's lesion: top-left pixel
M1 = np.array([[0, 0], [0, 1]], np.float32)[..., None]      # image 1's lesion: bottom-right pixel


def batch(values, masks, labels, k=2):
    x = np.stack([np.full((2, 2, 3), v, np.float32) for v in values])
    return x, (np.eye(k, dtype=np.float32)[labels], np.stack(masks))


def threshold_model(sign=1):
    """Probabilities of 2x2 images: class 1 when the mean pixel exceeds 40 (sign 1) or stays below it (sign -1)."""
    inputs = keras.Input((2, 2, 3))
    dense = keras.layers.Dense(2, activation="softmax", name=PROBS_LAYER)
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([sign * np.array([[-1, 1]] * 3, np.float32) / 3, sign * np.array([40, -40], np.float32)])
    return model


def test_each_lesion_goes_onto_the_other_class_surroundings_by_hand():
    # donors: image 0 (class 0, all 10) -> outside [[127.5, 10], [10, 10]]; image 1 (class 1, all 20) ->
    # [[20, 20], [20, 127.5]]. x̂_0 = its lesion (10) on class 1's outside; x̂_1 = its lesion (20) on class 0's
    x, (y, m) = batch([10, 20], [M0, M1], [0, 1])
    donors = donor_pool([(x, (y, m))], 2)
    np.testing.assert_array_equal(donors[0][..., 0], [[[127.5, 10], [10, 10]]])
    np.testing.assert_array_equal(donors[1][..., 0], [[[20, 20], [20, 127.5]]])
    x_hat, valid = swap_with_other_class(x, m, [0, 1], donors)
    np.testing.assert_array_equal(x_hat[..., 0], [[[10, 20], [20, 127.5]], [[127.5, 10], [10, 20]]])
    assert (x_hat[..., 0] == x_hat[..., 2]).all() and valid.tolist() == [True, True]


def test_empty_masks_and_missing_classes_are_not_valid():
    x, (y, m) = batch([10, 20], [M0, np.zeros_like(M1)], [0, 1])
    x_hat, valid = swap_with_other_class(x, m, [0, 1], donor_pool([(x, (y, m))], 2))
    assert valid.tolist() == [True, False] and (x_hat[1] == x[1]).all()    # nothing of its own to keep
    only_zero = donor_pool([(x[:1], (y[:1], m[:1]))], 2)
    assert list(only_zero) == [0]
    assert swap_with_other_class(x[:1], m[:1], [0], only_zero)[1].tolist() == [False]   # no other class


def test_donors_cycle_over_the_other_classes_then_their_images():
    # donors: class 1 = images valued 1 and 2, class 2 = 3 and 4 (each with lesion M1). Four class-0 images at
    # positions n = 0..3 take class 1, 2, 1, 2 and, of each, donor n // 2 = 0, 0, 1, 1: outsides 1, 3, 2, 4
    xd, (yd, md) = batch([1, 2, 3, 4], [M1] * 4, [1, 1, 2, 2], k=3)
    donors = donor_pool([(xd[:2], (yd[:2], md[:2])), (xd[2:], (yd[2:], md[2:]))], 3, per_class=2)
    x, (_, m) = batch([50] * 4, [M0] * 4, [0] * 4, k=3)
    x_hat, _ = swap_with_other_class(x, m, [0] * 4, donors)
    assert x_hat[:, 0, 1, 0].tolist() == [1, 3, 2, 4] and (x_hat[:, 0, 0, 0] == 50).all()
    x_hat2, _ = swap_with_other_class(x[:2], m[:2], [0, 0], donors, start=2)     # positions 2, 3 of the set
    np.testing.assert_array_equal(x_hat2, x_hat[2:])


def test_donor_pool_reads_only_as_far_as_it_needs():
    first = batch([10, 20], [M0, M1], [0, 1])

    class Batches(list):
        read = 0

        def __getitem__(self, i):
            Batches.read = max(Batches.read, i + 1)
            return list.__getitem__(self, i)
    donors = donor_pool(Batches([first, first, first]), 2, per_class=1)
    assert Batches.read == 1 and {c: len(d) for c, d in donors.items()} == {0: 1, 1: 1}


def test_val_counterfactual_accuracy_is_the_accuracy_on_the_swapped_images():
    # a model that says class 1 when the mean pixel exceeds 40: originals 10, 20 -> class 0, 0 (accuracy 1/2);
    # swapped means (10 + 20 + 20 + 127.5) / 4 = 44.4 -> 1 (label 0: wrong), (127.5 + 10 + 10 + 20) / 4 = 41.9 -> 1
    # (label 1: right): counterfactual accuracy 1/2
    model = threshold_model()
    callback = ValidationMetrics([batch([10, 20], [M0, M1], [0, 1])], 2)
    callback.set_model(model)
    logs = {"val_loss": 1.0}
    callback.on_epoch_end(0, logs)
    assert logs["val_counterfactual_accuracy"] == pytest.approx(0.5)
    labels, probs = callback.predict()
    assert probs.argmax(1).tolist() == [0, 0] and labels.tolist() == [0, 1]


@pytest.mark.parametrize("sign, accuracy, counterfactual", [(1, 1.0, 0.5), (-1, 0.0, 0.5)])
def test_val_worst_accuracy_is_the_lower_of_plain_and_counterfactual_accuracy(sign, accuracy, counterfactual):
    # originals 10 (label 0), 60 (label 1); swapped (hand, as above): x̂_0 = [[10, 60], [60, 127.5]] (mean 64.4),
    # x̂_1 = [[127.5, 10], [10, 60]] (mean 51.9). sign 1: class 1 when the mean exceeds 40 -> originals 0, 1 (both
    # right), swapped 1, 1 (one right). sign -1: class 1 below 40 -> originals 1, 0 (both wrong), swapped 0, 0 (one
    # right): the net reads its input the wrong way round and still scores 1/2 on the swapped images alone
    model = threshold_model(sign)
    callback = ValidationMetrics([batch([10, 60], [M0, M1], [0, 1])], 2)
    callback.set_model(model)
    logs = {"val_loss": 1.0}
    callback.on_epoch_end(0, logs)
    assert logs["val_counterfactual_accuracy"] == pytest.approx(counterfactual)
    assert logs["val_worst_accuracy"] == pytest.approx(min(accuracy, counterfactual))
    x, (y, m) = batch([10, 20], [M0, M1], [0, 0])                  # one class: no donor of another, NaN
    callback = ValidationMetrics([(x, (y, m))], 2)
    callback.set_model(model)
    logs = {"val_loss": 1.0}
    callback.on_epoch_end(0, logs)
    assert np.isnan(logs["val_counterfactual_accuracy"]) and np.isnan(logs["val_worst_accuracy"])
