"""Outside-evidence term L_outside, CAM forms: the share of each class's CAM evidence that lies outside the lesion
(docs/method.md §5; beyond the source deck, off unless --lambda-outside > 0; the default form is the occlusion
one, dermo.losses.occlusion).

The logit of class k is the spatial mean of its CAM plus a bias, so softmax probabilities depend on the
class-contrast maps D_k = CAM_k − mean_j CAM_j only: D_k(n) is position n's contribution to how much class k
beats the average class (for K = 2, D_1 = −D_0 = (CAM_1 − CAM_0)/2, the evidence for the decision itself).
With m the mask area-averaged to the CAM grid (cell = lesion fraction), per image i and class k:

    contrast form:            share_ik = Σ_n |D_ik(n)|·(1 − m_i(n)) / (Σ_n |D_ik(n)| + ε)
    positive form:            share_ik = Σ_n relu(CAM_ik(n))·(1 − m_i(n)) / (Σ_n relu(CAM_ik(n)) + ε)
    L = Σ_i valid_i · mean_k share_ik / max(Σ_i valid_i, 1),   valid_i = [mean m_i > 1e-6]  (a lesion present)

Both lie in [0, 1] and are scale-invariant (inflating the CAMs does not lower them). The positive form measures
what the lesion-focus metric measures, but evidence can leave through negative values: an artefact that pushes
the *other* class's CAM down outside the lesion decides the class while every positive mass sits inside. The
contrast form counts evidence of both signs. Full masks give 0; empty masks are left out (no lesion to
attend to).
"""

from keras import ops

from dermo.losses.lesion_focus import resize_masks
from dermo.losses.occlusion import lesion_valid

FORMS = ("contrast", "positive")


def class_evidence(cams, form="contrast"):
    """Non-negative evidence maps (B, h, w, K): |CAM_k − mean_j CAM_j| ("contrast") or relu(CAM_k)
    ("positive")."""
    cams = ops.cast(ops.convert_to_tensor(cams), "float32")
    if form == "contrast":
        return ops.abs(cams - ops.mean(cams, axis=-1, keepdims=True))
    if form == "positive":
        return ops.relu(cams)
    raise ValueError(f"unknown outside-evidence form {form!r}; use one of {', '.join(FORMS)}")


def outside_loss(cams, masks, form="contrast", eps=1e-6, min_lesion=1e-6):
    """Mean share of class evidence outside the lesion (module docstring).

    Args:
        cams: (B, h, w, K) class activation maps.
        masks: (B, H, W, 1) or (B, H, W) lesion masks in [0, 1] (area-averaged to (h, w), no gradient).
        form: "contrast" or "positive".
        eps: added to each map's total evidence (a map without evidence has share 0).
        min_lesion: images whose resized mask mean is at or below this (empty masks) are left out.

    Returns:
        scalar float32 tensor in [0, 1]; 0 when no image has a lesion.
    """
    evidence = class_evidence(cams, form)                                   # (B,h,w,K)
    b, h, w, k = ops.shape(evidence)
    m = resize_masks(masks, (h, w))                                         # (B,h,w)
    outside = ops.sum(evidence * (1.0 - m)[..., None], axis=(1, 2))         # (B,K)
    share = outside / (ops.sum(evidence, axis=(1, 2)) + eps)                # (B,K)
    valid = lesion_valid(m, min_lesion)                                     # (B,)
    return ops.sum(ops.mean(share, axis=1) * valid) / ops.maximum(ops.sum(valid), 1.0)
