"""CAMModel: the flat graph plus a custom train_step/test_step with the four-term loss (docs/method.md §5).

    L = L_cls + λ1·L_center + λ2·L_cskl + λ3·L_mask

Inside the GradientTape the class activation maps of every class are computed from the last conv
feature map F (B,h,w,C) and the classifier kernel W (C,K): CAM = einsum(F, W) (B,h,w,K).
Per-term trackers are listed in `metrics`, so Keras logs real values for train and val.
Centres (K,C) live in non-trainable variables: train_step accumulates per-class sums/counts of the
pooled features, and `refresh_centers()` (called by a callback at each epoch end) moves the centres.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import tensorflow as tf
from keras import ops

from dermo.losses import (categorical_ce, center_loss, center_sums, cskl_loss, dice_bce_loss, focal_loss,
                          mask_loss, soft_dice, updated_centers)
from dermo.model.cam import class_activation_maps
from dermo.model.names import CLASSIFIER_LAYER

TERMS = ("cls_loss", "center_loss", "cskl_loss", "mask_loss")


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

    def to_dict(self) -> dict:
        return asdict(self)


class CAMModel(keras.Model):
    """Functional model image -> [probs, features, pooled (, mask)] trained with the CAM-regularised
    loss; a fourth output (segmentation head) adds λ_seg·(BCE + 1 − Dice) against the lesion mask."""

    def __init__(self, inputs, outputs, loss_config: LossConfig | None = None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.loss_config = loss_config or LossConfig()
        num_classes, channels = outputs[0].shape[-1], outputs[2].shape[-1]
        self.num_classes = num_classes
        self.has_segmentation = len(outputs) > 3
        self.centers = self.add_weight(shape=(num_classes, channels), initializer="zeros",
                                       trainable=False, name="centers")
        self.center_sum = self.add_weight(shape=(num_classes, channels), initializer="zeros",
                                          trainable=False, aggregation="sum", name="center_sum")
        self.center_count = self.add_weight(shape=(num_classes,), initializer="zeros",
                                            trainable=False, aggregation="sum", name="center_count")
        names = ("loss",) + TERMS + (("seg_loss", "seg_dice") if self.has_segmentation else ())
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.accuracy_metric = keras.metrics.CategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        return [*self.trackers.values(), self.accuracy_metric]

    def loss_terms(self, y, masks, probs, features, pooled, seg=None) -> dict:
        """All terms as float32 scalars; `loss` is their weighted sum. Terms switched off are 0."""
        cfg = self.loss_config
        y = ops.cast(y, "float32")
        labels = ops.argmax(y, axis=-1)
        features = ops.cast(features, "float32")
        pooled = ops.cast(pooled, "float32")
        kernel = ops.cast(self.get_layer(CLASSIFIER_LAYER).kernel, "float32")
        cams = class_activation_maps(features, kernel)                     # (B,h,w,K)
        zero = ops.zeros((), "float32")
        cls = (categorical_ce(y, probs) if cfg.classification == "ce"
               else focal_loss(y, probs, gamma=cfg.focal_gamma))
        terms = {
            "cls_loss": cls,
            "center_loss": (center_loss(pooled, labels, self.centers)
                            if cfg.lambda_center else zero),
            "cskl_loss": (cskl_loss(cams, labels, mode=cfg.cskl, lambda_a=cfg.lambda_a,
                                    temperature=cfg.cam_temperature)
                          if cfg.lambda_cskl and cfg.cskl != "off" else zero),
            "mask_loss": mask_loss(cams, masks) if cfg.lambda_mask else zero,
        }
        terms["loss"] = (terms["cls_loss"] + cfg.lambda_center * terms["center_loss"]
                         + cfg.lambda_cskl * terms["cskl_loss"] + cfg.lambda_mask * terms["mask_loss"])
        if seg is not None:
            terms["seg_loss"] = dice_bce_loss(masks, seg)
            terms["seg_dice"] = soft_dice(masks, ops.cast(seg > 0.5, "float32"))
            terms["loss"] = terms["loss"] + cfg.lambda_seg * terms["seg_loss"]
        return terms

    def _update_trackers(self, terms, y, probs):
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        self.accuracy_metric.update_state(y, probs)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, (y, masks), _ = keras.utils.unpack_x_y_sample_weight(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            probs, features, pooled, *seg = self(x, training=True)
            terms = self.loss_terms(y, masks, probs, features, pooled, *seg)
            # gradients are summed over replicas: each replica contributes loss / replicas
            scaled = self.optimizer.scale_loss(terms["loss"] / replicas)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        sums, counts = center_sums(ops.cast(pooled, "float32"), ops.argmax(y, axis=-1), self.num_classes)
        self.center_sum.assign_add(sums)
        self.center_count.assign_add(counts)
        return self._update_trackers(terms, y, probs)

    def test_step(self, data):
        x, (y, masks), _ = keras.utils.unpack_x_y_sample_weight(data)
        probs, features, pooled, *seg = self(x, training=False)
        terms = self.loss_terms(y, masks, probs, features, pooled, *seg)
        return self._update_trackers(terms, y, probs)

    def predict_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        return self(x, training=False)

    def set_centers(self, centers) -> None:
        self.centers.assign(ops.cast(centers, "float32"))

    def refresh_centers(self) -> None:
        """Move the centres towards this epoch's class means (classes unseen keep theirs); reset sums."""
        new = updated_centers(self.centers, self.center_sum, self.center_count,
                              self.loss_config.center_momentum)
        self.centers.assign(new)
        self.center_sum.assign(ops.zeros_like(self.center_sum))
        self.center_count.assign(ops.zeros_like(self.center_count))
