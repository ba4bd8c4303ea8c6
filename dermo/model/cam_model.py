"""CAMModel: the flat graph plus a custom train_step/test_step with the four-term loss (docs/method.md §5).

    L = L_cls + λ1·L_center + λ2·L_cskl + λ3·L_mask   [+ λ4·L_outside] [+ λ_rrr·L_rrr]

Inside the GradientTape the class activation maps of every class are computed from the last conv
feature map F (B,h,w,C) and the classifier kernel W (C,K): CAM = einsum(F, W) (B,h,w,K).
Per-term trackers are listed in `metrics`, so Keras logs real values for train and val.
Centres (K,C) live in non-trainable variables: train_step accumulates per-class sums/counts of the
pooled features, and `refresh_centers()` (called by a callback at each epoch end) moves the centres.
Under KERAS_BACKEND=jax the steps are the stateless ones of dermo.model.jax_step (same loss code); TensorFlow
is imported only by the TensorFlow step.
"""
from __future__ import annotations

import keras
from keras import ops

from dermo.losses import center_sums, log_prob_sum, updated_centers
from dermo.model.names import CLASSIFIER_LAYER, INPUT_NAME
from dermo.model.objective import TERMS, LossConfig, loss_terms, split_occluded, with_occluded

__all__ = ["CAMModel", "LossConfig", "TERMS"]

_JAX = keras.backend.backend() == "jax"


def _jax_step():
    from dermo.model import jax_step

    return jax_step


class CAMModel(keras.Model):
    """Functional model image -> {"probs", "logits", "features", "pooled"[, "mask"]} (dermo.model.network)
    trained with the CAM-regularised loss (dermo.model.objective); a segmentation head ("mask") adds
    λ_seg·(BCE + 1 − Dice) against the lesion mask."""

    def __init__(self, inputs, outputs, loss_config: LossConfig | None = None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.loss_config = loss_config or LossConfig()
        num_classes, channels = outputs["probs"].shape[-1], outputs["pooled"].shape[-1]
        self.num_classes = num_classes
        self.has_segmentation = "mask" in outputs
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

    def loss_terms(self, y, masks, out: dict, training: bool = False) -> dict:
        """dermo.model.objective.loss_terms with this model's classifier kernel and centres."""
        return loss_terms(self.loss_config, y, masks, out, self.get_layer(CLASSIFIER_LAYER).kernel,
                          self.centers, training)

    def forward(self, x, masks, training: bool = False) -> dict:
        """The graph's outputs on x; with the occlusion form of L_outside also "lesion_logits", the logits of x
        occluded outside the lesion — one pass over [x, x̃] (2B), so both halves share BatchNorm's batch
        statistics; every other output is x's half. With RRR also "input_grads" = ∂(Σ log p)/∂image (B,S,S,3),
        from a tape nested in the step's own: the step differentiates it again (double backpropagation)."""
        if not self.loss_config.needs_input_gradients:
            return self._graph_outputs(x, masks, training)
        import tensorflow as tf

        from dermo.model.exact_moments import exact_batch_moments

        image = tf.cast(x[INPUT_NAME] if isinstance(x, dict) else x, "float32")
        with exact_batch_moments(), tf.GradientTape() as tape:   # tf.nn.moments: second order inexact
            tape.watch(image)
            out = self._graph_outputs({**x, INPUT_NAME: image} if isinstance(x, dict) else image, masks, training)
            total = log_prob_sum(out["logits"])
        return {**out, "input_grads": tape.gradient(total, image)}

    def _graph_outputs(self, x, masks, training: bool) -> dict:
        if not self.loss_config.needs_occluded:
            return self(x, training=training)
        return split_occluded(self(with_occluded(x, masks, self.loss_config.outside_form), training=training),
                              ops.shape(masks)[0])

    def _update_trackers(self, terms, y, probs, weight=None):
        # weighted by the batch size: epoch values are means over images, also with a partial last batch
        # (a validation image given twice to fill a replica's empty share of a batch comes with weight 0)
        n = ops.cast(ops.shape(y)[0], "float32") if weight is None else ops.sum(ops.cast(weight, "float32"))
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name], sample_weight=n)
        self.accuracy_metric.update_state(y, probs, sample_weight=weight)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, *args):
        if _JAX:                                            # (state, data) -> (logs, state)
            return _jax_step().train_step(self, *args)
        import tensorflow as tf

        x, (y, masks), _ = keras.utils.unpack_x_y_sample_weight(args[0])
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            out = self.forward(x, masks, training=True)
            terms = self.loss_terms(y, masks, out, training=True)
            # gradients are summed over replicas: each replica contributes loss / replicas
            scaled = self.optimizer.scale_loss(terms["loss"] / replicas)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        sums, counts = center_sums(ops.cast(out["pooled"], "float32"), ops.argmax(y, axis=-1),
                                   self.num_classes)
        self.center_sum.assign_add(sums)
        self.center_count.assign_add(counts)
        return self._update_trackers(terms, y, out["probs"])

    def test_step(self, *args):
        if _JAX:
            return _jax_step().test_step(self, *args)
        x, (y, masks), weight = keras.utils.unpack_x_y_sample_weight(args[0])
        out = self.forward(x, masks, training=False)
        return self._update_trackers(self.loss_terms(y, masks, out), y, out["probs"], weight)

    def predict_step(self, *args):
        if _JAX:
            return super().predict_step(*args)
        data = args[0]
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
