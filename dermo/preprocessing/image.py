"""Per-image dermoscopy preprocessing on numpy arrays (no file I/O).

    field_of_view(img)            -> bool (H, W): inside the dermoscope's field of view
    remove_hair(img, fov)         -> uint8 RGB (H, W, 3): dark hairs inpainted
    shades_of_gray(img, fov, p)   -> uint8 RGB (H, W, 3): colour constancy over the field of view
    segment_lesion(img, fov)      -> uint8 (H, W) {0, 255}: unsupervised lesion mask (dermo.segment)
    preprocess_image(img, size)   -> (uint8 RGB, uint8 mask), shorter side == size

`img` is always uint8 RGB (H, W, 3). Work is done on downscaled copies where the result does not
need full resolution (field of view, segmentation), so a ~770x575 image takes a few tens of ms.
"""
from __future__ import annotations

import cv2
import numpy as np

# segmentation lives in dermo.segment (with the mask helpers shared here); segment_lesion is re-exported
from dermo.segment import _disk, _fill_holes, _resize_short, segment_lesion

FOV_WORK = 128        # short side (px) of the copy the field of view is found on


# ----------------------------------------------------------------------------- helpers

def _border_touching(labels: np.ndarray, n: int) -> np.ndarray:
    """labels (H, W) int32 from connectedComponents -> bool (n,) whether label touches the image edge."""
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    touch = np.zeros(n, bool)
    touch[np.unique(edge)] = True
    return touch


# ----------------------------------------------------------------------------- field of view

def field_of_view(img: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> bool (H, W): False on the dark vignette / black frame / black borders.

    Near-black regions (blurred max-channel below a level relative to the bright skin) that touch the
    image edge are outside the field of view; the result is the largest remaining region with holes
    filled. An image without such regions gives all True.
    """
    h, w = img.shape[:2]
    small = _resize_short(img, min(FOV_WORK, min(h, w)))
    v = cv2.GaussianBlur(small.max(axis=2), (0, 0), 1.5)                     # (h', w') uint8
    ref = float(np.percentile(v, 90))
    thr = float(np.clip(0.2 * ref, 20, 45))
    dark = (v < thr).astype(np.uint8)
    n, labels = cv2.connectedComponents(dark, connectivity=8)
    outside_labels = _border_touching(labels, n)
    outside_labels[0] = False                                               # label 0 = not dark
    outside = outside_labels[labels]
    if outside.mean() < 0.005:
        return np.ones((h, w), bool)
    inside = ~outside
    inside = cv2.morphologyEx(inside.astype(np.uint8), cv2.MORPH_OPEN, _disk(2)).astype(bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inside.astype(np.uint8), connectivity=4)
    if n < 2:
        return np.ones((h, w), bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    inside = _fill_holes(labels == biggest)
    inside = cv2.erode(inside.astype(np.uint8), _disk(1), borderType=cv2.BORDER_CONSTANT,
                       borderValue=1).astype(bool)            # drop the dim rim of the frame
    if inside.mean() < 0.2:                       # implausible (e.g. an almost black image): no FOV
        return np.ones((h, w), bool)
    big = cv2.resize(inside.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR)
    return big >= 128


# ----------------------------------------------------------------------------- hair removal

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


# ----------------------------------------------------------------------------- colour constancy

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


# ----------------------------------------------------------------------------- whole pipeline

def preprocess_image(img: np.ndarray, size: int, hair: bool = True, color: bool = True,
                     given_mask: np.ndarray | None = None, p: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB (H, W, 3) -> (uint8 RGB (h, w, 3), uint8 mask (h, w) {0, 255}), min(h, w) == size.

    field of view -> hair removal -> Shades of Gray (Minkowski p) -> lesion mask, then the shorter
    side is resized to `size`. A larger image is first shrunk to that size (INTER_AREA) and then
    processed (same output, several times faster); a smaller one is processed at its own size and
    enlarged (bilinear) before segmentation. `given_mask` (H, W), >0 = lesion, e.g. an expert mask,
    replaces the segmentation and is resized with nearest neighbour.
    """
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB (H, W, 3), got {img.dtype} {img.shape}")
    if given_mask is not None and given_mask.shape[:2] != img.shape[:2]:
        raise ValueError(f"mask shape {given_mask.shape[:2]} != image shape {img.shape[:2]}")
    work = _resize_short(img, size) if min(img.shape[:2]) > size else img
    fov = field_of_view(work)
    if hair:
        work = remove_hair(work, fov)
    if color:
        work = shades_of_gray(work, fov, p)
    if min(work.shape[:2]) != size:
        work = _resize_short(work, size, cv2.INTER_LINEAR)
        fov = cv2.resize(fov.astype(np.uint8), work.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
    h, w = work.shape[:2]
    if given_mask is not None:
        mask = cv2.resize((given_mask > 0).astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_NEAREST)
    else:
        mask = segment_lesion(work, fov)
    return work, mask
