"""Class activation maps (docs/method.md §4) as a pure, differentiable function.

``CAM_k = Σ_c F[..., c] · W[c, k]`` with F the last conv activation and W the kernel
of the classifier Dense layer (its bias is not part of the map).
"""

from keras import ops


def class_activation_maps(features, kernel):
    """Class activation maps of a batch.

    CAM[b, i, j, k] = Σ_c features[b, i, j, c] · kernel[c, k]

    Args:
        features: (B, h, w, C) last conv activations (tensor or numpy).
        kernel: (C, K) kernel of the classifier ``Dense(K)`` (no bias).

    Returns:
        (B, h, w, K) float32 tensor; differentiable w.r.t. both inputs, so it can be
        computed inside a ``train_step``'s ``tf.GradientTape``.
    """
    features = ops.cast(ops.convert_to_tensor(features), "float32")
    kernel = ops.cast(ops.convert_to_tensor(kernel), "float32")
    return ops.einsum("bhwc,ck->bhwk", features, kernel)
