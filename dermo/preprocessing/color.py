"""Colour constancy: Shades of Gray (Minkowski p-norm illuminant estimate) over the field of view, or over the
skin only (skin_region): outside the lesion, without saturated or strongly coloured pixels, so that an artefact
beside the lesion (a sticker, ink, a ruler, a gel bubble) does not change the lesion's colours."""
from __future__ import annotations

import cv2
import numpy as np

from dermo.preprocessing.morphology import disk

REGIONS = ("fov", "skin")       # where the illuminant is estimated: the whole field of view (the deck's), the skin
SKIN_MARGIN = 0.05              # the lesion, grown by this fraction of the short side, is left out
SATURATED = 250                 # a pixel with any channel at or above this is left out (highlights, white labels)
CHROMA_MAX = 0.08               # ... and one whose chromaticity is this far (L1) from the skin's median
MIN_SHARE = 0.05                # a region smaller than this share of the field of view falls back to a larger one


def skin_region(img: np.ndarray, fov: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3), field of view and lesion bool (H, W) -> bool (H, W): the pixels to estimate the
    illuminant on. fov minus the grown lesion minus saturated pixels; then minus pixels whose chromaticity
    (R, G, B) / (R + G + B) lies more than CHROMA_MAX (L1) from the median of those. Each step is skipped when it
    would leave less than MIN_SHARE of the field of view (then: fov minus the lesion, else the fov)."""
    fov = fov.astype(bool)
    enough = max(1.0, MIN_SHARE * fov.sum())
    grown = cv2.dilate(lesion.astype(np.uint8), disk(max(1, round(SKIN_MARGIN * min(img.shape[:2]))))) > 0
    region = fov & ~grown & (img.max(axis=2) < SATURATED)
    if region.sum() < enough:
        rest = fov & ~lesion.astype(bool)
        return rest if rest.sum() >= enough else fov
    chroma = img.astype(np.float32) / (img.astype(np.float32).sum(axis=2, keepdims=True) + 1e-3)
    usual = np.abs(chroma - np.median(chroma[region], axis=0)).sum(axis=2) <= CHROMA_MAX
    return region & usual if (region & usual).sum() >= enough else region


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
