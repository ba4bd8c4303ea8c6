"""The CAM-regularised training objective as a pure function of tensors (docs/method.md §5):

    L = L_cls + λ1·L_center + λ2·L_cskl + λ3·L_mask   (+ λ_seg·L_seg with a segmentation head)
        [+ λ4·L_outside, beyond the deck: off (λ4 = 0) unless asked for]
        [+ λ_rrr·L_rrr, "right for the right reasons" (Ross et al. 2017): off unless asked for]

`loss_terms` takes the model's outputs, the classifier kernel W and the class centres as values (not
variables), so the TensorFlow step (GradientTape) and a stateless JAX step share exactly this code.
The class activation maps CAM = einsum(F, W) (B,h,w,K) are computed here, inside the differentiated code.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from keras import ops

from dermo.losses import (categorical_ce, center_loss, cskl_loss, dice_bce_loss, focal_loss, mask_loss,
                          occlude_outside, outside_logit_loss, outside_loss, outside_swap_loss, rrr_loss,
                          soft_dice, swap_outside)
from dermo.model.cam import class_activation_maps
from dermo.model.names import INPUT_NAME

OCCLUSION_FORMS = ("logit", "swap")   # L_outside forms that run the network on a second, occluded image x̃
TERMS = ("cls_loss", "center_loss", "cskl_loss", "mask_loss", "outside_loss", "rrr_loss")


@dataclass(frozen=True)
class LossConfig:
    classification: str = "ce"        # "ce" (2 classes) or "focal"
    lambda_center: float = 1.0
    lambda_cskl: float = 0.1
    lambda_mask: float = 0.5
    cskl: str = "penalized"           # "penalized" | "original" | "off"
    lambda_a: float = 0.1             # penalty strength of the penalised CSKL
    cam_temperature: float = 1.0
    focal_gamma: float = 2.0
    center_momentum: float = 0.5      # new centre = m·old + (1−m)·epoch mean
    lambda_seg: float = 1.0           # segmentation head (when the model has one): BCE + 1 − Dice
    class_weights: tuple[float, ...] | None = None   # per-class weights of L_cls in training (None: all 1)
    lambda_outside: float = 0.0       # λ4: class evidence outside the lesion (0: off, the deck's loss)
    outside_form: str = "logit"       # "logit": logit change when the outside is occluded (out["lesion_logits"]);
                                      # "swap": L_cls and logit change with another image's outside;
                                      # CAM shares: "contrast" |CAM_k − mean_j CAM_j|, "positive" relu(CAM_k)
    lambda_rrr: float = 0.0           # RRR: squared input gradient of Σ log p outside the lesion (out["input_grads"])

    @property
    def needs_occluded(self) -> bool:
        """The train/test step must also run the lesion-only images (out["lesion_logits"])."""
        return bool(self.lambda_outside) and self.outside_form in OCCLUSION_FORMS

    @property
    def needs_input_gradients(self) -> bool:
        """The step must also return out["input_grads"], ∂(Σ log p)/∂image (double backpropagation)."""
        return bool(self.lambda_rrr)

    def to_dict(self) -> dict:
        return asdict(self)


def loss_terms(cfg: LossConfig, y, masks, out: dict, kernel, centers, training: bool = False) -> dict:
    """All terms as float32 scalars; `loss` is their weighted sum; terms switched off are 0.

    Args:
        cfg: loss weights and options.
        y: (B,K) one-hot labels.  masks: (B,S,S,1) lesion masks in {0,1}.
        out: the graph's outputs: "logits" (B,K), "features" F (B,h,w,C), "pooled" g (B,C)
             [, "mask" (B,S,S,1)] [, "lesion_logits" (B,K): the logits of the images occluded outside the lesion
             (dermo.losses.occlude_outside), which the step adds when cfg.needs_occluded]
             [, "input_grads" (B,S,S,3): ∂(Σ log p)/∂image, which the step adds when cfg.needs_input_gradients].
        kernel: (C,K) classifier kernel W.  centers: (K,C) class centres (constants for the gradient).
        training: class weights apply to L_cls in training only (the validation loss stays unweighted).
    """
    y = ops.cast(y, "float32")
    labels = ops.argmax(y, axis=-1)
    features = ops.cast(out["features"], "float32")
    pooled = ops.cast(out["pooled"], "float32")
    cams = class_activation_maps(features, ops.cast(kernel, "float32"))          # (B,h,w,K)
    weights = None
    if training and cfg.class_weights is not None:
        weights = ops.sum(y * ops.convert_to_tensor(cfg.class_weights, "float32"), axis=-1)   # (B,)
    zero = ops.zeros((), "float32")
    cls = (categorical_ce(y, out["logits"], weights) if cfg.classification == "ce"
           else focal_loss(y, out["logits"], cfg.focal_gamma, weights))
    terms = {
        "cls_loss": cls,
        "center_loss": center_loss(pooled, labels, centers) if cfg.lambda_center else zero,
        "cskl_loss": (cskl_loss(cams, labels, mode=cfg.cskl, lambda_a=cfg.lambda_a,
                                temperature=cfg.cam_temperature)
                      if cfg.lambda_cskl and cfg.cskl != "off" else zero),
        "mask_loss": mask_loss(cams, masks) if cfg.lambda_mask else zero,
    }
    if not cfg.lambda_outside:
        terms["outside_loss"] = zero
    elif cfg.outside_form == "logit":
        terms["outside_loss"] = outside_logit_loss(out["logits"], out["lesion_logits"], masks)
    elif cfg.outside_form == "swap":
        terms["outside_loss"] = outside_swap_loss(y, out["logits"], out["lesion_logits"], masks,
                                                  cfg.classification, cfg.focal_gamma)
    else:
        terms["outside_loss"] = outside_loss(cams, masks, cfg.outside_form)
    terms["rrr_loss"] = rrr_loss(out["input_grads"], masks) if cfg.lambda_rrr else zero
    terms["loss"] = (terms["cls_loss"] + cfg.lambda_center * terms["center_loss"]
                     + cfg.lambda_cskl * terms["cskl_loss"] + cfg.lambda_mask * terms["mask_loss"]
                     + cfg.lambda_outside * terms["outside_loss"] + cfg.lambda_rrr * terms["rrr_loss"])
    if "mask" in out:
        seg = ops.cast(out["mask"], "float32")
        terms["seg_loss"] = dice_bce_loss(masks, seg)
        terms["seg_dice"] = soft_dice(masks, ops.cast(seg > 0.5, "float32"))
        terms["loss"] = terms["loss"] + cfg.lambda_seg * terms["seg_loss"]
    return terms


def with_occluded(x, masks, form="logit"):
    """[x, x̃] as one batch (2B,S,S,3): x̃ = x with the outside of the lesion replaced, for the occlusion forms of
    L_outside — by grey ("logit", dermo.losses.occlude_outside) or by the next image's outside ("swap",
    dermo.losses.swap_outside); one pass over both lets the halves share BatchNorm's batch statistics.
    A dict input {"image", other inputs} occludes the image and repeats the other inputs."""
    if isinstance(x, dict):
        return {k: with_occluded(v, masks, form) if k == INPUT_NAME else ops.concatenate([v, v], axis=0)
                for k, v in x.items()}
    occlude = swap_outside if form == "swap" else occlude_outside
    return ops.concatenate([ops.cast(x, "float32"), occlude(x, masks)], axis=0)


def split_occluded(both: dict, b) -> dict:
    """The graph's outputs on with_occluded(x, masks) -> x's outputs plus "lesion_logits" (B,K), those of x̃."""
    out = {k: v[:b] for k, v in both.items()}
    out["lesion_logits"] = both["logits"][b:]
    return out
