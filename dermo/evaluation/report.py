"""Writing an evaluation folder: metrics.json, predictions.csv, report.txt, confusion_matrix.png, roc.png,
reliability.png and cams.png (labelled), or predictions.csv and cams.png (unlabelled).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dermo import metrics
from dermo.metrics import fmt
from dermo.metrics.calibration import BINS
from dermo.predict.predictions import PREVIEW, Predictions
from dermo.run import folder as runs

RESERVED_COLUMNS = ("path", "label", "predicted", "lesion_focus", "cam_mask_pearson")


def prob_columns(classes: list[str]) -> list[str]:
    """One probability column per class, named by the class ("p_<class>" for all if any name clashes)."""
    names = [str(c) for c in classes]
    return [f"p_{n}" for n in names] if set(names) & set(RESERVED_COLUMNS) else names


def predictions_frame(paths, probs, classes, labels=None, focus=None, pearson=None) -> pd.DataFrame:
    """path, [label], predicted, one probability column per class, [lesion_focus, cam_mask_pearson]."""
    probs = np.asarray(probs)
    df = pd.DataFrame({"path": list(paths)})
    if labels is not None:
        df["label"] = [classes[i] for i in labels]
    df["predicted"] = [classes[i] for i in probs.argmax(1)]
    for j, col in enumerate(prob_columns(classes)):
        df[col] = probs[:, j]
    if focus is not None:
        df["lesion_focus"] = focus
        df["cam_mask_pearson"] = pearson
    return df


def _nanmean(v) -> float | None:
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def cam_summary(pred: Predictions) -> dict:
    """lesion_focus, cam_mask_pearson (means over the images where defined) and max_abs_cam."""
    return {"lesion_focus": _nanmean(pred.focus), "cam_mask_pearson": _nanmean(pred.pearson),
            "max_abs_cam": pred.max_abs_cam}


def _titles(pred: Predictions, classes, indices) -> list[str]:
    out = []
    for i in indices:
        k = int(pred.probs[i].argmax())
        truth = f"{classes[pred.labels[i]]} → " if pred.labels[i] >= 0 else ""
        out.append(f"{Path(pred.paths[i]).name}\n{truth}{classes[k]} {pred.probs[i, k]:.2f}")
    return out


def write_cams(out: Path, pred: Predictions, classes) -> Path | None:
    if pred.preview is None:
        return None
    from dermo.evaluation.plots import plot_cams

    pv = pred.preview
    return plot_cams(pv["images"], pv["cams"], pv["masks"], _titles(pred, classes, pv["index"]),
                     Path(out) / "cams.png", max_images=PREVIEW)


def calibration_text(m: dict) -> str:
    """The report's calibration lines: ECE, Brier, NLL and the temperature; before/after of a fit."""
    if m.get("ece") is None:
        return "\ncalibration: n/a (rank scores are not probabilities)\n"
    text = (f"\ncalibration: ECE ({m['ece_bins']} bins) {fmt(m['ece'])}   Brier {fmt(m['brier'])}   "
            f"NLL {fmt(m['log_loss'])}   temperature {m.get('temperature', 1.0):g}\n")
    fit = m.get("calibration")
    if fit:
        change = ", ".join(f"{name} {fit['before'][k]:.4f} -> {fit['after'][k]:.4f}"
                           for k, name in (("ece", "ECE"), ("brier", "Brier"), ("nll", "NLL")))
        text += (f"temperature scaling on {fit['n']} {fit['fitted_on']} images: T = {fit['temperature']:g}; "
                 f"{change}\n")
    return text


def write_labelled(out, paths, labels, probs, classes, extra: dict | None = None,
                   pred: Predictions | None = None, probabilities: bool = True,
                   reliability: dict | None = None) -> tuple[dict, str]:
    """Write the eval folder for labelled predictions; returns (metrics dict, report text).

    probabilities=False: `probs` are scores (a rank-averaged ensemble): no log loss, ECE, Brier or
    reliability.png. `reliability`: the curves of reliability.png ({label: probs}; default the probs)."""
    from dermo.evaluation.plots import plot_confusion_matrix, plot_reliability, plot_roc

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = metrics.classification_metrics(labels, probs, classes)
    cal = metrics.calibration_metrics(labels, probs) if probabilities else {"nll": None}
    m.update({"log_loss": cal["nll"], "ece": cal.get("ece"), "brier": cal.get("brier"),
              "ece_bins": BINS})
    m.update(extra or {})
    if pred is not None and pred.focus is not None:
        m.update(cam_summary(pred))
    m["classes"] = list(classes)
    report = metrics.report_text(labels, probs, classes)
    if "lesion_focus" in m:
        report += (f"\nlesion focus: {fmt(m['lesion_focus'])}   CAM-mask Pearson r: "
                   f"{fmt(m['cam_mask_pearson'])}   max |CAM|: {fmt(m['max_abs_cam'])}"
                   f"   masks: {m.get('mask_source', 'n/a')}\n")
    report += calibration_text(m)
    runs.write_json(out / "metrics.json", m)
    frame = predictions_frame(paths, probs, classes, labels,
                              pred.focus if pred is not None else None,
                              pred.pearson if pred is not None else None)
    frame.to_csv(out / "predictions.csv", index=False)
    (out / "report.txt").write_text(report)
    plot_confusion_matrix(m["confusion_matrix"], classes, out / "confusion_matrix.png")
    plot_roc(labels, probs, classes, out / "roc.png")
    if probabilities:
        plot_reliability(labels, reliability or {"model": probs}, out / "reliability.png")
    if pred is not None:
        write_cams(out, pred, classes)
    return m, report


def write_unlabelled(out, pred: Predictions, classes) -> pd.DataFrame:
    """predictions.csv (path, predicted, one probability per class) and cams.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = predictions_frame(pred.paths, pred.probs, classes)
    frame.to_csv(out / "predictions.csv", index=False)
    write_cams(out, pred, classes)
    return frame
