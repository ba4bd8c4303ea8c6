"""Hair removal: thin dark structures found by a morphological black-hat, then inpainted."""
from __future__ import annotations

import cv2
import numpy as np


def hair_mask(img: np.ndarray, fov: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> bool (H, W): thin dark structures (hairs), by black-hat + threshold."""
    h, w = img.shape[:2]
    k = max(3, round(min(h, w) / 40)) | 1
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    bh = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    bh = cv2.GaussianBlur(bh, (3, 3), 0)
    m = (bh > 15).astype(np.uint8)
    # keep elongated components only (hairs are long; lesion dots and skin texture are not)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    keep = extent >= 2 * k
    keep[0] = False
    m = keep[labels]
    if fov is not None:
        m &= fov
    return m


def remove_hair(img: np.ndarray, fov: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 RGB (H, W, 3) with dark hairs inpainted (TELEA).

    Black-hat on the grey image with an ellipse ~1/40 of the shorter side, threshold, keep elongated
    components, dilate by 1 px, `cv2.inpaint`. Returns a copy; a hairless image is almost unchanged.
    """
    m = hair_mask(img, fov)
    if not m.any():
        return img.copy()
    m = cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8))
    radius = max(3, round(min(img.shape[:2]) / 100))
    return cv2.inpaint(img, m, radius, cv2.INPAINT_TELEA)
