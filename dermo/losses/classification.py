"""Classification loss terms L_cls (docs/method.md §5): categorical CE (binary) and focal (multiclass).

Both wrap Keras' own per-sample losses, which renormalise ``probs`` to sum to 1 and clip
them to [ε, 1 − ε] (ε = ``keras.config.epsilon()``, 1e-7) before the log; the per-sample
values are averaged over the batch.
"""

import keras
from keras import ops


def categorical_ce(y_true, probs):
    """Mean categorical cross-entropy.

    L = mean_i Σ_k −y_ik · log p_ik      (p clipped to [ε, 1 − ε])

    Args:
        y_true: (B, K) one-hot targets.
        probs: (B, K) softmax probabilities.

    Returns:
        scalar float32 tensor.
    """
    probs = ops.cast(ops.convert_to_tensor(probs), "float32")
    per_sample = keras.losses.categorical_crossentropy(y_true, probs)  # (B,)
    return ops.mean(per_sample)


def focal_loss(y_true, probs, gamma=2.0):
    """Mean categorical focal loss with alpha = 1.

    L = mean_i Σ_k −y_ik · (1 − p_ik)^γ · log p_ik      (p clipped to [ε, 1 − ε])

    At γ = 0 this is :func:`categorical_ce`.

    Args:
        y_true: (B, K) one-hot targets.
        probs: (B, K) softmax probabilities.
        gamma: focusing parameter γ ≥ 0.

    Returns:
        scalar float32 tensor.
    """
    probs = ops.cast(ops.convert_to_tensor(probs), "float32")
    per_sample = keras.losses.categorical_focal_crossentropy(
        y_true, probs, alpha=1.0, gamma=gamma
    )  # (B,)
    return ops.mean(per_sample)
