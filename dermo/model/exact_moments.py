"""Batch statistics whose gradient of a gradient is exact, for RRR's double backpropagation under TensorFlow.

Keras' BatchNormalization takes its batch mean and variance from `tf.nn.moments`, which computes the variance
around `stop_gradient(mean)`. The first derivative is unchanged (∂var/∂mean = −2·mean(x − mean) = 0), so plain
training is exact, but a gradient of a gradient loses the terms through the mean. Measured on one B0 step at 64 px
with RRR on (tests/test_jax_backend.py): the TensorFlow update differed from the JAX step's by 1.0 % (relative L2),
the JAX float32 step from a JAX float64 step by 0.009 %; with the moments below TensorFlow's differs from JAX's by
0.007 %, as without RRR. JAX's `jnp.var` differentiates through the mean, so only the TensorFlow step needs this.

`exact_batch_moments()` swaps Keras' TensorFlow moments function for one without the stop_gradient while the RRR
forward pass is traced (the graph keeps what was traced; nothing else is affected). The synchronized moments of
multi-replica training (E[x²] − E[x]², all-reduced) have no stop_gradient and are left as they are.
"""
from __future__ import annotations

import contextlib


def exact_moments(x, axes, keepdims=False):
    """(mean, biased variance) over `axes`, differentiable to any order through both."""
    import tensorflow as tf

    mean = tf.reduce_mean(x, axes, keepdims=True)
    variance = tf.reduce_mean(tf.square(x - mean), axes, keepdims=True)
    if not keepdims:
        mean, variance = tf.squeeze(mean, axes), tf.squeeze(variance, axes)
    return mean, variance


@contextlib.contextmanager
def exact_batch_moments():
    """While inside: Keras' TensorFlow BatchNormalization uses `exact_moments` for its batch statistics."""
    from keras.src.backend.tensorflow import nn

    saved = nn._compute_moments
    nn._compute_moments = exact_moments
    try:
        yield
    finally:
        nn._compute_moments = saved
