"""Small mask and resizing helpers shared by the field-of-view and segmentation steps (numpy/OpenCV)."""
from __future__ import annotations

import cv2
import numpy as np


def resize_short(img: np.ndarray, short: int, interp=cv2.INTER_AREA) -> np.ndarray:
    """Resize so min(H, W) == short (aspect kept); returns img itself if already that size."""
    h, w = img.shape[:2]
    if min(h, w) == short:
        return img
    s = short / min(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    if interp == cv2.INTER_AREA and s > 1:
        interp = cv2.INTER_LINEAR          # INTER_AREA is only meant for shrinking
    return cv2.resize(img, size, interpolation=interp)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """bool (H, W) -> bool (H, W) with every background region not connected to the border filled."""
    m = mask.astype(np.uint8)
    padded = cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    flood = padded.copy()
    ff = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(flood, ff, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return mask.astype(bool) | holes


def disk(radius: int) -> np.ndarray:
    r = max(1, int(radius))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def border_touching(labels: np.ndarray, n: int) -> np.ndarray:
    """labels (H, W) int32 from connectedComponents -> bool (n,) whether label touches the image edge."""
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    touch = np.zeros(n, bool)
    touch[np.unique(edge)] = True
    return touch
