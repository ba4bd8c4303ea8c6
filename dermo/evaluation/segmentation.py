"""Lesion-mask quality of a run's segmentation head (dermo train --head segmentation)."""
from __future__ import annotations

import numpy as np

from dermo.pipeline.batches import LesionBatches
from dermo.pipeline.prepare import Prepared


def dice_scores(masks: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-image hard Dice of binary masks (N,H,W[,1]) vs predictions (N,H,W[,1]) in [0,1] -> (N,).
    An image where both are empty scores 1."""
    m = masks.reshape(len(masks), -1) > 0.5
    p = pred.reshape(len(pred), -1) > 0.5
    inter = (m & p).sum(1)
    total = m.sum(1) + p.sum(1)
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def segmentation_dice(seg_model, items: list[Prepared], num_classes: int, batch_size: int = 16) -> float:
    """Mean Dice of the predicted masks against the pipeline's masks (given or generated)."""
    size = int(seg_model.input.shape[1])
    batches = LesionBatches(items, num_classes, size, batch_size)
    scores = []
    for i in range(len(batches)):
        x, (_, masks) = batches[i]
        scores.append(dice_scores(masks, np.asarray(seg_model.predict_on_batch(x))))
    return float(np.concatenate(scores).mean())
