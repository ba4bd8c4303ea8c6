"""Counterfactual validation images: every val image's lesion on the surroundings of an image of another class.

    donors = donor_pool(batches, K, per_class)       class -> outsides (n,S,S,3), each donor's lesion greyed
    x̂, valid = swap_with_other_class(x, m, y, donors, start)

A biased val split (a ruler, ink or a sticker on most images of one class) rewards, by val accuracy, the epoch
that reads the artefact most. On x̂ the artefact belongs to another class, so the accuracy on x̂ (labelled by their
own lesion) rewards reading the lesion: `--monitor val_counterfactual_accuracy` (docs/method.md §6). The swap is
L_outside's swap form (dermo.losses.occlusion) with the donor taken from another class instead of the next image:

    x̂_i = m_i·x_i + (1 − m_i)·((1 − m_j)·x_j + m_j·FILL)

Donor j of the image at position n of the val set (n = start + row): the classes other than y_i in index order,
c = others[n mod len(others)], then that class's donors in order, j = (n div len(others)) mod len(donors[c]) —
fixed for a fixed val set, so epochs are compared on the same images. Images with an empty mask (nothing to
keep) or without any donor of another class are not valid.

Shapes: x (B,S,S,3) float 0..255, masks (B,S,S,1) in [0, 1], labels (B,) int.
"""
from __future__ import annotations

import numpy as np

from dermo.losses.occlusion import FILL
from dermo.pipeline.batches import image_of


def donor_pool(batches, num_classes: int, per_class: int = 16) -> dict[int, np.ndarray]:
    """The first `per_class` images of each class, in the batches' order: class -> their outsides, each with its
    own lesion greyed (n,S,S,3) float32. Reads batches until each of the `num_classes`
    classes has `per_class` donors or the batches end (a class absent from them has none)."""
    outsides: dict[int, list] = {}
    for i in range(len(batches)):
        x, (y, m) = batches[i]
        x, m = np.asarray(image_of(x), np.float32), np.asarray(m, np.float32)
        for row, label in enumerate(np.asarray(y).argmax(1)):
            got = outsides.setdefault(int(label), [])
            if len(got) < per_class:
                got.append((1.0 - m[row]) * x[row] + m[row] * FILL)
        if len(outsides) == num_classes and all(len(v) >= per_class for v in outsides.values()):
            break
    return {c: np.stack(outsides[c]) for c in sorted(outsides)}


def swap_with_other_class(x, masks, labels, donors: dict, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """-> (x̂ (B,S,S,3) float32, valid (B,) bool): each lesion on the outside of a donor of another class."""
    x, m = np.asarray(x, np.float32), np.asarray(masks, np.float32)
    out, valid = x.copy(), np.zeros(len(x), bool)
    for row, label in enumerate(np.asarray(labels)):
        others = [c for c in donors if c != int(label)]
        if not others or m[row].max() <= 0:
            continue
        n = start + row
        outside = donors[others[n % len(others)]]
        donor = outside[(n // len(others)) % len(outside)]
        out[row] = m[row] * x[row] + (1.0 - m[row]) * donor
        valid[row] = True
    return out, valid
