"""Loss terms of L = L_cls + λ1·L_center + λ2·L_cskl + λ3·L_mask [+ λ4·L_outside] [+ λ_rrr·L_rrr]
(docs/method.md §5).

Pure keras.ops functions; accept tensors or numpy arrays.
"""

from dermo.losses.center import center_loss, center_sums, updated_centers
from dermo.losses.classification import categorical_ce, focal_loss
from dermo.losses.cskl import cam_log_distributions, cskl_loss, kl_penalty
from dermo.losses.lesion_focus import mask_loss, resize_masks
from dermo.losses.occlusion import occlude_outside, outside_logit_loss, outside_swap_loss, swap_outside
from dermo.losses.outside import class_evidence, outside_loss
from dermo.losses.rrr import log_prob_sum, rrr_loss
from dermo.losses.segmentation import dice_bce_loss, soft_dice

__all__ = [
    "cam_log_distributions",
    "categorical_ce",
    "center_loss",
    "center_sums",
    "class_evidence",
    "cskl_loss",
    "dice_bce_loss",
    "focal_loss",
    "kl_penalty",
    "log_prob_sum",
    "mask_loss",
    "occlude_outside",
    "outside_logit_loss",
    "outside_loss",
    "outside_swap_loss",
    "resize_masks",
    "rrr_loss",
    "soft_dice",
    "swap_outside",
    "updated_centers",
]
