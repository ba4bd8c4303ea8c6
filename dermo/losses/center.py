"""Intra-class center loss L_center and its centre bookkeeping (docs/method.md §5).

Centres are not trained by gradient: they are refreshed once per epoch from per-class feature
sums and counts accumulated during training (:func:`center_sums`, :func:`updated_centers`).
"""

from keras import ops


def center_loss(pooled, labels, centers):
    """Mean squared distance of pooled features to their class centre, per feature.

    L = mean_i ||g_i − C_{y_i}||² / C

    Only the centres of classes present in the batch enter the loss. The centres are treated as
    constants (``stop_gradient``): gradients flow to ``pooled`` only.

    Args:
        pooled: (B, C) global-average-pooled features g.
        labels: (B,) integer class indices y.
        centers: (K, C) class centres.

    Returns:
        scalar float32 tensor.
    """
    pooled = ops.cast(ops.convert_to_tensor(pooled), "float32")
    centers = ops.stop_gradient(ops.cast(ops.convert_to_tensor(centers), "float32"))
    labels = ops.cast(ops.convert_to_tensor(labels), "int32")
    own = ops.take(centers, labels, axis=0)  # (B, C)
    return ops.mean(ops.square(pooled - own))  # mean over i and c == mean_i ||.||² / C


def center_sums(pooled, labels, num_classes):
    """Per-class sums and counts of pooled features in a batch (one-hot matmul).

    sums[k] = Σ_{i: y_i = k} g_i,   counts[k] = #{i: y_i = k}

    Args:
        pooled: (B, C) pooled features.
        labels: (B,) integer class indices.
        num_classes: K.

    Returns:
        (sums (K, C), counts (K,)) float32 tensors, gradient-free.
    """
    pooled = ops.stop_gradient(ops.cast(ops.convert_to_tensor(pooled), "float32"))
    labels = ops.cast(ops.convert_to_tensor(labels), "int32")
    onehot = ops.one_hot(labels, num_classes, dtype="float32")  # (B, K)
    sums = ops.matmul(ops.transpose(onehot), pooled)  # (K, C)
    counts = ops.sum(onehot, axis=0)  # (K,)
    return sums, counts


def updated_centers(old, sums, counts, momentum):
    """Momentum update of the class centres from accumulated sums and counts.

    new[k] = momentum · old[k] + (1 − momentum) · sums[k] / counts[k]   if counts[k] > 0
    new[k] = old[k]                                                      otherwise (no NaN)

    Args:
        old: (K, C) current centres.
        sums: (K, C) per-class feature sums.
        counts: (K,) per-class counts.
        momentum: float in [0, 1]; 0 replaces centres by the class means.

    Returns:
        (K, C) float32 tensor.
    """
    old = ops.cast(ops.convert_to_tensor(old), "float32")
    sums = ops.cast(ops.convert_to_tensor(sums), "float32")
    counts = ops.cast(ops.convert_to_tensor(counts), "float32")[:, None]  # (K, 1)
    means = sums / ops.maximum(counts, 1.0)  # (K, C); safe where count is 0
    blended = momentum * old + (1.0 - momentum) * means
    return ops.where(counts > 0, blended, old)
