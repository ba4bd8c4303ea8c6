"""Classification loss terms L_cls (docs/method.md §5): categorical CE (binary) and focal (multiclass).

Both are computed from the logits with a log-softmax, so a confidently wrong sample keeps its gradient
(p − y): from clipped probabilities the gradient would be exactly zero once p_true < ε. Optional
per-sample weights (class weights) give mean_i w_i·loss_i, as Keras' `class_weight` does.
"""

from keras import ops


def _log_probs(logits):
    return ops.log_softmax(ops.cast(ops.convert_to_tensor(logits), "float32"), axis=-1)


def _weighted_mean(per_sample, sample_weight):
    if sample_weight is None:
        return ops.mean(per_sample)
    return ops.mean(per_sample * ops.cast(ops.convert_to_tensor(sample_weight), "float32"))


def categorical_ce(y_true, logits, sample_weight=None):
    """Mean categorical cross-entropy from logits.

    L = mean_i w_i · Σ_k −y_ik · log softmax(z_i)_k        (w_i = 1 without sample_weight)

    Args:
        y_true: (B, K) one-hot targets.
        logits: (B, K) pre-softmax scores z.
        sample_weight: optional (B,) weights w.

    Returns:
        scalar float32 tensor; d L / d z_i = w_i (p_i − y_i) / B.
    """
    y = ops.cast(ops.convert_to_tensor(y_true), "float32")
    per_sample = -ops.sum(y * _log_probs(logits), axis=-1)  # (B,)
    return _weighted_mean(per_sample, sample_weight)


def _log_one_minus_probs(logits):
    """log(1 − p_k) = logsumexp_{j≠k} z_j − logsumexp_j z_j   (B, K), exact where 1 − p underflows in float32
    (p_k → 1: log softmax rounds to 0, and (1 − p)^γ would have an infinite derivative for γ < 1)."""
    z = ops.cast(ops.convert_to_tensor(logits), "float32")
    k = z.shape[-1]
    others = z[:, None, :] + ops.cast(ops.eye(k) * -1e30, "float32")[None]   # (B, K, K): z_j, j ≠ k only
    return ops.logsumexp(others, axis=-1) - ops.logsumexp(z, axis=-1, keepdims=True)


def focal_loss(y_true, logits, gamma=2.0, sample_weight=None):
    """Mean categorical focal loss (alpha = 1) from logits.

    L = mean_i w_i · Σ_k −y_ik · (1 − p_ik)^γ · log p_ik,   log p = log softmax(z)

    (1 − p)^γ is computed as exp(γ · log(1 − p)) with log(1 − p) from the logits, so the loss and its gradient
    stay finite for every γ ≥ 0 and every logit gap; at γ = 0 this is :func:`categorical_ce`, gradient included.

    Args:
        y_true: (B, K) one-hot targets.
        logits: (B, K) pre-softmax scores z.
        gamma: focusing parameter γ ≥ 0.
        sample_weight: optional (B,) weights w.

    Returns:
        scalar float32 tensor.
    """
    y = ops.cast(ops.convert_to_tensor(y_true), "float32")
    log_p = _log_probs(logits)  # (B, K)
    modulator = ops.exp(float(gamma) * _log_one_minus_probs(logits))  # (1 − p)^γ
    per_sample = -ops.sum(y * modulator * log_p, axis=-1)  # (B,)
    return _weighted_mean(per_sample, sample_weight)
