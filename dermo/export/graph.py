"""The graph that is exported: the classifier's inputs -> {"probs": (B,K)[, "cams": (B,h,w,K)]}.

    export_graph(model, temperature=1.0, with_cams=False) -> keras.Model

probs are the model's softmax with the stored temperature applied in the graph, exactly as
dermo.metrics.apply_temperature does it: softmax(log(max(p, float32 tiny)) / T) (no layer when T = 1).
cams are computed in the graph from the feature map F (B,h,w,C) (the input of layer "gap") and the "classifier"
kernel W (C,K): CAM_k = Σ_c F[..., c]·W[c, k], a bias-free Dense layer on F holding a copy of W — what
dermo.predict.cams computes in numpy. CAMs and the argmax do not depend on T.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from dermo.predict.cams import classifier_weights, feature_model

TINY = float(np.finfo(np.float32).tiny)


class TemperatureSoftmax(keras.layers.Layer):
    """p (B,K) -> softmax(log(max(p, tiny)) / T) (B,K)."""

    def __init__(self, temperature: float, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, probs):
        return ops.softmax(ops.log(ops.maximum(probs, TINY)) / self.temperature, axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def export_graph(model: keras.Model, temperature: float = 1.0, with_cams: bool = False) -> keras.Model:
    """The classifier (image -> probs, as saved in model.keras) as the exported graph. A model with several
    inputs (e.g. image and metadata) keeps them, keyed by their names."""
    features, probs = feature_model(model).outputs                       # (B,h,w,C), (B,K)
    if temperature != 1.0:
        probs = TemperatureSoftmax(temperature, name="calibrated_probs")(probs)
    outputs = {"probs": probs}
    if with_cams:
        kernel = classifier_weights(model)[0][:features.shape[-1]]     # image-feature rows of W (C,K)
        cams = keras.layers.Dense(kernel.shape[1], use_bias=False, dtype="float32", name="cams")
        outputs["cams"] = cams(features)                                # (B,h,w,K)
        cams.set_weights([kernel])
    inputs = model.inputs[0] if len(model.inputs) == 1 else {t.name: t for t in model.inputs}
    return keras.Model(inputs, outputs, name="dermo_export")
