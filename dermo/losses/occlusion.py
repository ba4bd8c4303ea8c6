"""The outside part of the logit, measured by occlusion: L_outside's "logit" form (docs/method.md §5).

The CAM forms (dermo.losses.outside) count where the class evidence *sits* on the feature grid; but every cell of
a deep feature map sees most of the image, so a lesion cell can carry an artefact's evidence. The logit form
measures what the decision *takes* from outside the lesion instead: the same network on the image with
everything outside the lesion replaced by a constant grey,

    x̃_i = m_i·x_i + (1 − m_i)·FILL,   FILL = 127.5 on every channel   (x_i itself where m_i is full)

The fill must not depend on the outside: a fill computed from it (its mean colour, a blur) still carries the
artefact — a sticker shifts the mean colour by a few units — and a network learns to read that instead.

and the change of the class-contrast logits, z_k − mean_j z_j, between x_i and x̃_i:

    Δ_ik = (z_ik − z̃_ik) − mean_j (z_ij − z̃_ij)          (K = 2: Δ_i1 = −Δ_i0 = half the change of z_1 − z_0)
    L = Σ_i valid_i · mean_k Δ_ik² / max(Σ_i valid_i, 1),   valid_i = [mean m_i > 1e-6]

L = 0 exactly when no decision changes when the outside is removed. Empty masks are left out (x̃ would be
blank); full masks give x̃ = x.

The "swap" form replaces the outside by another image's outside instead of grey (the next image of the batch,
its own lesion greyed), so a class-correlated artefact travels to an image of the other class about half the
time:

    x̂_i = m_i·x_i + (1 − m_i)·((1 − m_j)·x_j + m_j·FILL),   j = i + 1 (mod B)
    L = Σ_i valid_i · (L_cls(y_i, ẑ_i) + mean_k Δ̂_ik²) / max(Σ_i valid_i, 1)

with Δ̂ the class-contrast change between z_i and ẑ_i as above: the swapped image must be classified by its own
lesion's label, and the decision must not move with the outside it was given.
"""

from keras import ops

from dermo.losses.classification import categorical_ce, focal_loss

FILL = 127.5          # the grey that replaces the outside of the lesion (images are 0..255)


def occlude_outside(images, masks, fill=FILL):
    """images (B,S,S,3) 0..255, masks (B,S,S,1) or (B,S,S) in [0,1] -> (B,S,S,3) float32: the lesion as it is,
    `fill` outside it (no gradient: the images are data)."""
    x = ops.cast(ops.convert_to_tensor(images), "float32")
    m = ops.cast(ops.convert_to_tensor(masks), "float32")
    if len(m.shape) == 3:
        m = m[..., None]
    return ops.stop_gradient(m * x + (1.0 - m) * fill)


def swap_outside(images, masks, fill=FILL):
    """images (B,S,S,3) 0..255, masks (B,S,S,1) or (B,S,S) in [0,1] -> (B,S,S,3) float32: each lesion as it is,
    outside it the outside of the next image of the batch (that image's lesion replaced by `fill`)."""
    x = ops.cast(ops.convert_to_tensor(images), "float32")
    m = ops.cast(ops.convert_to_tensor(masks), "float32")
    if len(m.shape) == 3:
        m = m[..., None]
    other_x, other_m = ops.roll(x, -1, axis=0), ops.roll(m, -1, axis=0)              # image j = i + 1 (mod B)
    other_outside = (1.0 - other_m) * other_x + other_m * fill
    return ops.stop_gradient(m * x + (1.0 - m) * other_outside)


def lesion_valid(masks, min_lesion=1e-6):
    """(B,) 1.0 where the mask has a lesion (mean > min_lesion), else 0.0."""
    m = ops.cast(ops.convert_to_tensor(masks), "float32")
    return ops.cast(ops.mean(ops.reshape(m, (ops.shape(m)[0], -1)), axis=1) > min_lesion, "float32")


def outside_logit_loss(logits, lesion_logits, masks, min_lesion=1e-6):
    """Mean squared change of the class-contrast logits when the outside of the lesion is occluded (module
    docstring). logits, lesion_logits (B,K); masks (B,S,S,1) or (B,S,S). Scalar float32 ≥ 0."""
    change = ops.cast(logits, "float32") - ops.cast(lesion_logits, "float32")             # (B,K)
    delta = change - ops.mean(change, axis=1, keepdims=True)
    valid = lesion_valid(masks, min_lesion)                                                # (B,)
    return ops.sum(ops.mean(ops.square(delta), axis=1) * valid) / ops.maximum(ops.sum(valid), 1.0)


def outside_swap_loss(y_true, logits, swapped_logits, masks, classification="ce", gamma=2.0, min_lesion=1e-6):
    """The swap form (module docstring). y_true (B,K) one-hot; logits, swapped_logits (B,K): of x and of x̂
    (swap_outside); masks (B,S,S,1) or (B,S,S); classification "ce" or "focal" (γ = gamma), as L_cls.
    Scalar float32 ≥ 0; images with empty masks are left out."""
    valid = lesion_valid(masks, min_lesion)                                                # (B,)
    weights = valid * ops.cast(ops.shape(valid)[0], "float32") / ops.maximum(ops.sum(valid), 1.0)
    cls = (categorical_ce(y_true, swapped_logits, weights) if classification == "ce"
           else focal_loss(y_true, swapped_logits, gamma, weights))
    return cls + outside_logit_loss(logits, swapped_logits, masks, min_lesion)
