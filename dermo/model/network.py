"""The flat classifier graph (docs/method.md §4):

    image (B,S,S,3) 0..255 -> EfficientNet -> F (B,h,w,C) -> GAP "gap" -> g (B,C) -> Dropout
        -> Dense(K) "classifier" -> logits z (B,K) -> softmax "probs" p (B,K)

With cam_stride=16, F is a stride-16 map instead (`stride16_features`), so the CAMs have twice the resolution;
GAP, the classifier and the softmax stay as they are, so the logit is still the spatial mean of the CAM plus
the bias.

With metadata (meta_width M > 0, --meta-columns) there is a second input "meta" (B,M) float32 and
        g, meta -> Dense(16, relu) "meta_dense" -> Concatenate "fused" (B,C+16) -> Dropout -> "classifier"
so the classifier kernel W (C+16,K) has the image rows W[:C] (the CAM's, dermo.model.cam) and the metadata
rows W[C:]: logit_k = mean_hw CAM_k + (meta_dense(m)·W[C:, k] + b_k) at inference.

`build_graph` returns the input(s) and a dict of named outputs; `CAMModel` (dermo.model.cam_model) trains on
them and `inference_model` keeps image [, meta] -> p for saving. No builder here compiles anything.
"""
from __future__ import annotations

import keras

from dermo.model.backbones import BackboneSpec, build_backbone, check_image_size, get_backbone
from dermo.model.names import (CAM_FEATURE_LAYERS, CLASSIFIER_LAYER, DROPOUT_LAYER, FEATURE16_LAYER, FUSED_LAYER,
                               GAP_LAYER, INPUT_NAME, META_DENSE_LAYER, META_INPUT, PROBS_LAYER, SEG_LAYER)

HEADS = ("classification", "segmentation")
CAM16_WIDTH = 512                 # channels C of the stride-16 CAM features
META_UNITS = 16


def build_graph(backbone: str = "B0", num_classes: int = 2, image_size: int | None = None,
                weights: str = "none", dropout: float = 0.2, head: str = "classification", cam_stride: int = 32,
                meta_width: int = 0):
    """-> (inputs, outputs) of a fresh flat graph, outputs a dict:
        "probs" (B,K) softmax, "logits" (B,K), "features" F (B,h,w,C), "pooled" g (B,C)
        (+ "mask" (B,S,S,1) sigmoid with head="segmentation"); F is stride 32 or, with cam_stride=16, 16.
    inputs: the image input, or [image, meta] with meta_width > 0."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; use one of {', '.join(HEADS)}")
    if cam_stride not in CAM_FEATURE_LAYERS:
        raise ValueError(f"unknown CAM stride {cam_stride!r}; use 32 or 16")
    spec = get_backbone(backbone)
    size = image_size or spec.resolution
    check_image_size(spec, size)
    inputs = keras.Input((size, size, 3), name=INPUT_NAME)
    base = build_backbone(spec, inputs, weights)   # before `inputs` may become [image, meta]
    top = features = base.get_layer(spec.feature_layer).output
    if cam_stride == 16:
        features = stride16_features(base, spec, top)
    pooled = keras.layers.GlobalAveragePooling2D(name=GAP_LAYER)(features)
    x = pooled
    if meta_width:
        meta = keras.Input((meta_width,), name=META_INPUT)
        m = keras.layers.Dense(META_UNITS, activation="relu", name=META_DENSE_LAYER)(meta)
        x = keras.layers.Concatenate(name=FUSED_LAYER)([pooled, m])             # image rows first: W[:C]
        inputs = [inputs, meta]
    x = keras.layers.Dropout(dropout, name=DROPOUT_LAYER)(x)
    logits = keras.layers.Dense(num_classes, name=CLASSIFIER_LAYER)(x)
    # softmax in float32 also under mixed precision
    probs = keras.layers.Activation("softmax", dtype="float32", name=PROBS_LAYER)(logits)
    outputs = {"probs": probs, "logits": logits, "features": features, "pooled": pooled}
    if head == "segmentation":
        outputs["mask"] = segmentation_decoder(base, spec, top, size)
    return inputs, outputs


def stride16_features(base: keras.Model, spec: BackboneSpec, top, width: int = CAM16_WIDTH):
    """F16 (B,2h',2w',C) = swish(BN(conv1x1(stride-16 map) + resize(conv1x1(last map)))), named FEATURE16_LAYER:
    the stride-16 skip (`spec.skip_layers[0]`) gives the position, the last map (all of the backbone) the
    meaning; the swish after the sum lets the fine branch switch coarse evidence off cell by cell."""
    layers = keras.layers
    skip = base.get_layer(spec.skip_layers[0]).output                   # (B,⌈S/16⌉,⌈S/16⌉,C16)
    h, w = skip.shape[1], skip.shape[2]
    fine = layers.Conv2D(width, 1, use_bias=False, name="cam16_skip")(skip)
    coarse = layers.Conv2D(width, 1, use_bias=False, name="cam16_top")(top)
    coarse = layers.Resizing(h, w, interpolation="bilinear", name="cam16_up")(coarse)
    x = layers.Add(name="cam16_add")([fine, coarse])
    x = layers.BatchNormalization(name="cam16_bn")(x)
    return layers.Activation("swish", name=FEATURE16_LAYER)(x)


def segmentation_decoder(base: keras.Model, spec: BackboneSpec, features, size: int, width: int = 64):
    """A light FPN-style decoder: F (stride 32) -> + skips (strides 16, 8) -> sigmoid mask (B,S,S,1)."""
    layers = keras.layers
    x = layers.Conv2D(width, 1, activation="relu", name="seg_reduce")(features)
    for i, name in enumerate(spec.skip_layers):
        skip = base.get_layer(name).output
        h, w = skip.shape[1], skip.shape[2]
        x = layers.Resizing(h, w, interpolation="bilinear", name=f"seg_up{i}")(x)
        s = layers.Conv2D(width, 1, activation="relu", name=f"seg_skip{i}")(skip)
        x = layers.Add(name=f"seg_add{i}")([x, s])
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"seg_conv{i}")(x)
    x = layers.Conv2D(1, 1, name="seg_logits")(x)
    x = layers.Resizing(size, size, interpolation="bilinear", name="seg_resize")(x)
    return layers.Activation("sigmoid", dtype="float32", name=SEG_LAYER)(x)


def set_bn_momentum(model: keras.Model, momentum: float) -> int:
    """Faster-moving BatchNorm statistics (docs/usage.md "How it works": eval-mode collapse on small data)."""
    n = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            n += 1
    return n


def inference_model(model: keras.Model) -> keras.Model:
    """image [, meta] -> probabilities, sharing the trained layers; saves and loads as plain Keras."""
    return keras.Model(model.input, model.get_layer(PROBS_LAYER).output, name="dermo_classifier")


def segmentation_model(model: keras.Model) -> keras.Model | None:
    """image -> lesion mask (B,S,S,1) for models with a segmentation head, else None."""
    names = {layer.name for layer in model.layers}
    if SEG_LAYER not in names:
        return None
    return keras.Model(model.input, model.get_layer(SEG_LAYER).output, name="dermo_segmenter")
