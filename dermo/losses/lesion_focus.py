"""Lesion-focus term L_mask: CAMs should correlate with the lesion mask (docs/method.md §5).

For every class CAM k, term = 1 − r(mask↓, CAM_k) with r the Pearson correlation over the h·w
positions and mask↓ the mask area-averaged to (h, w). Images whose resized mask has (near) zero
variance — empty or full masks — carry no localisation signal and are left out of the average.
"""

import numpy as np
from keras import ops


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) box-filter matrix: output cell i averages the input span [i·n_in/n_out, (i+1)·n_in/n_out),
    pixels cut by the span's ends counted by the part inside (TensorFlow's "area" resize)."""
    scale = n_in / n_out
    w = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
            w[i, j] = min(hi, j + 1) - max(lo, j)
    return (w / scale).astype("float32")


def resize_masks(masks, size):
    """Area-average masks to the CAM grid (matrix products: the same on every Keras backend; JAX has no
    "area" resize).

    Args:
        masks: (B, H, W, 1) or (B, H, W) values in [0, 1].
        size: (h, w) target size.

    Returns:
        (B, h, w) float32 tensor, gradient-free.
    """
    masks = ops.cast(ops.convert_to_tensor(masks), "float32")
    if len(masks.shape) == 4:
        masks = masks[..., 0]
    (big_h, big_w), (h, w) = tuple(masks.shape[1:3]), tuple(int(v) for v in size)
    if (big_h, big_w) != (h, w):
        rows = ops.convert_to_tensor(area_weights(big_h, h))        # (h, H)
        cols = ops.convert_to_tensor(area_weights(big_w, w))        # (w, W)
        masks = ops.einsum("hH,bHW,wW->bhw", rows, masks, cols)
    return ops.stop_gradient(masks)


def mask_loss(cams, masks, eps=1e-8, min_mask_var=1e-6):
    """Mean (1 − Pearson r) between each class CAM and the lesion mask.

    With m = mask↓ (B, N) and c = CAM (B, N, K) over N = h·w positions:
        r_ik = mean_n[(m − m̄)(c_k − c̄_k)] / (sqrt(var m + eps) · sqrt(var c_k + eps))
        L = Σ_{i valid} mean_k (1 − r_ik) / #valid,   valid: var(m_i) > min_mask_var
    L = 0 when no image is valid. Finite value and gradient for constant CAMs and empty/full masks.

    Args:
        cams: (B, h, w, K) class activation maps.
        masks: (B, H, W, 1) or (B, H, W) lesion masks in [0, 1].
        eps: added to variances before the square root.
        min_mask_var: resized masks with variance at or below this are excluded.

    Returns:
        scalar float32 tensor in [0, 2].
    """
    cams = ops.cast(ops.convert_to_tensor(cams), "float32")
    b, h, w, k = ops.shape(cams)
    m = ops.reshape(resize_masks(masks, (h, w)), (b, h * w))  # (B, N)
    c = ops.reshape(cams, (b, h * w, k))  # (B, N, K)
    m_c = m - ops.mean(m, axis=1, keepdims=True)  # (B, N)
    c_c = c - ops.mean(c, axis=1, keepdims=True)  # (B, N, K)
    var_m = ops.mean(ops.square(m_c), axis=1)  # (B,)
    var_c = ops.mean(ops.square(c_c), axis=1)  # (B, K)
    cov = ops.mean(m_c[:, :, None] * c_c, axis=1)  # (B, K)
    r = cov / (ops.sqrt(var_m + eps)[:, None] * ops.sqrt(var_c + eps))  # (B, K)
    per_image = ops.mean(1.0 - r, axis=1)  # (B,)
    valid = ops.cast(var_m > min_mask_var, "float32")  # (B,)
    return ops.sum(per_image * valid) / ops.maximum(ops.sum(valid), 1.0)
