"""Bootstrap intervals of balanced accuracy (scipy.stats.bootstrap, percentile method, resampling images):

    balanced_accuracy_interval(y, pred)             95 % interval of one model's balanced accuracy
    paired_difference_interval(y, pred_a, pred_b)   95 % interval of BA(a) − BA(b), both models scored on the
                                                    same resampled images (paired), so what the two share cancels

y (N,) int labels, pred (N,) int decisions. A resample can miss a rare class; balanced accuracy then averages the
recall of the classes it holds (sklearn's definition), as a re-drawn test set would be scored.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import balanced_accuracy_score

RESAMPLES = 2000
LEVEL = 0.95


def _ba(y, pred) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # a resample without some predicted class
        return float(balanced_accuracy_score(y, pred))


def _interval(data: tuple, statistic, seed: int, resamples: int) -> tuple[float, float]:
    from scipy.stats import bootstrap

    res = bootstrap(data, statistic, paired=True, vectorized=False, n_resamples=resamples, confidence_level=LEVEL,
                    method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def balanced_accuracy_interval(y, pred, seed: int = 0, resamples: int = RESAMPLES) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of balanced_accuracy_score(y, pred)."""
    y, pred = np.asarray(y, int), np.asarray(pred, int)
    return _interval((y, pred), _ba, seed, resamples)


def paired_difference_interval(y, pred_a, pred_b, seed: int = 0,
                               resamples: int = RESAMPLES) -> tuple[float, float, float]:
    """(BA(a) − BA(b), low, high): the difference and its 95 % paired-bootstrap interval; an interval that
    excludes 0 is a difference the test set resolves."""
    y, a, b = (np.asarray(v, int) for v in (y, pred_a, pred_b))
    low, high = _interval((y, a, b), lambda y_, a_, b_: _ba(y_, a_) - _ba(y_, b_), seed, resamples)
    return _ba(y, a) - _ba(y, b), low, high
