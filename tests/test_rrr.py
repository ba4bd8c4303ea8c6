"""RRR, "right for the right reasons" (Ross et al. 2017): the pure term on hand values, the input gradients and
the double-backpropagated weight gradients of the TensorFlow step against central differences, and the exact batch moments that make TensorFlow's second order right. (The JAX step
against the TensorFlow step, RRR on: tests/test_jax_backend.py.)"""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from dermo.losses import log_prob_sum, rrr_loss
from dermo.model.cam_model import CAMModel, LossConfig
from dermo.model.network import build_graph

SIZE = 64


def npv(x):
    return np.asarray(ops.convert_to_numpy(x))


def test_rrr_hand_values():
    g = np.zeros((3, 2, 2, 1), "float32")
    g[0, ..., 0] = [[1, 2], [3, 4]]
    g[1, ..., 0] = [[5, 6], [7, 8]]
    g[2, ..., 0] = [[9, 9], [9, 9]]
    m = np.zeros((3, 2, 2, 1), "float32")
    m[0, 0, 0] = 1                               # image 0: lesion top-left -> 2² + 3² + 4² = 29 outside
    m[1] = 1                                     # image 1: all lesion -> 0
    # image 2: no lesion -> left out of the mean
    assert float(npv(rrr_loss(g, m, scale=1.0))) == pytest.approx((29 + 0) / 2)
    assert float(npv(rrr_loss(g, m))) == pytest.approx(29 / 2 * 255 ** 2, rel=1e-6)   # gradient w.r.t. x/255
    m[0, 0, 0] = 0.5                             # a soft mask weighs the gradient by (1 − m): 0.25·1 + 29
    assert float(npv(rrr_loss(g, m[..., 0], scale=1.0))) == pytest.approx((0.25 + 29) / 2)
    assert float(npv(rrr_loss(g, np.zeros_like(m), scale=1.0))) == 0.0                  # no lesion anywhere


def test_log_prob_sum_hand_value():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]], "float32")        # p = (1/2, 1/2), (3/4, 1/4)
    assert float(npv(log_prob_sum(logits))) == pytest.approx(2 * np.log(0.5) + np.log(0.75) + np.log(0.25),
                                                             rel=1e-6)


@pytest.fixture(scope="module")
def rrr_model():
    keras.utils.set_random_seed(5)
    inputs, outputs = build_graph("B0", 2, SIZE, "none")
    model = CAMModel(inputs, outputs, LossConfig(lambda_rrr=1.0))
    for layer in model.layers:                      # training mode without random drops: a deterministic function
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    return model


def batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[[0, 1, 0, 1]]
    m = np.zeros((4, SIZE, SIZE, 1), "float32")
    m[:, 12:44, 20:52] = 1
    return x, y, m


def test_input_gradients_equal_central_differences_of_the_summed_log_probabilities(rrr_model):
    x, _, m = batch()
    # training mode (batch statistics, dropout off): in inference mode an untrained B0's moving statistics
    # flatten the logits and every gradient is ~1e-15, which any tolerance would pass
    grads = npv(rrr_model.forward(x, m, training=True)["input_grads"])                  # (4,64,64,3)
    assert grads.shape == x.shape

    def total(xx):
        return float(npv(log_prob_sum(rrr_model(xx, training=True)["logits"])))

    h = 2.0                                                                             # grey levels
    for flat in np.argsort(np.abs(grads).ravel())[-3:]:                                 # the largest entries
        idx = np.unravel_index(flat, x.shape)
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        assert abs(grads[idx]) > 1e-6
        # measured relative error 2.0e-4–6.8e-4 (bound 0.05: > 70×)
        assert grads[idx] == pytest.approx((total(up) - total(down)) / (2 * h), rel=0.05, abs=0)


def test_training_gradient_of_rrr_equals_central_differences_through_the_whole_network(rrr_model):
    """Double backpropagation: ∂L_rrr/∂w by nested tapes against (L_rrr(w + h) − L_rrr(w − h))/2h, for a weight
    of the classifier and one of the stem convolution (the term's path through every layer)."""
    x, y, m = batch(1)

    def term():
        return rrr_model.loss_terms(y, m, rrr_model.forward(x, m, training=True))["rrr_loss"]

    variables = {v.path: v for v in rrr_model.trainable_variables}
    with tf.GradientTape() as tape:
        value = term()
    grads = dict(zip(variables, tape.gradient(value, list(variables.values()))))
    for name in ("classifier/kernel", "stem_conv/kernel"):
        path = next(p for p in variables if p.endswith(name))
        var, g = variables[path], npv(grads[path])
        idx = np.unravel_index(np.argmax(np.abs(g)), g.shape)
        w0 = npv(var).copy()
        h = 1e-2 * max(abs(float(w0[idx])), 1e-1)
        values = []
        for sign in (1, -1):
            w = w0.copy()
            w[idx] += sign * h
            var.assign(w)
            values.append(float(npv(term())))
        var.assign(w0)
        assert abs(g[idx]) > 1e-6, name
        # measured relative error 4.7e-5 (classifier), 1.4e-4 (stem) (bound 0.05: > 300×)
        assert g[idx] == pytest.approx((values[0] - values[1]) / (2 * h), rel=0.05, abs=0), name


def test_exact_batch_moments_give_the_variances_hessian():
    """∂²var/∂x_i∂x_j = (2/N)(δ_ij − 1/N) for var = mean((x − mean x)²): Keras' TensorFlow moments drop the −1/N
    part (variance around stop_gradient(mean)); inside exact_batch_moments() BatchNorm's statistics have it."""
    from keras.src.backend.tensorflow import nn

    from dermo.model.exact_moments import exact_batch_moments

    n = 4
    x = tf.constant([0.5, -1.0, 2.0, 3.5])
    want = 2 / n * (np.eye(n) - 1 / n)
    saved = nn._compute_moments
    with exact_batch_moments():
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                _, variance = ops.moments(x, axes=[0])
            g = inner.gradient(variance, x)
        hessian = outer.jacobian(g, x)
    np.testing.assert_allclose(npv(hessian), want, atol=1e-6)
    assert float(npv(variance)) == pytest.approx(np.var([0.5, -1.0, 2.0, 3.5]), rel=1e-6)
    assert nn._compute_moments is saved                     # restored on leaving
