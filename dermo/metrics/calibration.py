"""How well predicted probabilities match observed frequencies, and temperature scaling (docs/method.md §7).

Shapes: y_true int (N,) class ids; probs float (N, K) rows of probabilities (softmax outputs).

    reliability_bins(y, probs, bins)   per equal-width confidence bin: count, mean confidence, accuracy
    expected_calibration_error(y, probs, bins=15)   top-label ECE = Σ_b n_b/N · |acc_b − conf_b|
    brier_score(y, probs)              mean over images of Σ_k (p_k − y_k)², y one-hot: 0 best, 2 worst
    calibration_metrics(y, probs)      {"ece", "brier", "nll"} (nll = classification.cross_entropy)
    apply_temperature(probs, T)        softmax(log p / T): the calibrated probabilities
    fit_temperature(y, probs)          the T > 0 that minimises the NLL of apply_temperature(probs, T)

log p is taken of p kept above float32's smallest normal (as cross_entropy does), so a probability that
underflowed to 0 in the model's float32 softmax has the finite logit −87.3 rather than −∞.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from dermo.metrics.classification import cross_entropy

BINS = 15
TINY = float(np.finfo(np.float32).tiny)
LOG_T_BOUNDS = (-5.0, 5.0)          # fit_temperature searches T in [e^-5, e^5] = [0.0067, 148]


def _arrays(y_true, probs):
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or len(p) != len(y) or len(y) == 0:
        raise ValueError(f"need probs (N, K) with one row per label, got {p.shape} for {len(y)} labels")
    return y, p


def reliability_bins(y_true, probs, bins: int = BINS) -> dict:
    """Top-label reliability over `bins` equal-width confidence bins (lo, hi] of [0, 1] (bin 0 also holds 0).

    Confidence c_i = max_k p_ik, correct_i = [argmax_k p_ik == y_i]. Returns numpy arrays of length `bins`:
    "edges" (bins+1,), "count", "confidence" (mean c in the bin, NaN if empty), "accuracy" (share correct,
    NaN if empty)."""
    y, p = _arrays(y_true, probs)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, minlength=bins) / count
        accuracy = np.bincount(idx, correct, minlength=bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(y_true, probs, bins: int = BINS) -> float:
    """Top-label ECE (Guo et al. 2017): Σ_b (n_b / N) · |accuracy_b − mean confidence_b| over non-empty bins."""
    r = reliability_bins(y_true, probs, bins)
    full = r["count"] > 0
    gap = np.abs(r["accuracy"][full] - r["confidence"][full])
    return float(np.sum(r["count"][full] * gap) / r["count"].sum())


def brier_score(y_true, probs) -> float:
    """Multiclass Brier score: mean over images of Σ_k (p_k − [k == y])² (binary: twice sklearn's
    brier_score_loss of p[:, 1])."""
    y, p = _arrays(y_true, probs)
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def calibration_metrics(y_true, probs, bins: int = BINS) -> dict:
    """{"ece", "brier", "nll"}: the numbers a temperature is judged by (nll = mean −log p of the true class)."""
    return {"ece": expected_calibration_error(y_true, probs, bins), "brier": brier_score(y_true, probs),
            "nll": cross_entropy(y_true, probs)}


def _logits(probs) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probs, np.float64), TINY))


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """Calibrated probabilities softmax(log p / T) (N, K), float64; T = 1 returns p (rows renormalised)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return softmax(_logits(probs) / float(temperature), axis=1)


def fit_temperature(y_true, probs) -> float:
    """Temperature scaling: argmin over T > 0 of the mean NLL of softmax(log p / T) on labelled predictions,
    searched on log T (scipy's bounded Brent, T in [e^-5, e^5]). T > 1 softens over-confident outputs."""
    y, p = _arrays(y_true, probs)
    z = _logits(p)
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-np.mean(log_softmax(z / np.exp(log_t), axis=1)[rows, y]))

    best = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(best.x))
