"""Group-aware splits (lesion or patient id, `--group-column`): no group on both sides of train/val.

    group_split(samples, val_fraction, seed, source, column)   a seeded stratified group split
    check_groups_apart(train, val, source, column)             a CSV `split` column must keep groups apart

Samples are dermo.data.datasets.Sample (used through .path, .label, .group). An image without a group value
(group None) is its own group.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from dermo.data.manifest import DataError


def group_keys(samples) -> list[str]:
    """Each sample's group; an image without one is its own group (keyed by its path)."""
    return [s.group if s.group is not None else f"\0{s.path}" for s in samples]


def group_split(samples, val_fraction: float, seed: int, source, column: str):
    """(train, val), each sorted by path: one fold of scikit-learn's StratifiedGroupKFold with
    n_splits = round(1 / val_fraction) (at least 2) as val, so the val share is about 1/n_splits.

    The groups are renumbered by a permutation drawn from `seed` and split without sklearn's own shuffle
    (which, in scikit-learn 1.7, shuffles the per-group class counts apart from the groups and so loses
    the stratification): same seed, same split."""
    n_splits = max(2, round(1 / val_fraction))
    keys = group_keys(samples)
    names, inverse = np.unique(np.array(keys, dtype=object).astype(str), return_inverse=True)
    if len(names) < n_splits:
        raise DataError(f"{source}: only {len(names)} group(s) in column '{column}'; a {val_fraction:g} "
                        f"validation split needs at least {n_splits} (use a larger --val-fraction, or a "
                        "split column)")
    labels = np.array([s.label for s in samples])
    if (np.bincount(labels) == 1).any():
        raise DataError(f"{source}: every class needs at least 2 images to make a train/val split")
    codes = np.random.default_rng(seed).permutation(len(names))[inverse]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)       # "least populated class has only N members"
        try:
            train_idx, val_idx = next(StratifiedGroupKFold(n_splits).split(labels, labels, codes))
        except ValueError as e:
            raise DataError(f"{source}: cannot make a {val_fraction:g} group split by '{column}' "
                            f"({e})") from None
    train = sorted((samples[i] for i in train_idx), key=lambda s: s.path)
    val = sorted((samples[i] for i in val_idx), key=lambda s: s.path)
    if not train or not val:
        raise DataError(f"{source}: the group split by '{column}' left no "
                        f"{'training' if not train else 'validation'} images")
    return train, val


def check_groups_apart(train, val, source, column: str) -> None:
    """Refuse a given split that puts a group on both sides (one line: the count and a few groups)."""
    both = sorted({s.group for s in train if s.group is not None}
                  & {s.group for s in val if s.group is not None})
    if both:
        shown = ", ".join(both[:3]) + (", …" if len(both) > 3 else "")
        raise DataError(f"{source}: {len(both)} group(s) of column '{column}' have images in both train and "
                        f"val ({shown}); put each group on one side in the split column, or drop the split "
                        "column to let --group-column make the split")
