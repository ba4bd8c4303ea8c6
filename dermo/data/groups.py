"""Group-aware splits (lesion or patient id, `--group-column`): no group on both sides of train/val.

    stratified_folds(samples, k, seed, source, column)         seeded stratified (group) k-fold numbers
    group_split(samples, val_fraction, seed, source, column)   a seeded stratified group split
    check_groups_apart(train, val, source, column)             a CSV `split` column must keep groups apart
    ungrouped_ids_note(csv)                                    a note when a CSV's lesion/patient ids would be ignored

Samples are dermo.data.datasets.Sample (used through .path, .label, .group). An image without a group value
(group None) is its own group.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from dermo.data.manifest import DataError


def group_keys(samples) -> list[str]:
    """Each sample's group; an image without one is its own group (keyed by its path)."""
    return [s.group if s.group is not None else f"\0{s.path}" for s in samples]


def stratified_folds(samples, n_splits: int, seed: int, source, column: str | None = None,
                     fix: str = "use fewer folds") -> np.ndarray:
    """Fold number (N,) of each sample in a seeded stratified k-fold, grouped by `column`'s values when
    given (samples' .group; no group on two folds), else per image (StratifiedKFold, shuffled by `seed`).

    With groups, the groups are renumbered by a permutation drawn from `seed` and split without sklearn's
    own shuffle (which, in scikit-learn 1.7, shuffles the per-group class counts apart from the groups and
    so loses the stratification): same seed, same folds."""
    labels = np.array([s.label for s in samples])
    if (np.bincount(labels) == 1).any():
        raise DataError(f"{source}: every class needs at least 2 images to make a train/val split")
    if column is None:
        if np.bincount(labels).min() < n_splits:
            raise DataError(f"{source}: the smallest class has {np.bincount(labels).min()} image(s), fewer "
                            f"than the {n_splits} folds; {fix}")
        splitter = StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(labels, labels)
    else:
        keys = group_keys(samples)
        names, inverse = np.unique(np.array(keys, dtype=object).astype(str), return_inverse=True)
        if len(names) < n_splits:
            raise DataError(f"{source}: only {len(names)} group(s) in column '{column}'; {n_splits} folds "
                            f"need at least as many ({fix}, or a split column)")
        codes = np.random.default_rng(seed).permutation(len(names))[inverse]
        splitter = StratifiedGroupKFold(n_splits).split(labels, labels, codes)
    folds = np.full(len(samples), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)       # "least populated class has only N members"
        try:
            for k, (_, val_idx) in enumerate(splitter):
                folds[val_idx] = k
        except ValueError as e:
            by = f" by '{column}'" if column else ""
            raise DataError(f"{source}: cannot make {n_splits} stratified folds{by} ({e})") from None
    return folds


def group_split(samples, val_fraction: float, seed: int, source, column: str):
    """(train, val), each sorted by path: one fold of a stratified group k-fold (stratified_folds) with
    n_splits = round(1 / val_fraction) (at least 2) as val, so the val share is about 1/n_splits."""
    n = max(2, round(1 / val_fraction))
    fix = f"use a larger --val-fraction (now {val_fraction:g}: 1 in {n} images is held out)"
    folds = stratified_folds(samples, n, seed, source, column, fix)
    train = sorted((s for s, f in zip(samples, folds) if f != 0), key=lambda s: s.path)
    val = sorted((s for s, f in zip(samples, folds) if f == 0), key=lambda s: s.path)
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


ID_COLUMN = re.compile(r"lesion|patient", re.IGNORECASE)


def ungrouped_ids_note(data) -> str | None:
    """For a CSV without a split column whose lesion/patient-id column (a name containing "lesion" or "patient")
    repeats ids, split without --group-column: a note that the per-image split can put one lesion on both sides
    (None otherwise)."""
    import pandas as pd

    path = Path(data) if data else None
    if path is None or path.suffix.lower() != ".csv" or not path.is_file():
        return None
    df = pd.read_csv(path, dtype=str)
    if "split" in df.columns:
        return None
    for column in df.columns:
        if ID_COLUMN.search(str(column)):
            shared = int(df[column].dropna().duplicated(keep=False).sum())
            if shared:
                return (f"note: {path.name} has a column {column!r} whose ids repeat ({shared} images share an id), "
                        f"but the split is per image, so one lesion can be on both sides; pass --group-column "
                        f"{column} to keep each on one side")
    return None
