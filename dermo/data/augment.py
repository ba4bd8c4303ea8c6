"""Augmentation as in the deck's "Data preparation" slides (docs/method.md §3), on image and mask together.

Train: RandomResizedCrop -> Affine (shift ±6 %, scale 0.9–1.1, rotate ±45°; the old ShiftScaleRotate)
-> VerticalFlip -> HorizontalFlip.  Eval: resize only.
Normalisation is NOT done here: the backbone registry puts it inside the model graph.
"""
from __future__ import annotations

import albumentations as A
import cv2

# Mask resizing: cv2.INTER_NEAREST samples the top-left source pixel, shifting a downscaled mask up to half an
# output pixel away from its area-resized image; INTER_NEAREST_EXACT samples pixel centres and stays aligned.
MASK_RESIZE = cv2.INTER_NEAREST_EXACT


def train_transform(size: int, seed: int | None = None, crop_scale=(0.6, 1.0)) -> A.Compose:
    """Random train-time augmentation to (size, size); `seed` makes the draw sequence reproducible."""
    return A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=crop_scale, ratio=(0.8, 1.25),
                            interpolation=cv2.INTER_AREA, mask_interpolation=MASK_RESIZE),
        A.Affine(translate_percent=(-0.06, 0.06), scale=(0.9, 1.1), rotate=(-45, 45),
                 border_mode=cv2.BORDER_REFLECT_101, p=0.75),
        A.VerticalFlip(p=0.5),
        A.HorizontalFlip(p=0.5),
    ], seed=seed)


def eval_transform(size: int) -> A.Compose:
    """Deterministic eval-time resize to (size, size)."""
    return A.Compose([A.Resize(size, size, interpolation=cv2.INTER_AREA, mask_interpolation=MASK_RESIZE)])


def apply(transform: A.Compose, image, mask):
    """image uint8 (H,W,3), mask uint8 (H,W) -> both transformed with the same geometry."""
    out = transform(image=image, mask=mask)
    return out["image"], out["mask"]
