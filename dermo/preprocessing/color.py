"""Colour constancy: Shades of Gray (Minkowski p-norm illuminant estimate) over the field of view."""
from __future__ import annotations

import cv2
import numpy as np


def shades_of_gray_gains(img: np.ndarray, fov: np.ndarray | None = None, p: int = 6) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float64 (3,) per-channel gains of Shades of Gray.

    e_c = (mean over FOV pixels of (I_c/255)^p)^(1/p); e normalised to unit length; gain_c =
    1 / (sqrt(3) e_c), so a neutral (grey) illuminant leaves the image unchanged. Computed exactly
    from 256-bin histograms.
    """
    mask = None if fov is None else fov.astype(np.uint8)
    levels = (np.arange(256, dtype=np.float64) / 255.0) ** p
    e = np.empty(3)
    for c in range(3):
        hist = cv2.calcHist([img], [c], mask, [256], [0, 256])[:, 0].astype(np.float64)
        e[c] = (hist @ levels / max(hist.sum(), 1.0)) ** (1.0 / p)
    if not np.all(e > 0):
        return np.ones(3)
    e = e / np.linalg.norm(e)
    return 1.0 / (np.sqrt(3.0) * e)


def shades_of_gray(img: np.ndarray, fov: np.ndarray | None = None, p: int = 6) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 RGB (H, W, 3): each channel times its Shades-of-Gray gain, clipped."""
    gains = shades_of_gray_gains(img, fov, p)
    lut = np.clip(np.arange(256)[:, None] * gains[None, :] + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(img), lut.reshape(256, 1, 3))
