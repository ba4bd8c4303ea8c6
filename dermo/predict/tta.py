"""Test-time augmentation: the 8 dihedral transforms of the spatial axes, and their inverses for maps."""
from __future__ import annotations

import numpy as np

from dermo.predict.loading import PredictError

TTA_NAMES = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose", "transverse")


def tta_forward(x: np.ndarray, t: int) -> np.ndarray:
    """Dihedral transform number t (see TTA_NAMES) of the spatial axes (1, 2) of x (B,H,W,...)."""
    if t == 0:
        return x
    if t == 1:
        return x[:, :, ::-1]
    if t == 2:
        return x[:, ::-1]
    if t in (3, 4, 5):
        return np.rot90(x, k=t - 2, axes=(1, 2))
    if t == 6:
        return np.swapaxes(x, 1, 2)
    if t == 7:
        return np.rot90(np.swapaxes(x, 1, 2), k=2, axes=(1, 2))
    raise ValueError(f"TTA supports at most {len(TTA_NAMES)} transforms ({', '.join(TTA_NAMES)})")


def tta_inverse(x: np.ndarray, t: int) -> np.ndarray:
    """Undo tta_forward(., t) on (B,h,w,...) maps: back to the original orientation."""
    if t in (3, 5):
        return np.rot90(x, k=-(t - 2), axes=(1, 2))
    return tta_forward(x, t)              # flips, rot180, transpose, transverse are involutions


def check_tta(n: int) -> int:
    if not 1 <= int(n) <= len(TTA_NAMES):
        raise PredictError(f"--tta {n}: use 1 (none) to {len(TTA_NAMES)} ({', '.join(TTA_NAMES)})")
    return int(n)
