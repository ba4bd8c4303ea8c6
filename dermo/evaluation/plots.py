"""Evaluation and training figures written as PNG files.

Uses matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
Every function writes one PNG and returns its path.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from dermo.metrics.calibration import expected_calibration_error, reliability_bins


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_confusion_matrix(cm, class_names, path) -> Path:
    """cm (K,K) counts, rows = true class, columns = predicted. Cells show count and row %."""
    cm = np.asarray(cm, dtype=np.int64)
    k = len(class_names)
    row_share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)       # (K,K) recall per row
    fig = Figure(figsize=(1.2 * k + 2.5, 1.2 * k + 2))
    ax = fig.add_subplot()
    im = ax.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]}\n{100 * row_share[i, j]:.1f}%", ha="center", va="center",
                    color="white" if row_share[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(k), [str(n) for n in class_names], rotation=45, ha="right")
    ax.set_yticks(range(k), [str(n) for n in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    return _save(fig, path)


def plot_roc(y_true, probs, class_names, path) -> Path:
    """One-vs-rest ROC curve per class (binary: the positive class 1 only), AUC in the legend.
    Classes absent from y_true (or the only class present) have no curve."""
    y_true = np.asarray(y_true).astype(int).ravel()
    probs = np.asarray(probs, dtype=np.float64)                          # (N,K)
    classes = [1] if probs.shape[1] == 2 else range(probs.shape[1])
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for k in classes:
        positives = y_true == k
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, probs[:, k])
        auc = roc_auc_score(positives, probs[:, k])
        ax.plot(fpr, tpr, linewidth=1.5, label=f"{class_names[k]} (AUC {auc:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC" + (" (one-vs-rest)" if probs.shape[1] > 2 else ""))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    return _save(fig, path)


def plot_reliability(y_true, curves: dict, path, bins: int = 15) -> Path:
    """Reliability diagram: per equal-width confidence bin, accuracy vs mean top-label confidence for each
    {label: probs (N,K)} of `curves` (e.g. before and after temperature scaling), ECE in the legend; the
    diagonal is perfect calibration; a lower panel shows how many images fall in each bin."""
    fig = Figure(figsize=(5.5, 6.2))
    ax, hist = fig.add_subplot(4, 1, (1, 3)), fig.add_subplot(4, 1, 4)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for i, (label, probs) in enumerate(curves.items()):
        r = reliability_bins(y_true, probs, bins)
        full = r["count"] > 0
        ece = expected_calibration_error(y_true, probs, bins)
        ax.plot(r["confidence"][full], r["accuracy"][full], marker="o", label=f"{label} (ECE {ece:.3f})")
        centres = (r["edges"][:-1] + r["edges"][1:]) / 2
        width = 1.0 / bins / max(1, len(curves))
        hist.bar(centres - 0.5 / bins + (i + 0.5) * width, r["count"], width=width, label=label)
    for a in (ax, hist):
        a.set_xlim(0, 1)
        a.grid(alpha=0.3)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability ({bins} confidence bins)")
    ax.legend(loc="upper left", fontsize=8)
    hist.set_xlabel("confidence (top-label probability)")
    hist.set_ylabel("images")
    return _save(fig, path)


def cam_heatmap(cam, shape) -> np.ndarray:
    """cam (h,w) -> float (H,W,3) 0..255: upsampled to shape (H,W) (bilinear), min-max scaled, jet colours."""
    up = cv2.resize(np.asarray(cam, np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    span = float(up.max() - up.min())
    scaled = (up - up.min()) / span if span > 0 else np.zeros_like(up)
    return matplotlib.colormaps["jet"](scaled)[..., :3] * 255.0


def cam_overlay(image, cam, alpha: float = 0.4) -> np.ndarray:
    """image uint8 (S,S,3), cam (h,w) -> uint8 (S,S,3): cam_heatmap blended over the image with weight
    alpha."""
    image = np.asarray(image, dtype=np.uint8)
    heat = cam_heatmap(cam, image.shape[:2])                              # (S,S,3)
    return np.clip((1 - alpha) * image + alpha * heat, 0, 255).astype(np.uint8)


def plot_cams(images, cams, masks, titles, path, max_images: int = 16,
              what: str = "CAM of each image's predicted class") -> Path:
    """Grid of CAM overlays, with a colour bar of the jet scale and a title saying whose map it is.

    images uint8 (N,S,S,3), cams (N,h,w) predicted-class CAMs, masks (N,S,S) or None (contour
    drawn in white), titles list of N strings or None. Shows the first max_images images. Each map is min-max
    scaled on its own (cam_heatmap): the colours compare places within an image, not across images.
    """
    n = min(len(images), max_images)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(2.6 * cols + 0.9, 2.8 * rows + 0.5))
    fig.suptitle(f"{what}; white: lesion mask", fontsize=10)
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        if i >= n:
            continue
        image = np.asarray(images[i], dtype=np.uint8)
        ax.imshow(cam_overlay(image, cams[i]))
        if masks is not None:
            mask = (np.asarray(masks[i]) > 0).astype(np.uint8)
            if mask.shape != image.shape[:2]:
                mask = cv2.resize(mask, (image.shape[1], image.shape[0]),
                                  interpolation=cv2.INTER_NEAREST)
            if mask.any() and not mask.all():
                ax.contour(mask, levels=[0.5], colors="white", linewidths=1.2)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    scale = matplotlib.cm.ScalarMappable(cmap="jet", norm=matplotlib.colors.Normalize(0, 1))
    fig.colorbar(scale, ax=fig.axes, fraction=0.025, pad=0.02,
                 label="CAM, scaled per image: lowest (0) to highest (1)")
    return _save(fig, path)


def plot_focus_histogram(focus, labels, class_names, path, bins: int = 20) -> Path:
    """Histogram of the per-image lesion focus (share of the predicted class's positive CAM mass inside the
    lesion), one stacked colour per true class over [0, 1], each class's mean as a dashed line; images where
    the focus is undefined are counted in the title. Images that fail (focus near 0) pile up on the left."""
    focus, labels = np.asarray(focus, np.float64), np.asarray(labels)
    defined = np.isfinite(focus)
    groups = [focus[defined & (labels == k)] for k in range(len(class_names))]
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    edges = np.linspace(0, 1, bins + 1)
    colours = [matplotlib.colormaps["tab10"](k % 10) for k in range(len(class_names))]
    ax.hist(groups, bins=edges, stacked=True, color=colours,
            label=[f"{name} (n {len(g)}, mean {g.mean():.2f})" if len(g) else f"{name} (n 0)"
                   for name, g in zip(class_names, groups)])
    for g, colour in zip(groups, colours):
        if len(g):
            ax.axvline(g.mean(), color=colour, linestyle="--", linewidth=1.2)
    ax.set_xlim(0, 1)
    ax.set_xlabel("lesion focus (share of positive CAM mass inside the lesion)")
    ax.set_ylabel("images")
    ax.set_title(f"Lesion focus per image ({int((~defined).sum())} undefined: no CAM mass or no lesion)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def history_panels(history) -> tuple[np.ndarray, list[str]]:
    """(epochs counted from 1 (E,), the quantities that get a panel): every column's name without "val_", except
    "epoch" and quantities that are 0 or missing in every epoch of train and val (a loss term that was off)."""
    x = (history["epoch"].to_numpy() if "epoch" in history.columns else np.arange(len(history))) + 1
    names = []
    for col in history.columns:
        base = col[4:] if col.startswith("val_") else col
        values = history[[c for c in (base, "val_" + base) if c in history.columns]].to_numpy(dtype=float)
        if base != "epoch" and base not in names and np.nan_to_num(values).any():
            names.append(base)
    return x, names


def plot_history(history, path) -> Path:
    """history: DataFrame, one row per epoch, columns like loss, val_loss, accuracy, cls_loss ...
    One panel per quantity (the name without "val_"), with train and val lines, epochs counted from 1 as the
    console's epoch lines count them (history.csv's "epoch" column counts from 0), integer ticks; a quantity that
    is 0 (or missing) in every epoch — a loss term that was off — gets no panel; learning_rate / lr on a log
    scale."""
    from matplotlib.ticker import MaxNLocator

    x, names = history_panels(history)
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        for col, label, style in ((name, "train", "-"), ("val_" + name, "val", "--")):
            if col in history.columns:
                ax.plot(x, history[col].to_numpy(dtype=float), style, marker=".", label=label)
        if name in ("learning_rate", "lr"):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
