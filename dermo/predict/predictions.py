"""Predicting prepared (cached) images in one pass: probabilities and, per image, how the predicted class's
CAM sits on the lesion mask; optional TTA.

    predict_items(model, items, K, ...) -> Predictions (probs (N,K), lesion focus and Pearson r per image,
                                           max |CAM|, a CAM preview of a few images spread over the set)

Shapes: images x (B,S,S,3) float 0..255, masks (B,S,S) {0,1}, features (B,h,w,C), CAMs (B,h,w,K),
probabilities (N,K). A TTA transform t acts on the spatial axes (1, 2) of any of these arrays. A metadata
model's batches are {"image": x, "meta": (B,M)}: TTA transforms the image only.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from keras import ops

from dermo import metrics
from dermo.data.metadata import MetaEncoding
from dermo.losses.occlusion import occlude_outside
from dermo.pipeline.batches import LesionBatches, image_of
from dermo.predict.cams import (cams_from_features, classifier_weights, feature_model,
                                predicted_class_cams)
from dermo.predict.loading import model_image_size
from dermo.predict.tta import check_tta, tta_forward, tta_inverse

PREVIEW = 16                      # images shown in cams.png


@dataclass
class Predictions:
    paths: list[str]                 # source image paths, as the dataset gives them
    labels: np.ndarray               # (N,) int, -1 = unlabelled
    probs: np.ndarray                # (N,K) float32
    focus: np.ndarray | None = None  # (N,) per-image lesion focus (NaN where undefined)
    pearson: np.ndarray | None = None  # (N,) per-image Pearson r of CAM vs mask (NaN where undefined)
    max_abs_cam: float | None = None   # over every class's CAM of every image
    preview: dict | None = None      # images uint8 (n,S,S,3), cams (n,h,w), masks (n,S,S), index (n,)
    probs_greyed: np.ndarray | None = None   # (N,K) the same images with everything outside the lesion mask grey


class BatchPredictor:
    """Batch -> (probs (B,K), CAMs (B,h,w,K) or None); TTA averages both over the transforms.
    Every call has the same batch shape (the last batch is padded), so the graph is traced once."""

    def __init__(self, model, with_cams: bool, tta: int):
        self.tta, self.with_cams = check_tta(tta), with_cams
        self.fmodel = feature_model(model) if with_cams else model
        self.kernel = classifier_weights(model)[0] if with_cams else None    # (C,K)

    def __call__(self, x):
        """x: images (B,S,S,3), or {"image": images, "meta": (B,M)} for a metadata model."""
        probs, cams = 0.0, 0.0
        for t in range(self.tta):
            image = np.ascontiguousarray(tta_forward(image_of(x), t))
            out = self.fmodel.predict_on_batch({**x, "image": image} if isinstance(x, dict) else image)
            if self.with_cams:
                features, out = out
                cams = cams + tta_inverse(cams_from_features(features, self.kernel), t)
            probs = probs + np.asarray(out, np.float64)
        probs = (probs / self.tta).astype(np.float32)
        return probs, (np.asarray(cams / self.tta, np.float32) if self.with_cams else None)


def pad_batch(x, size: int):
    """(b,...) -> (size,...) repeating the last row (keeps one traced batch shape); a dict of such arrays
    (image and metadata) -> each padded."""
    if isinstance(x, dict):
        return {k: pad_batch(v, size) for k, v in x.items()}
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


def _per_image_pearson(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:
    r = [metrics.cam_mask_pearson(c[None], m[None]) for c, m in zip(cams, masks)]
    return np.array([np.nan if v is None else v for v in r], np.float64)


def predict_items(model, items, num_classes: int, batch_size: int = 16, tta: int = 1,
                  with_cams: bool = True, preview: int = PREVIEW, progress: bool = False,
                  meta: MetaEncoding | None = None, grey_outside: bool = False) -> Predictions:
    """Predict Prepared items (dermo.pipeline) in one pass; the next batch is read while one predicts.
    `meta`: the metadata encoding of a metadata model (each item's raw metadata is encoded with it).
    `grey_outside`: also predict every image with everything outside its lesion mask replaced by grey (the
    occlusion of L_outside's logit form, dermo.losses.occlusion): out.probs_greyed. A model that decides from
    the lesion changes few decisions.

    with_cams: also score the predicted class's CAM against the lesion mask per image and keep
    `preview` images spread evenly over the set (so every class shows), with CAMs and masks, for cams.png."""
    size = model_image_size(model)
    batches = LesionBatches(items, num_classes, size, batch_size, meta=meta)
    predictor = BatchPredictor(model, with_cams, tta)
    probs, greyed, focus, pearson, max_abs = [], [], [], [], 0.0
    shown = {"images": [], "cams": [], "masks": [], "index": []}
    chosen = set(np.linspace(0, len(items) - 1, min(preview, len(items))).round().astype(int).tolist())
    steps = range(len(batches))
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="predicting", unit="batch", leave=False, disable=None)   # a terminal only
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(batches.__getitem__, 0)
        for i in steps:
            x, (_, masks) = nxt.result()                                  # (b,S,S,3), (b,S,S,1)
            if i + 1 < len(batches):
                nxt = pool.submit(batches.__getitem__, i + 1)
            b = len(image_of(x))
            p, cams = predictor(pad_batch(x, batch_size))
            if grey_outside:
                lesion_only = ops.convert_to_numpy(occlude_outside(image_of(x), masks))    # (b,S,S,3)
                lesion_only = {**x, "image": lesion_only} if isinstance(x, dict) else lesion_only
                greyed.append(predictor(pad_batch(lesion_only, batch_size))[0][:b])
            x = image_of(x)
            probs.append(p[:b])
            if not with_cams:
                continue
            cams = cams[:b]                                               # (b,h,w,K)
            top = predicted_class_cams(p[:b], cams)    # (b,h,w)
            m = masks[..., 0]                                             # (b,S,S)
            focus.append(metrics.per_image_lesion_focus(top, m))
            pearson.append(_per_image_pearson(top, m))
            max_abs = max(max_abs, metrics.max_abs_cam(cams))
            for j in (j for j in range(b) if i * batch_size + j in chosen):
                shown["images"].append(np.clip(x[j], 0, 255).astype(np.uint8))
                shown["cams"].append(top[j])
                shown["masks"].append(m[j].astype(np.uint8))
                shown["index"].append(i * batch_size + j)
    out = Predictions([it.source for it in items],
                      np.array([-1 if it.label is None else it.label for it in items]),
                      np.concatenate(probs), probs_greyed=np.concatenate(greyed) if greyed else None)
    if with_cams:
        out.focus, out.pearson, out.max_abs_cam = np.concatenate(focus), np.concatenate(pearson), max_abs
        out.preview = {k: np.stack(v) for k, v in shown.items()} if shown["images"] else None
    return out
