"""Shared logic of evaluate.py and ensemble.py (DESIGN.md §7–8).

    load_model_safely(path)                 .h5/.keras -> keras.Model; refuses Python code (Lambda layers)
    resolve_source(spec, task)              "runs/NAME" or "FILE.h5|.keras" -> Source (model, classes, settings)
    predict_items(model, items, K, ...)     one pass over the cached images: probs (N,K) and, per image, the
                                            predicted class's CAM scored against the lesion mask; optional TTA
    write_labelled(out, ...)                metrics.json, predictions.csv, report.txt, confusion_matrix.png,
                                            roc.png (+ cams.png when a CAM preview is given)
    write_unlabelled(out, ...)              predictions.csv (+ cams.png)

Shapes: images x (B,S,S,3) float 0..255, masks (B,S,S) {0,1}, features (B,h,w,C), CAMs (B,h,w,K),
probabilities (N,K). TTA transform t acts on the spatial axes (1, 2) of any of these arrays.
"""
from __future__ import annotations

import json
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dermo import metrics, runs
from dermo.datasets import TASK_CLASSES, Sample
from dermo.errors import DermoError

MODEL_SUFFIXES = (".h5", ".keras")
PREVIEW = 16                      # images shown in cams.png
TTA_NAMES = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose", "transverse")
RESERVED_COLUMNS = ("path", "label", "predicted", "lesion_focus", "cam_mask_pearson")


class EvaluationError(DermoError, ValueError):
    """A model/data combination that cannot be evaluated; one line naming the file and the fix."""


# ---------------------------------------------------------------- loading models safely

def _code_in_config(config) -> str | None:
    """Name of the first code-carrying object in a Keras model config (JSON tree), else None."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name, module = node.get("class_name"), str(node.get("module") or "")
            if name in ("Lambda", "TFOpLambda"):
                return "Lambda layer"
            if name == "__lambda__" or (name == "function" and not module.startswith("keras")):
                return "Python function"
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _read_config(path: Path):
    """The model config stored in a .keras zip (config.json) or a legacy .h5 (attrs model_config)."""
    if path.suffix.lower() == ".keras":
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("config.json"))
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
    if raw is None:
        raise EvaluationError(f"{path}: holds weights only, no model (save the whole model with model.save)")
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def load_model_safely(path):
    """keras.models.load_model(path, compile=False, safe_mode=True) with one-line errors.

    The stored config is scanned first, so a file with Python code (a Lambda layer) is refused before
    any of it is deserialised; safe_mode is the second line of defence."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: model file not found")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise EvaluationError(f"{path}: not a Keras model file (expected .h5 or .keras)")
    refusal = (f"refusing to load {path}: it contains Python code ({{}}); dermo models never do — "
               "re-export the plain image -> probabilities graph (dermo.network.inference_model)")
    try:
        code = _code_in_config(_read_config(path))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, EvaluationError):
            raise
        raise EvaluationError(f"{path}: not a readable Keras model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'corrupt'})") from None
    if code:
        raise EvaluationError(refusal.format(code))
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001 — any failure becomes one line naming the file
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "lambda" in text.lower() or "safe_mode" in text:
            raise EvaluationError(refusal.format("Lambda layer")) from None
        raise EvaluationError(f"{path}: cannot load the model ({type(e).__name__}: {text[:200]})") from None


def model_image_size(model) -> int:
    """Side S of the model's (None, S, S, 3) input."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise EvaluationError(f"model input must be (None, S, S, 3) with a fixed size S, got {shape}")
    return int(shape[1])


def model_num_classes(model) -> int:
    return int(model.outputs[0].shape[-1])                         # K of the (None, K) output


# ---------------------------------------------------------------- what to evaluate

@dataclass
class Source:
    """One model to evaluate: a model file, or a run folder (config.json + classes.json + model)."""
    spec: str                              # as given on the command line
    model_path: Path
    task: str
    classes: list[str] | None              # None: task auto without a run -> from the data
    run: runs.Run | None = None
    settings: dict = field(default_factory=dict)   # hair / color flags for pipeline.settings_for
    cache_dir: str | None = None


def resolve_source(spec, task: str = "auto", kind: str = "auto") -> Source:
    """A run folder or a model file (`task` gives its class names); kind "run" / "model" insists on
    one of them, "auto" takes a directory for a run."""
    p = Path(spec)
    if kind == "run" or (kind == "auto" and p.is_dir()):
        run = runs.load_run(p)
        cfg = run.config
        return Source(str(spec), run.model_path, cfg.task, list(run.classes), run,
                      {"hair": cfg.hair_removal, "color": cfg.color_constancy}, cfg.cache_dir)
    if p.is_dir():
        raise EvaluationError(f"{spec}: is a folder, not a model file (evaluate a run folder with --run)")
    if p.suffix.lower() not in MODEL_SUFFIXES:
        raise EvaluationError(f"{spec}: neither a run folder nor a .h5/.keras model file")
    if not p.is_file():
        raise EvaluationError(f"{spec}: model file not found")
    return Source(str(spec), p, task, list(TASK_CLASSES[task]) if task in TASK_CLASSES else None)


def check_classes(source: Source, data_classes: list[str], data) -> list[str]:
    """The class list to use: the source's, which must equal the data's; else one clear line."""
    if source.classes is None:
        return list(data_classes)
    if list(data_classes) != list(source.classes):
        raise EvaluationError(f"{data}: classes {', '.join(data_classes)} differ from the model's "
                              f"({source.spec}: {', '.join(source.classes)}); use data with the same "
                              "class names")
    return list(source.classes)


def mask_source(samples: list[Sample]) -> str:
    """"given" when every sample has its own mask, "generated" when none has, else "mixed"."""
    given = sum(s.mask is not None for s in samples)
    return "given" if given == len(samples) else "generated" if given == 0 else "mixed"


# ---------------------------------------------------------------- test-time augmentation

def tta_forward(x: np.ndarray, t: int) -> np.ndarray:
    """Dihedral transform number t (see TTA_NAMES) of the spatial axes (1, 2) of x (B,H,W,...)."""
    if t == 0:
        return x
    if t == 1:
        return x[:, :, ::-1]
    if t == 2:
        return x[:, ::-1]
    if t in (3, 4, 5):
        return np.rot90(x, k=t - 2, axes=(1, 2))
    if t == 6:
        return np.swapaxes(x, 1, 2)
    if t == 7:
        return np.rot90(np.swapaxes(x, 1, 2), k=2, axes=(1, 2))
    raise ValueError(f"TTA supports at most {len(TTA_NAMES)} transforms ({', '.join(TTA_NAMES)})")


def tta_inverse(x: np.ndarray, t: int) -> np.ndarray:
    """Undo tta_forward(., t) on (B,h,w,...) maps: back to the original orientation."""
    if t in (3, 5):
        return np.rot90(x, k=-(t - 2), axes=(1, 2))
    return tta_forward(x, t)              # flips, rot180, transpose, transverse are involutions


def check_tta(n: int) -> int:
    if not 1 <= int(n) <= len(TTA_NAMES):
        raise EvaluationError(f"--tta {n}: use 1 (none) to {len(TTA_NAMES)} ({', '.join(TTA_NAMES)})")
    return int(n)


# ---------------------------------------------------------------- prediction

@dataclass
class Predictions:
    paths: list[str]                 # source image paths, as the dataset gives them
    labels: np.ndarray               # (N,) int, -1 = unlabelled
    probs: np.ndarray                # (N,K) float32
    focus: np.ndarray | None = None  # (N,) per-image lesion focus (NaN where undefined)
    pearson: np.ndarray | None = None  # (N,) per-image Pearson r of CAM vs mask (NaN where undefined)
    max_abs_cam: float | None = None   # over every class's CAM of every image
    preview: dict | None = None      # images uint8 (n,S,S,3), cams (n,h,w), masks (n,S,S), index (n,)


class _Predictor:
    """Batch -> (probs (B,K), CAMs (B,h,w,K) or None); TTA averages both over the transforms.
    Every call has the same batch shape (the last batch is padded), so the graph is traced once."""

    def __init__(self, model, with_cams: bool, tta: int):
        from dermo import explain

        self.explain, self.tta, self.with_cams = explain, check_tta(tta), with_cams
        self.fmodel = explain.feature_model(model) if with_cams else model
        self.kernel = explain.classifier_weights(model)[0] if with_cams else None    # (C,K)

    def __call__(self, x: np.ndarray):
        probs, cams = 0.0, 0.0
        for t in range(self.tta):
            out = self.fmodel.predict_on_batch(np.ascontiguousarray(tta_forward(x, t)))
            if self.with_cams:
                features, out = out
                cams = cams + tta_inverse(self.explain.cams_from_features(features, self.kernel), t)
            probs = probs + np.asarray(out, np.float64)
        probs = (probs / self.tta).astype(np.float32)
        return probs, (np.asarray(cams / self.tta, np.float32) if self.with_cams else None)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    """(b,...) -> (size,...) repeating the last row (keeps one traced batch shape)."""
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


def _per_image_pearson(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:
    r = [metrics.cam_mask_pearson(c[None], m[None]) for c, m in zip(cams, masks)]
    return np.array([np.nan if v is None else v for v in r], np.float64)


def predict_items(model, items, num_classes: int, batch_size: int = 16, tta: int = 1,
                  with_cams: bool = True, preview: int = PREVIEW, progress: bool = False) -> Predictions:
    """Predict Prepared items (dermo.pipeline) in one pass; the next batch is read while one predicts.

    with_cams: also score the predicted class's CAM against the lesion mask per image and keep
    `preview` images spread evenly over the set (so every class shows), with CAMs and masks, for cams.png."""
    from dermo.pipeline import LesionBatches

    size = model_image_size(model)
    batches = LesionBatches(items, num_classes, size, batch_size)
    predictor = _Predictor(model, with_cams, tta)
    probs, focus, pearson, max_abs = [], [], [], 0.0
    shown = {"images": [], "cams": [], "masks": [], "index": []}
    chosen = set(np.linspace(0, len(items) - 1, min(preview, len(items))).round().astype(int).tolist())
    steps = range(len(batches))
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="predicting", unit="batch", leave=False)
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(batches.__getitem__, 0)
        for i in steps:
            x, (_, masks) = nxt.result()                                  # (b,S,S,3), (b,S,S,1)
            if i + 1 < len(batches):
                nxt = pool.submit(batches.__getitem__, i + 1)
            b = len(x)
            p, cams = predictor(_pad(x, batch_size))
            probs.append(p[:b])
            if not with_cams:
                continue
            cams = cams[:b]                                               # (b,h,w,K)
            top = predictor.explain.predicted_class_cams(p[:b], cams)    # (b,h,w)
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
                      np.concatenate(probs))
    if with_cams:
        out.focus, out.pearson, out.max_abs_cam = np.concatenate(focus), np.concatenate(pearson), max_abs
        out.preview = {k: np.stack(v) for k, v in shown.items()} if shown["images"] else None
    return out


# ---------------------------------------------------------------- writing the outputs

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


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


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
    from dermo.plots import plot_cams

    pv = pred.preview
    return plot_cams(pv["images"], pv["cams"], pv["masks"], _titles(pred, classes, pv["index"]),
                     Path(out) / "cams.png", max_images=PREVIEW)


def write_labelled(out, paths, labels, probs, classes, extra: dict | None = None,
                   pred: Predictions | None = None) -> tuple[dict, str]:
    """Write the eval folder for labelled predictions; returns (metrics dict, report text)."""
    from dermo.plots import plot_confusion_matrix, plot_roc

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = metrics.classification_metrics(labels, probs, classes)
    m.update(extra or {})
    if pred is not None and pred.focus is not None:
        m.update(cam_summary(pred))
    m["classes"] = list(classes)
    report = metrics.report_text(labels, probs, classes)
    if "lesion_focus" in m:
        report += (f"\nlesion focus: {_fmt(m['lesion_focus'])}   CAM-mask Pearson r: "
                   f"{_fmt(m['cam_mask_pearson'])}   max |CAM|: {_fmt(m['max_abs_cam'])}"
                   f"   masks: {m.get('mask_source', 'n/a')}\n")
    runs.write_json(out / "metrics.json", m)
    frame = predictions_frame(paths, probs, classes, labels,
                              pred.focus if pred is not None else None,
                              pred.pearson if pred is not None else None)
    frame.to_csv(out / "predictions.csv", index=False)
    (out / "report.txt").write_text(report)
    plot_confusion_matrix(m["confusion_matrix"], classes, out / "confusion_matrix.png")
    plot_roc(labels, probs, classes, out / "roc.png")
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
