"""Inter-class discrimination term L_cskl: symmetric KL between class CAMs (docs/method.md §5).

Each class CAM becomes a spatial distribution over the h·w positions; for every image the map of
its true class is compared with the map of every other class. Divergence is rewarded, so the
term enters the loss with a minus sign. The penalised form bounds the reward
(f(x) = x / (λa·x² + 1) peaks at x = 1/√λa), so inflating CAM magnitudes stops paying.
"""

from keras import ops

MODES = ("penalized", "original")


def kl_penalty(x, lambda_a=0.1):
    """Bounded reward f(x) = x / (λa·x² + 1), elementwise (any shape).

    Maximum 1 / (2√λa) at x = 1/√λa.
    """
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    return x / (lambda_a * ops.square(x) + 1.0)


def cam_log_distributions(cams, temperature=1.0):
    """Log of the spatial distributions P_k = softmax(vec(CAM_k) / T) over positions.

    Args:
        cams: (B, h, w, K) class activation maps.
        temperature: T > 0.

    Returns:
        (B, h·w, K) float32 tensor log P (log-softmax over axis 1, numerically safe).
    """
    cams = ops.cast(ops.convert_to_tensor(cams), "float32")
    b, h, w, k = ops.shape(cams)
    flat = ops.reshape(cams, (b, h * w, k)) / temperature  # (B, N, K)
    return ops.log_softmax(flat, axis=1)


def cskl_loss(cams, labels, mode="penalized", lambda_a=0.1, temperature=1.0):
    """Class-separating symmetric-KL loss over CAM spatial distributions.

    For image i with true class y and each other class k ≠ y, with P = softmax(vec(CAM)/T):
        a = KL(P_y ‖ P_k) = Σ_n P_y (log P_y − log P_k)
        b = KL(P_k ‖ P_y) = Σ_n P_k (log P_k − log P_y)
        original:  term = a + b
        penalized: term = f(a) + f(b),  f(x) = x / (λa·x² + 1)
    L = −mean_{i, k≠y_i} term.   K = 1 gives 0.

    Args:
        cams: (B, h, w, K) class activation maps.
        labels: (B,) integer true classes.
        mode: "penalized" (default) or "original".
        lambda_a: λa of the penalty (penalized mode only).
        temperature: softmax temperature T.

    Returns:
        scalar float32 tensor (≤ 0).
    """
    if mode not in MODES:
        raise ValueError(f"cskl mode must be one of {MODES}, got {mode!r}")
    log_p = cam_log_distributions(cams, temperature)  # (B, N, K)
    num_classes = log_p.shape[-1]
    if num_classes == 1:
        return ops.sum(log_p) * 0.0  # keeps the graph connected, gradient 0
    labels = ops.cast(ops.convert_to_tensor(labels), "int32")
    onehot = ops.one_hot(labels, num_classes, dtype="float32")  # (B, K)
    log_py = ops.sum(log_p * onehot[:, None, :], axis=-1, keepdims=True)  # (B, N, 1)
    diff = log_py - log_p  # (B, N, K): log P_y − log P_k
    kl_yk = ops.sum(ops.exp(log_py) * diff, axis=1)  # (B, K)  a
    kl_ky = ops.sum(ops.exp(log_p) * -diff, axis=1)  # (B, K)  b
    if mode == "original":
        term = kl_yk + kl_ky
    else:
        term = kl_penalty(kl_yk, lambda_a) + kl_penalty(kl_ky, lambda_a)
    others = 1.0 - onehot  # (B, K): 1 for k ≠ y
    return -ops.sum(term * others) / ops.maximum(ops.sum(others), 1.0)
