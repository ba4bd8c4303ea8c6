"""Class activation maps (CAM) of a trained classifier, as numpy.

The models are flat Keras functional graphs
    image (B,S,S,3) float 0..255 -> ... -> F (B,h,w,C) -> GlobalAveragePooling2D "gap"
    -> Dropout -> Dense(K, softmax) "classifier" -> probs (B,K)
so the feature map is the input of layer "gap" and CAM_k = sum_c F[..., c] * W[c, k] with W the
"classifier" kernel (C, K). Averaging CAM_k over positions and adding the bias gives the logit of
class k (Dropout is the identity at inference). F is the output of the layer named by the model contract's
`feature_layer`: "top_activation" (stride 32) or, for --cam-stride 16, "cam16_features" (stride 16).
A model with metadata (second input "meta") classifies
concat(g, meta branch): its kernel is (C + 16, K) and the CAM uses only the image rows W[:C], so averaging
CAM_k gives the image part of the logit; logit_k = mean CAM_k + (meta part + bias) (dermo.model.cam).
"""
from __future__ import annotations

import keras
import numpy as np

from dermo.model.names import CLASSIFIER_LAYER, GAP_LAYER


def _layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(f"model has no layer '{name}' (CAMs need a GlobalAveragePooling2D named "
                         f"'{GAP_LAYER}' followed by a Dense named '{CLASSIFIER_LAYER}')") from None


def feature_layer_name(model) -> str:
    """Name of the layer whose output "gap" pools: the CAM features."""
    features = _layer(model, GAP_LAYER).input
    return next(layer.name for layer in model.layers if layer.output is features)


def feature_model(model, layer: str | None = None) -> keras.Model:
    """keras.Model mapping image (B,S,S,3) [and meta (B,M)] -> [features (B,h,w,C), probs (B,K)]; `layer` (e.g. the contract's
    feature_layer) must name the layer that "gap" pools, since only its CAMs are exact class evidence."""
    gap = _layer(model, GAP_LAYER)
    _layer(model, CLASSIFIER_LAYER)
    features = gap.input
    if layer is not None and _layer(model, layer).output is not features:
        raise ValueError(f"layer '{layer}' is not the feature map that '{GAP_LAYER}' pools "
                         f"('{feature_layer_name(model)}'); its CAMs would not add up to the logits")
    if len(features.shape) != 4:
        raise ValueError(f"layer '{GAP_LAYER}' input must be a (B,h,w,C) feature map, "
                         f"got shape {features.shape}")
    return keras.Model(model.input, [features, model.outputs[0]], name="cam_features")


def classifier_weights(model) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (C,K), bias (K,)) of the "classifier" Dense layer as numpy (bias zeros if none); a metadata
    model's kernel is (C + 16, K), its image rows first."""
    dense = _layer(model, CLASSIFIER_LAYER)
    kernel = np.asarray(dense.kernel.numpy(), np.float32)                 # (C, K)
    bias = (np.asarray(dense.bias.numpy(), np.float32)
            if getattr(dense, "bias", None) is not None else np.zeros(kernel.shape[1], np.float32))
    return kernel, bias


def cams_from_features(features, kernel) -> np.ndarray:
    """features (B,h,w,C), kernel (C,K) -> CAMs (B,h,w,K); a longer kernel (metadata model) contributes
    only its image-feature rows kernel[:C]."""
    features = np.asarray(features, np.float32)
    return np.einsum("bhwc,ck->bhwk", features, np.asarray(kernel)[:features.shape[-1]])


def predict_with_cams(model, images, batch_size: int = 16, meta=None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and all classes' CAMs for a stack of images.

    images (N,S,S,3) (uint8 or float 0..255) -> probs float32 (N,K), cams float32 (N,h,w,K).
    meta (N,M) float32: the encoded metadata, for (and only for) a model with a "meta" input.
    Batched, so only one batch of the (larger) feature maps is ever held in memory.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N,S,S,3), got {images.shape}")
    if (meta is not None) != (len(model.inputs) > 1):
        raise ValueError("give meta (N,M) exactly when the model has a metadata input "
                         f"(its inputs: {', '.join(t.name for t in model.inputs)})")
    fmodel = feature_model(model)
    kernel, _ = classifier_weights(model)
    probs, cams = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].astype(np.float32)     # (b,S,S,3)
        if meta is not None:
            batch = {"image": batch, "meta": np.asarray(meta[start:start + batch_size], np.float32)}
        features, p = fmodel.predict_on_batch(batch)                      # (b,h,w,C), (b,K)
        probs.append(np.asarray(p, np.float32))
        cams.append(cams_from_features(features, kernel))                # (b,h,w,K)
    if not probs:
        out_h, out_w = fmodel.outputs[0].shape[1:3]
        k = kernel.shape[1]
        return np.zeros((0, k), np.float32), np.zeros((0, out_h or 0, out_w or 0, k), np.float32)
    return np.concatenate(probs), np.concatenate(cams)


def predicted_class_cams(probs, cams) -> np.ndarray:
    """probs (N,K), cams (N,h,w,K) -> the argmax class's CAM per image (N,h,w)."""
    idx = np.asarray(probs).argmax(axis=1)
    return np.take_along_axis(np.asarray(cams), idx[:, None, None, None], axis=3)[..., 0]
