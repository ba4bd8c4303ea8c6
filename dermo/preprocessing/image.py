"""The per-image preprocessing chain on numpy arrays (no file I/O):

    preprocess_image(img, size) -> (uint8 RGB, uint8 mask), shorter side == size
        field_of_view (fov.py) -> remove_hair (hair.py) -> shades_of_gray (color.py; over the fov or the skin)
        -> segment_lesion (segment.py), unless an expert mask is given

`img` is always uint8 RGB (H, W, 3). Work is done on downscaled copies where the result does not
need full resolution (field of view, segmentation), so a ~770x575 image takes a few tens of ms.
"""
from __future__ import annotations

import cv2
import numpy as np

from dermo.preprocessing.color import REGIONS, shades_of_gray, skin_region
from dermo.preprocessing.fov import field_of_view
from dermo.preprocessing.hair import remove_hair
from dermo.preprocessing.morphology import resize_short
from dermo.preprocessing.segment import GROW, segment_lesion


def preprocess_image(img: np.ndarray, size: int, hair: bool = True, color: bool = True,
                     given_mask: np.ndarray | None = None, p: int = 6,
                     color_region: str = "fov", mask_grow: float = GROW) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB (H, W, 3) -> (uint8 RGB (h, w, 3), uint8 mask (h, w) {0, 255}), min(h, w) == size.

    field of view -> hair removal -> Shades of Gray (Minkowski p) -> lesion mask, then the shorter
    side is resized to `size`. A larger image is first shrunk to that size (INTER_AREA) and then
    processed (same output, several times faster); a smaller one is processed at its own size and
    enlarged (bilinear) before segmentation. `given_mask` (H, W), >0 = lesion, e.g. an expert mask,
    replaces the segmentation and is resized with nearest neighbour. `color_region`: where Shades of Gray
    estimates the illuminant, "fov" (the whole field of view) or "skin" (color.skin_region: outside the given
    mask, or outside a first segmentation of the uncorrected image, without saturated or strongly coloured pixels).
    `mask_grow`: the generated mask's margin (segment_lesion's grow, a fraction of the shorter side).
    """
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB (H, W, 3), got {img.dtype} {img.shape}")
    if given_mask is not None and given_mask.shape[:2] != img.shape[:2]:
        raise ValueError(f"mask shape {given_mask.shape[:2]} != image shape {img.shape[:2]}")
    work = resize_short(img, size) if min(img.shape[:2]) > size else img
    fov = field_of_view(work)
    if hair:
        work = remove_hair(work, fov)
    if color:
        region = fov
        if color_region == "skin":
            lesion = (segment_lesion(work, fov, mask_grow) > 0 if given_mask is None else
                      cv2.resize((given_mask > 0).astype(np.uint8), work.shape[1::-1],
                                 interpolation=cv2.INTER_NEAREST) > 0)
            region = skin_region(work, fov, lesion)
        elif color_region != "fov":
            raise ValueError(f"color_region must be one of {REGIONS}, got {color_region!r}")
        work = shades_of_gray(work, region, p)
    if min(work.shape[:2]) != size:
        work = resize_short(work, size, cv2.INTER_LINEAR)
        fov = cv2.resize(fov.astype(np.uint8), work.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
    h, w = work.shape[:2]
    if given_mask is not None:
        mask = cv2.resize((given_mask > 0).astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_NEAREST)
    else:
        mask = segment_lesion(work, fov, mask_grow)
    return work, mask
