"""Combining the outputs of several models on the same N images (docs/method.md §7).

    soft_vote(probs, weights)        weighted arithmetic mean of the probabilities (the deck's soft vote)
    geometric_mean(probs, weights)   weighted geometric mean of the probabilities, rows renormalised to 1
    rank_average(probs, weights)     per model and class, each probability replaced by its rank over the N
                                     images scaled to [0, 1], then the weighted mean (SIIM-ISIC 2020 winner):
                                     SCORES, not probabilities
    combine(method, probs, weights)  one of METHODS
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

METHODS = ("mean", "geometric", "rank")
PROBABILITY_METHODS = ("mean", "geometric")          # their outputs are probabilities; rank's are scores
TINY = float(np.finfo(np.float32).tiny)              # log p of p kept above float32's smallest normal


def _stack(prob_list, weights):
    """(M, N, K) float64 and normalised weights (M,) (default equal)."""
    if len(prob_list) == 0:
        raise ValueError("an ensemble needs at least one probability array")
    shapes = {np.shape(p) for p in prob_list}
    if len(shapes) != 1:
        raise ValueError(f"all probability arrays must have the same shape, got {sorted(shapes)}")
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in prob_list])
    w = np.ones(len(prob_list)) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.size != len(prob_list):
        raise ValueError(f"{w.size} weights for {len(prob_list)} models")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {w}")
    return stacked, w / w.sum()


def soft_vote(prob_list, weights=None) -> np.ndarray:
    """Σ_m w_m p_m / Σ_m w_m: M arrays (N, K) -> (N, K)."""
    stacked, w = _stack(prob_list, weights)
    return np.tensordot(w, stacked, axes=1)


def geometric_mean(prob_list, weights=None) -> np.ndarray:
    """Π_m p_m^(w_m/Σw), each row renormalised to sum 1 (= softmax of the weighted mean log-probability)."""
    stacked, w = _stack(prob_list, weights)
    log_mean = np.tensordot(w, np.log(np.maximum(stacked, TINY)), axes=1)        # (N, K)
    out = np.exp(log_mean - log_mean.max(axis=1, keepdims=True))
    return out / out.sum(axis=1, keepdims=True)


def rank_scores(probs) -> np.ndarray:
    """(N, K) -> per column, (rank − 1) / (N − 1) of each value among the N images (ties: average rank),
    so the lowest is 0 and the highest 1; a single image scores 0.5."""
    p = np.asarray(probs, np.float64)
    if len(p) == 1:
        return np.full_like(p, 0.5)
    return (rankdata(p, axis=0) - 1.0) / (len(p) - 1.0)


def rank_average(prob_list, weights=None) -> np.ndarray:
    """Weighted mean over models of rank_scores: (N, K) scores in [0, 1]. Only their order within a class
    column means anything (AUC); rows do not sum to 1."""
    stacked, w = _stack(prob_list, weights)
    return np.tensordot(w, np.stack([rank_scores(p) for p in stacked]), axes=1)


def combine(method: str, prob_list, weights=None) -> np.ndarray:
    """The ensemble output of `method` (one of METHODS)."""
    funcs = {"mean": soft_vote, "geometric": geometric_mean, "rank": rank_average}
    if method not in funcs:
        raise ValueError(f"unknown ensemble method {method!r}; use one of {', '.join(METHODS)}")
    return funcs[method](prob_list, weights)
