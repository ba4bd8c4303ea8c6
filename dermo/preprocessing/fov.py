"""Field of view: where the dermoscope saw skin (not the dark vignette, black frame or borders)."""
from __future__ import annotations

import cv2
import numpy as np

from dermo.preprocessing.morphology import border_touching, disk, fill_holes, resize_short

FOV_WORK = 128        # short side (px) of the copy the field of view is found on


def field_of_view(img: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> bool (H, W): False on the dark vignette / black frame / black borders.

    Near-black regions (blurred max-channel below a level relative to the bright skin) that touch the
    image edge are outside the field of view; the result is the largest remaining region with holes
    filled. An image without such regions gives all True.
    """
    h, w = img.shape[:2]
    small = resize_short(img, min(FOV_WORK, min(h, w)))
    v = cv2.GaussianBlur(small.max(axis=2), (0, 0), 1.5)                     # (h', w') uint8
    ref = float(np.percentile(v, 90))
    thr = float(np.clip(0.2 * ref, 20, 45))
    dark = (v < thr).astype(np.uint8)
    n, labels = cv2.connectedComponents(dark, connectivity=8)
    outside_labels = border_touching(labels, n)
    outside_labels[0] = False                                               # label 0 = not dark
    outside = outside_labels[labels]
    if outside.mean() < 0.005:
        return np.ones((h, w), bool)
    inside = ~outside
    inside = cv2.morphologyEx(inside.astype(np.uint8), cv2.MORPH_OPEN, disk(2)).astype(bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inside.astype(np.uint8), connectivity=4)
    if n < 2:
        return np.ones((h, w), bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    inside = fill_holes(labels == biggest)
    inside = cv2.erode(inside.astype(np.uint8), disk(1), borderType=cv2.BORDER_CONSTANT,
                       borderValue=1).astype(bool)            # drop the dim rim of the frame
    if inside.mean() < 0.2:                       # implausible (e.g. an almost black image): no FOV
        return np.ones((h, w), bool)
    big = cv2.resize(inside.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR)
    return big >= 128
