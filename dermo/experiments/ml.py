"""Classical-ML baseline: hand-crafted lesion features + scikit-learn classifiers.

    dermo ml --task binary|multiclass|auto --data DIR|CSV [--label-column C] [--group-column C]
             [--meta-columns C1,C2] [--out DIR]

Images go through the same cached preprocessing as the CNNs (dermo.pipeline.prepare), then
dermo.experiments.features turns each image and its lesion mask into named numbers (with --meta-columns, the
patient metadata is appended, encoded as dermo train encodes it: fitted on the training split). On the training
split a cross-validated grid search (balanced accuracy) picks the best of StandardScaler + {SVM, random
forest, histogram gradient boosting}; the winner, refitted on the whole training split, predicts the
validation split. The output folder (default runs/ml-<task>-<timestamp>/) holds what dermo evaluate
writes — metrics.json (+ "model", "cv_score"), predictions.csv, report.txt, confusion_matrix.png,
roc.png — and features.csv, cv_results.csv and model.joblib.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from dermo.data.datasets import DataError, load_dataset
from dermo.data.metadata import fit_encoding
from dermo.console import parser
from dermo.errors import run_cli
from dermo.experiments.features import FEATURE_NAMES, WORK_SIZE, extract_features
from dermo.preprocessing.color import REGIONS
from dermo.preprocessing.segment import GROW
from dermo.run.config import checked_meta_columns

PROG = "dermo ml"


class BalancedSVC(SVC):
    """SVC whose probabilities assume equal class priors, like its class_weight="balanced" decisions.

    libsvm's Platt scaling is fitted without the class weights, so SVC.predict_proba carries the training
    priors and its argmax favours the majority class, unlike predict(); dividing by the training priors
    (and renormalising) puts it on the same footing as the balanced forests and boosting models."""

    def fit(self, X, y, sample_weight=None):
        super().fit(X, y, sample_weight=sample_weight)
        idx = np.searchsorted(self.classes_, np.asarray(y))
        self.class_prior_ = np.bincount(idx, minlength=len(self.classes_)) / len(idx)    # (K,)
        return self

    def predict_proba(self, X):
        p = super().predict_proba(X) / self.class_prior_                                  # (N, K)
        return p / p.sum(axis=1, keepdims=True)


def param_grid(seed: int = 0) -> list[dict]:
    """The searched candidates: 4 SVMs, 4 random forests, 4 gradient-boosting models."""
    return [
        {"clf": [BalancedSVC(probability=True, class_weight="balanced", random_state=seed)],
         "clf__C": [1.0, 10.0], "clf__gamma": ["scale", 0.002]},
        {"clf": [RandomForestClassifier(class_weight="balanced", random_state=seed)],
         "clf__n_estimators": [100, 250], "clf__max_depth": [None, 8]},
        {"clf": [HistGradientBoostingClassifier(class_weight="balanced", random_state=seed, max_iter=100)],
         "clf__learning_rate": [0.05, 0.15], "clf__max_depth": [3, None]},
    ]


def _plain(value):
    """numpy scalars -> Python numbers (JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def _candidate(params: dict) -> tuple[str, dict]:
    """GridSearchCV params {"clf": estimator, "clf__C": 1, ...} -> ("SVC", {"C": 1, ...})."""
    name = type(params["clf"]).__name__
    return name, {k.split("__", 1)[1]: _plain(v) for k, v in params.items() if k != "clf"}


def proba_balanced_accuracy(estimator, X, y) -> float:
    """Balanced accuracy of argmax(predict_proba): the prediction that is reported (an SVC's Platt-scaled
    probabilities can disagree with its predict(), which class_weight="balanced" shifts)."""
    probs = estimator.predict_proba(X)
    return float(balanced_accuracy_score(y, estimator.classes_[probs.argmax(axis=1)]))


def fit_baseline(X: np.ndarray, y: np.ndarray, seed: int = 0, cv: int = 5, n_jobs: int | None = -1,
                 grid: list[dict] | None = None, groups=None):
    """Grid search over param_grid(seed) with stratified `cv`-fold CV scored by the balanced accuracy
    of argmax(predict_proba) (proba_balanced_accuracy). `groups` (N,) lesion/patient ids: the folds are
    stratified *group* folds (StratifiedGroupKFold), so no group is on both sides of a fold.

    X float (N, F) features, y int (N,) class ids. Returns (best_estimator: fitted Pipeline(scale, clf),
    summary: {"model": {"name", "params"}, "cv_score", "cv_folds", "candidates": [{"model", "params",
    "mean_score", "std_score", "rank", "mean_fit_time"}]}). Fewer folds are used when the smallest class
    has fewer than `cv` images; a class with fewer than 2 is a DataError.
    """
    X, y = np.asarray(X, np.float64), np.asarray(y).astype(int)
    counts = np.bincount(y)
    present = counts[counts > 0]
    if len(present) < 2:
        raise DataError(f"the training split has {len(present)} class(es); need at least 2")
    folds = int(min(cv, present.min()))
    if folds < 2:
        raise DataError(f"class {int(np.flatnonzero(counts == present.min())[0])} has only "
                        f"{int(present.min())} training image(s); cross-validation needs at least 2 per class")
    pipe = Pipeline([("scale", StandardScaler()), ("clf", SVC())])
    splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if groups is None else
                StratifiedGroupKFold(folds, shuffle=True, random_state=seed))
    search = GridSearchCV(pipe, grid or param_grid(seed), scoring=proba_balanced_accuracy, n_jobs=n_jobs,
                          cv=splitter, refit=True, error_score="raise")
    search.fit(X, y, groups=None if groups is None else np.asarray(groups, dtype=object))
    res = search.cv_results_
    candidates = []
    for i, params in enumerate(res["params"]):
        name, plain = _candidate(params)
        candidates.append({"model": name, "params": plain, "mean_score": float(res["mean_test_score"][i]),
                           "std_score": float(res["std_test_score"][i]), "rank": int(res["rank_test_score"][i]),
                           "mean_fit_time": float(res["mean_fit_time"][i])})
    name, params = _candidate(search.best_params_)
    summary = {"model": {"name": name, "params": params}, "cv_score": float(search.best_score_),
               "cv_folds": folds, "cv_grouped": groups is not None, "candidates": candidates}
    return search.best_estimator_, summary


def predict_probs(model, X: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, F) -> (N, K) probabilities; classes the model never saw get probability 0."""
    p = model.predict_proba(np.asarray(X, np.float64))
    probs = np.zeros((len(p), num_classes))
    probs[:, model.classes_.astype(int)] = p
    return probs


def features_frame(items, X: np.ndarray, splits: list[str], classes: list[str],
                   names: list[str] | None = None) -> pd.DataFrame:
    """One row per image: path (source image), split, label (class name), then the feature columns `names`
    (default FEATURE_NAMES)."""
    head = pd.DataFrame({"path": [it.source for it in items], "split": splits,
                         "label": ["" if it.label is None else classes[it.label] for it in items]})
    return pd.concat([head, pd.DataFrame(X, columns=list(names or FEATURE_NAMES))], axis=1)


def with_metadata(X: np.ndarray, train: list, val: list, columns: list[str], source="data"):
    """Image features of train + val (N, F) -> (N, F + W) with the metadata `columns` appended, encoded as dermo
    train --meta-columns encodes them (dermo.data.metadata, fitted on the training items only). Returns
    (X, feature names, the encoding's dict for model.joblib); unchanged (X, FEATURE_NAMES, None) without columns."""
    if not columns:
        return X, list(FEATURE_NAMES), None
    enc = fit_encoding(columns, [dict(it.meta or ()) for it in train], source=source)
    meta = enc.encode([dict(it.meta or ()) for it in train + val])                  # (N, W)
    return np.hstack([X, meta]), list(FEATURE_NAMES) + [f"meta:{n}" for n in enc.feature_names()], enc.to_dict()


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    ap = parser(prog, __doc__)
    ap.add_argument("--task", choices=["binary", "multiclass", "auto"], default="auto",
                    help="binary: nevus/others; multiclass: bcc/mel/scc; auto: the data's own class names")
    ap.add_argument("--data", required=True, help="dataset folder or CSV manifest (required)")
    ap.add_argument("--label-column", default="label", help="label column of a CSV manifest")
    ap.add_argument("--group-column", help="CSV column of lesion/patient ids: the same stratified group split as "
                                           "dermo train --group-column (default: none, a per-image split)")
    ap.add_argument("--val-fraction", type=float, default=0.2,
                    help="validation share when the data has no split of its own (as dermo train)")
    ap.add_argument("--meta-columns",
                    help="comma-separated CSV columns of patient metadata (e.g. age_approx,sex,localization) "
                         "appended to the image features, encoded as dermo train --meta-columns (default: none)")
    ap.add_argument("--out", help="output folder (default: runs/ml-<task>-<timestamp>)")
    ap.add_argument("--seed", type=int, default=0, help="split / CV / model seed")
    ap.add_argument("--cv", type=int, default=5, help="cross-validation folds of the model search")
    ap.add_argument("--image-size", type=int, default=299,
                    help="CNN input size whose preprocessing cache is shared; features "
                         f"are computed with the shorter side at {WORK_SIZE} px")
    ap.add_argument("--no-hair", action="store_true", help="skip hair removal")
    ap.add_argument("--no-color", action="store_true", help="skip Shades-of-Gray colour constancy")
    ap.add_argument("--mask-grow", type=float, default=GROW,
                    help="margin of the generated lesion masks, a fraction of the shorter side (as dermo train)")
    ap.add_argument("--color-region", choices=REGIONS, default="fov",
                    help="where Shades of Gray estimates the illuminant: the field of view, or the skin outside "
                         "the lesion without saturated or strongly coloured pixels")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--cache-dir", default=None, help="preprocessing cache (default: $DERMO_CACHE or ~/.cache/dermo)")
    ap.add_argument("--on-bad-image", choices=["error", "skip"], default="error",
                    help="unreadable image: stop with one line (error) or skip it and go on")
    return ap


def _prepare_split(samples, settings, args, name):
    from dermo.pipeline.prepare import prepare

    items, skipped = prepare(samples, settings, cache_dir=args.cache_dir, on_bad=args.on_bad_image,
                             workers=args.workers)
    for line in skipped:
        print(f"{PROG}: skipped {line}", file=sys.stderr)
    if not items:
        raise DataError(f"{args.data}: no usable images in the {name} split")
    return items


def run(args) -> int:
    from dermo.evaluation.report import write_labelled
    from dermo.evaluation.sources import mask_source
    from dermo.pipeline.prepare import settings_for

    if args.cv < 2:
        raise DataError(f"--cv {args.cv}: use at least 2 folds")
    meta_columns = checked_meta_columns(args.meta_columns)
    ds = load_dataset(args.data, args.task, args.label_column, seed=args.seed, val_fraction=args.val_fraction,
                      on_bad=args.on_bad_image, group_column=args.group_column, meta_columns=meta_columns)
    for line in ds.skipped:
        print(f"{PROG}: skipped {line}", file=sys.stderr)
    if not ds.val:
        raise DataError(f"{args.data}: the validation split is empty")
    out = Path(args.out or f"runs/ml-{args.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    settings = settings_for(args.image_size, hair=not args.no_hair, color=not args.no_color,
                            color_region=args.color_region, mask_grow=args.mask_grow)
    train = _prepare_split(ds.train, settings, args, "train")
    val = _prepare_split(ds.val, settings, args, "val")
    t0 = time.perf_counter()
    X = extract_features(train + val, workers=args.workers)                      # (N, F)
    t_features = time.perf_counter() - t0
    X, names, meta_encoding = with_metadata(X, train, val, meta_columns, source=args.data)
    X_train, X_val = X[:len(train)], X[len(train):]
    y_train = np.array([it.label for it in train])
    y_val = np.array([it.label for it in val])
    missing = [c for k, c in enumerate(ds.classes) if not (y_train == k).any()]
    if missing:
        raise DataError(f"{args.data}: no training images of class(es) {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    features_frame(train + val, X, ["train"] * len(train) + ["val"] * len(val), ds.classes,
                   names).to_csv(out / "features.csv", index=False)

    print(f"grid search on {len(train)} training images, {X.shape[1]} features ...", file=sys.stderr)
    t0 = time.perf_counter()
    # with --group-column the grid search's folds keep each lesion on one side too (as the train/val split does)
    group_of = {s.path: s.group for s in ds.train}
    groups = [group_of.get(it.source) or it.source for it in train] if args.group_column else None
    model, summary = fit_baseline(X_train, y_train, seed=args.seed, cv=args.cv,
                                  n_jobs=args.workers or -1, groups=groups)
    t_search = time.perf_counter() - t0
    print(f"features {t_features:.1f} s, grid search {t_search:.1f} s", file=sys.stderr)
    cv_rows = [{"model": c["model"], "params": json.dumps(c["params"], sort_keys=True),
                **{k: c[k] for k in ("mean_score", "std_score", "rank", "mean_fit_time")}}
               for c in summary["candidates"]]
    pd.DataFrame(cv_rows).sort_values("rank").to_csv(out / "cv_results.csv", index=False)
    joblib.dump({"model": model, "classes": ds.classes, "feature_names": names, "meta_encoding": meta_encoding,
                 "feature_size": WORK_SIZE, "preprocess": asdict(settings)}, out / "model.joblib")

    probs = predict_probs(model, X_val, len(ds.classes))
    extra = {"method": "classical-ml", "model": summary["model"], "cv_score": summary["cv_score"],
             "cv_folds": summary["cv_folds"], "n_train": len(train), "n_features": int(X.shape[1]),
             "meta_columns": meta_columns,
             "split": "val", "data": str(args.data), "task": args.task, "mask_source": mask_source(ds.val),
             "seconds": {"features": round(t_features, 2), "grid_search": round(t_search, 2)}}
    _, report = write_labelled(out, [it.source for it in val], y_val, probs, ds.classes, extra=extra)
    params = ", ".join(f"{k}={v}" for k, v in summary["model"]["params"].items())
    report = (f"model: {summary['model']['name']}({params})   cv balanced accuracy "
              f"{summary['cv_score']:.4f} ({summary['cv_folds']}-fold)\n\n" + report)
    (out / "report.txt").write_text(report)
    print(report)
    print(f"wrote {out}")
    return 0


def main(argv=None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    return run_cli(lambda: run(args), prog)


if __name__ == "__main__":
    sys.exit(main())
