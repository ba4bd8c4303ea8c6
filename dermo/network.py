"""The flat classifier graph (DESIGN.md §4):

    image (B,S,S,3) 0..255 -> EfficientNet -> F (B,h,w,C) -> GAP "gap" -> g (B,C) -> Dropout
        -> Dense(K) "classifier" -> softmax p (B,K)

`build_network` returns the layers' outputs; `CAMModel` (dermo.cam_model) trains on them and
`inference_model` keeps image -> p for saving. No builder here compiles anything.
"""
from __future__ import annotations

import keras

from dermo.backbones import build_features, check_image_size, get_backbone

GAP_LAYER = "gap"
CLASSIFIER_LAYER = "classifier"
PROBS_LAYER = "probs"


def build_graph(backbone: str = "B0", num_classes: int = 2, image_size: int | None = None,
                weights: str = "none", dropout: float = 0.2, bn_momentum: float | None = None):
    """-> (inputs, [probs (B,K), features (B,h,w,C), pooled (B,C)]) of a fresh flat graph."""
    spec = get_backbone(backbone)
    size = image_size or spec.resolution
    check_image_size(spec, size)
    inputs = keras.Input((size, size, 3), name="image")
    features = build_features(spec, inputs, weights)
    pooled = keras.layers.GlobalAveragePooling2D(name=GAP_LAYER)(features)
    x = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
    logits = keras.layers.Dense(num_classes, name=CLASSIFIER_LAYER)(x)
    # softmax in float32 also under mixed precision
    probs = keras.layers.Activation("softmax", dtype="float32", name=PROBS_LAYER)(logits)
    return inputs, [probs, features, pooled]


def set_bn_momentum(model: keras.Model, momentum: float) -> int:
    """Faster-moving BatchNorm statistics (see README: eval-mode collapse on small data)."""
    n = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            n += 1
    return n


def inference_model(model: keras.Model) -> keras.Model:
    """image -> probabilities, sharing the trained layers; saves and loads as plain Keras."""
    return keras.Model(model.input, model.get_layer(PROBS_LAYER).output, name="dermo_classifier")
