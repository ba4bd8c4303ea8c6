"""Lesion-on-other-surroundings augmentation (--paste-share): a remedy on the data side for shortcut learning.

A share of each training batch gets new surroundings: for image i (its lesion, label and mask kept) a host image j
of the same batch (any class) gives everything outside the lesion. The host's own lesion is first removed — its
mask dilated by DILATE of the image side, filled with the surrounding skin by inpainting (cv2.INPAINT_TELEA) — so
no second lesion shows:

    host_filled = inpaint(x_j, dilate(m_j))
    x̃_i = m_i·x_i + (1 − m_i)·host_filled            label y_i, mask m_i

With hosts of every class, what surrounds a lesion (rulers, ink, gel, vignettes, the skin) no longer predicts its
label; L_outside can only penalise reading it, this takes the information away (background augmentation: Xiao et
al. 2020 "Noise or Signal"; Ryali et al. 2021). Off by default; docs/method.md §11.

Shapes: x (B,S,S,3) float 0..255, masks (B,S,S,1) in {0, 1}.
"""
from __future__ import annotations

import cv2
import numpy as np

DILATE = 0.03           # host lesion's mask grown by this fraction of the image side before it is filled
INPAINT_RADIUS = 5      # px, cv2.inpaint's neighbourhood


def fill_lesion(image: np.ndarray, mask: np.ndarray, dilate: float = DILATE) -> np.ndarray:
    """image (S,S,3) float 0..255, mask (S,S) or (S,S,1) -> (S,S,3) float32: the (dilated) lesion filled with the
    skin around it; the pixels outside the dilated mask are unchanged."""
    m = (np.asarray(mask).reshape(mask.shape[:2]) > 0.5).astype(np.uint8)
    r = max(1, round(dilate * min(m.shape)))
    grown = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    img = np.clip(np.asarray(image, np.float32), 0, 255).astype(np.uint8)
    if not grown.any():
        return img.astype(np.float32)
    if grown.all():                           # nothing around the lesion to fill it with: the image's mean
        return np.full(img.shape, img.reshape(-1, 3).mean(0), np.float32)
    filled = cv2.inpaint(img, grown, INPAINT_RADIUS, cv2.INPAINT_TELEA).astype(np.float32)
    keep = grown[..., None] == 0
    return np.where(keep, np.asarray(image, np.float32), filled)


def paste_onto_hosts(x: np.ndarray, masks: np.ndarray, share: float, rng: np.random.Generator,
                     dilate: float = DILATE) -> tuple[np.ndarray, np.ndarray]:
    """-> (x̃ (B,S,S,3) float32, hosts (B,) int: the host row of each image, −1 where it kept its own surroundings).
    round(share·B) rows drawn by `rng` (those with a non-empty mask) each get the filled surroundings of another
    row drawn by `rng`; labels and masks stay those of the pasted lesion, so they need no change."""
    x = np.asarray(x, np.float32)
    m = np.asarray(masks, np.float32)
    out, hosts = x.copy(), np.full(len(x), -1)
    if len(x) < 2 or share <= 0:
        return out, hosts
    rows = rng.choice(len(x), size=min(len(x), int(round(share * len(x)))), replace=False)
    for i in sorted(int(r) for r in rows):
        if m[i].max() <= 0:
            continue
        j = int(rng.integers(len(x) - 1))
        j += j >= i                                          # any other row
        out[i] = m[i] * x[i] + (1.0 - m[i]) * fill_lesion(x[j], m[j], dilate)
        hosts[i] = j
    return out, hosts
