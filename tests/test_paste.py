"""--paste-share (dermo.pipeline.paste): each pasted image is its own lesion pixels inside its mask and the host's
pixels outside — the host's own lesion inpainted away with its skin — with expected values worked out by hand on
hand-drawn images."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from dermo.pipeline.paste import DILATE, fill_lesion, paste_onto_hosts

S = 64
SKIN = np.array([200.0, 150.0, 130.0], np.float32)


def disc(centre, radius, colour, background=SKIN):
    """(image (S,S,3) float32, mask (S,S,1) float32): a flat disc on a flat background."""
    m = np.zeros((S, S), np.uint8)
    cv2.circle(m, centre, radius, 1, -1)
    img = np.where(m[..., None] > 0, np.asarray(colour, np.float32), background).astype(np.float32)
    return img, m[..., None].astype(np.float32)


def grown(mask, dilate=DILATE):
    r = max(1, round(dilate * S))
    return cv2.dilate(mask[..., 0].astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)) > 0


def test_a_filled_lesion_becomes_the_skin_around_it_and_nothing_else_changes():
    img, m = disc((30, 34), 12, (60, 40, 30))
    filled = fill_lesion(img, m)
    assert np.abs(filled - SKIN).max() <= 3.0     # a flat surround inpaints to itself (TELEA in uint8: ±3 levels)
    out = ~grown(m)
    np.testing.assert_array_equal(filled[out], img[out])     # outside the dilated mask: untouched


def test_pasted_image_is_the_lesion_inside_its_mask_and_the_filled_host_outside():
    ruler = SKIN.copy()
    a, ma = disc((20, 22), 10, (90, 60, 40))                 # image 0: a lesion of class a
    a[50:54, :] = (250, 30, 30)                              # ... with a red stripe (an artefact) below it
    b, mb = disc((44, 40), 14, (40, 30, 25), background=ruler)   # image 1: another lesion on plain skin
    x, masks = np.stack([a, b]), np.stack([ma, mb])
    out, hosts = paste_onto_hosts(x, masks, 1.0, np.random.default_rng(0))
    assert list(hosts) == [1, 0]                              # two rows: each is the other's host
    inside0, inside1 = ma[..., 0] > 0, mb[..., 0] > 0
    np.testing.assert_array_equal(out[0][inside0], a[inside0])            # lesion 0 kept exactly
    keep = ~inside0 & ~grown(mb)
    np.testing.assert_array_equal(out[0][keep], b[keep])                  # host 1's surroundings exactly
    gone = ~inside0 & inside1
    assert np.abs(out[0][gone] - SKIN).max() <= 3.0                        # host 1 lesion inpainted to skin
    np.testing.assert_array_equal(out[1][inside1], b[inside1])
    stripe = np.zeros((S, S), bool)
    stripe[50:54, :] = True
    assert np.abs(out[1][stripe & ~inside1] - (250, 30, 30)).max() == 0   # lesion 1 now sits beside the stripe


def test_share_and_empty_masks():
    a, ma = disc((20, 22), 10, (90, 60, 40))
    b, mb = disc((44, 40), 14, (40, 30, 25))
    x = np.stack([a, b, a, b])
    masks = np.stack([ma, np.zeros_like(mb), ma, mb])
    out, hosts = paste_onto_hosts(x, masks, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(out, x)
    assert (hosts == -1).all()
    out, hosts = paste_onto_hosts(x, masks, 1.0, np.random.default_rng(0))
    assert hosts[1] == -1 and np.array_equal(out[1], x[1])                 # nothing to keep: not pasted
    assert (hosts[[0, 2, 3]] >= 0).all() and all(hosts[i] != i for i in (0, 2, 3))
    out, hosts = paste_onto_hosts(x, masks, 0.5, np.random.default_rng(1))
    assert (hosts >= 0).sum() <= 2                                          # round(0.5 · 4) rows drawn


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_training_batches_paste_reproducibly_and_keep_labels_and_masks(pipeline_set, share):
    from conftest import PIPELINE_SIZE

    from dermo.pipeline.batches import LesionBatches

    items = pipeline_set.train_items
    plain = LesionBatches(items, 2, PIPELINE_SIZE, 8, training=True, seed=3)
    pasted = LesionBatches(items, 2, PIPELINE_SIZE, 8, training=True, seed=3, paste_share=share)
    (x0, (y0, m0)), (x1, (y1, m1)) = plain.batch(0), pasted.batch(0)
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_array_equal(m0, m1)
    np.testing.assert_array_equal(x1, pasted.batch(0)[0])                  # the same epoch, the same composite
    changed = [i for i in range(len(x0)) if not np.array_equal(x0[i], x1[i])]
    assert len(changed) == (0 if share == 0 else 4)
    for i in changed:                                                        # each lesion itself kept
        inside = m0[i, ..., 0] > 0
        np.testing.assert_array_equal(x1[i][inside], x0[i][inside])
    assert LesionBatches(items, 2, PIPELINE_SIZE, 8, paste_share=0.5).paste_share == 0.0   # never at eval time
