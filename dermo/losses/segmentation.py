"""Segmentation-head loss (the deck's "classification and segmentation" experiment).

    L_seg = BCE(mask, m̂) + (1 − soft Dice(mask, m̂)),   soft Dice = (2·Σ m·m̂ + ε) / (Σ m + Σ m̂ + ε)

masks, m̂: (B,H,W,1) in [0,1]; Dice is computed per image and averaged.
"""
from __future__ import annotations

from keras import ops

EPS = 1.0


def soft_dice(masks, pred, eps=EPS):
    """Mean over images of the soft Dice coefficient; masks, pred (B,H,W,1) in [0,1] -> scalar."""
    masks = ops.cast(masks, "float32")
    pred = ops.cast(pred, "float32")
    inter = ops.sum(masks * pred, axis=(1, 2, 3))
    total = ops.sum(masks, axis=(1, 2, 3)) + ops.sum(pred, axis=(1, 2, 3))
    return ops.mean((2.0 * inter + eps) / (total + eps))


def dice_bce_loss(masks, pred):
    """BCE + (1 − soft Dice) -> scalar."""
    masks = ops.cast(masks, "float32")
    pred = ops.clip(ops.cast(pred, "float32"), 1e-7, 1.0 - 1e-7)
    bce = -ops.mean(masks * ops.log(pred) + (1.0 - masks) * ops.log(1.0 - pred))
    return bce + 1.0 - soft_dice(masks, pred)
