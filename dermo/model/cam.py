"""Class activation maps (docs/method.md §4) as a pure, differentiable function.

``CAM_k = Σ_c F[..., c] · W[c, k]`` with F the last conv activation and W the kernel
of the classifier Dense layer (its bias is not part of the map).

A model with metadata (dermo.model.network, --meta-columns) feeds the classifier concat(GAP(F), meta
branch), so its kernel has C + 16 rows: the CAM uses only the image-feature rows W[:C] (C = channels of F),
and logit_k = mean_hw CAM_k + (meta part + bias). `image_kernel` is that slice, used by every CAM in dermo.
"""

from keras import ops


def image_kernel(kernel, channels: int):
    """The classifier kernel's rows of the C image features: kernel[:C] (all of it without metadata)."""
    if kernel.shape[0] < channels:
        raise ValueError(f"classifier kernel has {kernel.shape[0]} rows, fewer than the {channels} feature "
                         "channels of the CAM layer")
    return kernel if kernel.shape[0] == channels else kernel[:channels]


def class_activation_maps(features, kernel):
    """Class activation maps of a batch.

    CAM[b, i, j, k] = Σ_c features[b, i, j, c] · kernel[c, k]

    Args:
        features: (B, h, w, C) last conv activations (tensor or numpy).
        kernel: (C, K) kernel of the classifier ``Dense(K)`` (no bias); a (C + M', K) kernel of a
            metadata model is cut to its image rows [:C].

    Returns:
        (B, h, w, K) float32 tensor; differentiable w.r.t. both inputs, so it can be
        computed inside a ``train_step``'s ``tf.GradientTape``.
    """
    features = ops.cast(ops.convert_to_tensor(features), "float32")
    kernel = image_kernel(ops.cast(ops.convert_to_tensor(kernel), "float32"), features.shape[-1])
    return ops.einsum("bhwc,ck->bhwk", features, kernel)
