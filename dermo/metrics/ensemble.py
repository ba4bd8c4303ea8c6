"""Combining the probabilities of several models."""
from __future__ import annotations

import numpy as np


def soft_vote(prob_list, weights=None) -> np.ndarray:
    """Weighted mean of M probability arrays, each (N, K) -> (N, K). weights: M non-negative
    numbers (default equal)."""
    if len(prob_list) == 0:
        raise ValueError("soft_vote needs at least one probability array")
    shapes = {np.shape(p) for p in prob_list}
    if len(shapes) != 1:
        raise ValueError(f"all probability arrays must have the same shape, got {sorted(shapes)}")
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in prob_list])  # (M, N, K)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if weights.size != len(prob_list):
            raise ValueError(f"{weights.size} weights for {len(prob_list)} models")
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
    return np.average(stacked, axis=0, weights=weights)
