"""One image's prediction as the page shows it: numbers as JSON-ready values, pictures as data URLs.

    image_view(original, classes, probs, members)  -> dict (see the keys below; app.js draws it)

Pictures: the original (a JPEG thumbnail), per member the preprocessed image the model saw (PNG), the
lesion mask's contour (a transparent PNG to lay over it) and one CAM heat map per class (JPEG, jet colours,
each class's CAM min-max scaled as in cams.png; the page blends it with an opacity slider).
"""
from __future__ import annotations

import base64
import math

import cv2
import numpy as np

from dermo.data.imageio import encode_image
from dermo.evaluation.plots import cam_heatmap

THUMBNAIL = 512          # longest side of the original as shown, px
OVERLAY = 320            # the contour and CAM pictures are drawn at least this large (small inputs upsampled)


def data_url(img: np.ndarray, fmt: str = "png") -> str:
    mime = "image/jpeg" if fmt == "jpeg" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(encode_image(img, fmt, quality=88)).decode("ascii")


def thumbnail(img: np.ndarray, longest: int = THUMBNAIL) -> np.ndarray:
    """uint8 (H,W,3) -> at most `longest` px on its longer side (area interpolation), aspect kept."""
    scale = longest / max(img.shape[:2])
    if scale >= 1:
        return img
    size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def contour_picture(mask: np.ndarray, side: int) -> np.ndarray:
    """mask (S,S) {0,1} -> RGBA (side,side,4): the lesion outline, white on a dark edge, elsewhere transparent
    (all transparent for an empty or full mask, whose outline is undefined)."""
    out = np.zeros((side, side, 4), np.uint8)
    smooth = cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    big = (smooth >= 0.5).astype(np.uint8)                      # a smooth outline, not the pixel staircase
    if big.any() and not big.all():
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        width = max(1, side // 160)
        cv2.drawContours(out, contours, -1, (0, 0, 0, 255), 3 * width)
        cv2.drawContours(out, contours, -1, (255, 255, 255, 255), width)
    return out


def number(x) -> float | None:
    """A JSON number: float, or None for NaN/inf."""
    x = float(x)
    return x if math.isfinite(x) else None


def member_view(name: str, prediction) -> dict:
    """One member's Prediction of one image (index 0) -> its part of the view."""
    image = prediction.images[0]                                           # (S,S,3) uint8
    side = max(OVERLAY, image.shape[0])
    cams = prediction.cams[0]                                              # (h,w,K)
    heat = [data_url(np.clip(cam_heatmap(cams[..., k], (side, side)), 0, 255).astype(np.uint8), "jpeg")
            for k in range(cams.shape[-1])]
    return {"name": name, "image_size": int(image.shape[0]),
            "probs": [number(p) for p in prediction.probs[0]], "predicted": prediction.predicted[0],
            "lesion_focus": number(prediction.lesion_focus[0]),
            "preprocessed": data_url(image), "contour": data_url(contour_picture(prediction.masks[0], side)),
            "cams": heat}


def image_view(name: str, original: np.ndarray, classes: list[str], probs: np.ndarray, members: list) -> dict:
    """The whole per-image view: `probs` (K,) the (ensemble's) probabilities, `members` [(name,
    Prediction)] each member's own prediction of this one image."""
    k = int(np.argmax(probs))
    return {"name": name, "width": int(original.shape[1]), "height": int(original.shape[0]),
            "original": data_url(thumbnail(original), "jpeg"), "classes": list(classes),
            "probs": [number(p) for p in probs], "predicted": classes[k], "confidence": number(probs[k]),
            "members": [member_view(n, p) for n, p in members]}
