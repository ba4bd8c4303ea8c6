"""How well class activation maps sit on the lesion: lesion focus, CAM-mask Pearson r, max |CAM|.

Shapes:
    cams    float (N, h, w)   the predicted class's CAM per image
    masks   (N, H, W)         lesion masks, >0 = lesion ({0,1} or {0,255})
Undefined numbers (no image with positive CAM mass and a non-empty mask) are None / NaN.
"""
from __future__ import annotations

import cv2
import numpy as np


def _upsample(cam, shape):
    """cam (h, w) -> float32 (H, W) by cv2 bilinear interpolation (identity if same size)."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise ValueError(f"each CAM must be 2-D (h, w), got shape {cam.shape}")
    if cam.shape == tuple(shape):
        return cam
    return cv2.resize(cam, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)


def _pairs(cams, masks):
    if len(cams) != len(masks):
        raise ValueError(f"{len(cams)} CAMs but {len(masks)} masks")
    for cam, mask in zip(cams, masks):
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"each mask must be 2-D (H, W), got shape {mask.shape}")
        yield _upsample(cam, mask.shape), mask > 0


def per_image_lesion_focus(cams, masks) -> np.ndarray:
    """Share of positive CAM mass inside the lesion, per image.

    cams (N, h, w) predicted-class CAMs, masks (N, H, W) (>0 = lesion; sizes may differ per
    image when given as lists). Each CAM is upsampled (bilinear) to its mask's size, negative
    values are ignored. Returns float (N,): sum(relu(CAM) * mask) / sum(relu(CAM)); NaN for an
    image with no positive CAM mass or an empty mask.
    """
    out = []
    for cam, inside in _pairs(cams, masks):
        pos = np.maximum(cam, 0.0).astype(np.float64)
        total = pos.sum()
        out.append(pos[inside].sum() / total if total > 0 and inside.any() else np.nan)
    return np.asarray(out, dtype=np.float64)


def lesion_focus(cams, masks) -> float | None:
    """Mean of per_image_lesion_focus over the images where it is defined; None if none is."""
    values = per_image_lesion_focus(cams, masks)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def focus_by_class(focus, labels, classes) -> dict:
    """{class name: mean per-image lesion focus over that class's images where it is defined (None if none)}.
    focus (N,) per-image values (NaN = undefined), labels (N,) true class indices."""
    focus, labels = np.asarray(focus, np.float64), np.asarray(labels)
    out = {}
    for k, name in enumerate(classes):
        v = focus[(labels == k) & np.isfinite(focus)]
        out[str(name)] = float(v.mean()) if v.size else None
    return out


def cam_mask_pearson(cams, masks) -> float | None:
    """Mean Pearson r between each CAM (upsampled to its mask's size) and its binary mask.
    Images whose CAM or mask has zero variance are skipped; None if no image is left."""
    rs = []
    for cam, inside in _pairs(cams, masks):
        cam = cam.astype(np.float64).ravel()
        m = inside.astype(np.float64).ravel()
        if cam.std() == 0 or m.std() == 0:
            continue
        rs.append(np.corrcoef(cam, m)[0, 1])
    return float(np.mean(rs)) if rs else None


def max_abs_cam(cams) -> float:
    """Largest |CAM| value over all images and positions (the deck's "dominant weights")."""
    cams = np.asarray(cams, dtype=np.float64)
    return float(np.abs(cams).max()) if cams.size else 0.0
