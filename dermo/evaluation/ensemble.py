"""Ensemble of trained lesion classifiers: soft vote (default), geometric mean or rank average (docs/method.md
§7, §9).

    dermo ensemble --models runs/a/model.h5 runs/b/model.h5      # data, task and split from the runs
    dermo ensemble --models a.h5 b.keras runs/NAME ... [--data DIR|CSV] [--task T]
                   [--weights 1 2 ...] [--method mean|geometric|rank] [--split val] [--out DIR]
    (python3 ensemble.py ... is the same command)

Each member is a run folder (its classes.json), a model file inside a run folder (that run's), or a bare
model file (its class names come from --task; auto: from the data). Members must agree on the class list.
Without --data the members' runs must share their data: the ensemble scores the first run's recorded
--split rows (split.csv). --data without a train/val split of its own is scored whole; with one, its --split.
Images any member trained on (the runs' split.csv train rows: the same path, the same bytes, or the same id in the
run's --group-column) are refused — or dropped and counted with --drop-training-images — unless --split train;
members trained on other splits need a held-out --data. All members are loaded and checked before any predicts. Every model is fed at its own input
size (so with its own preprocessing cache size) and its own stored temperature (dermo evaluate --calibrate).
--method mean (the default, the deck's soft vote): the weighted mean of the probabilities; geometric: their
weighted geometric mean, renormalised; rank: per model and class, each probability is replaced by its rank
among the evaluated images scaled to [0, 1], then the weighted mean — scores, not probabilities, so AUC and
the argmax numbers are reported but log loss, ECE and Brier are not. Predictions are aligned by image path:
an image skipped by any member's preprocessing is dropped for all, counted and reported. Writes metrics.json,
predictions.csv, report.txt, confusion_matrix.png, roc.png and (probabilities only) reliability.png to --out
(default runs/ensemble-<timestamp>/).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from dermo.console import parser
from dermo.errors import run_cli
from dermo.run.folder import fold_runs, is_cv_folder

PROG = "dermo ensemble"

HEADLINE = ("accuracy", "balanced_accuracy", "kappa", "auc")     # per-member numbers in metrics.json


def parse_args(argv=None, prog: str = PROG):
    from dermo.metrics.ensemble import METHODS

    p = parser(prog, __doc__)
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="model files (.h5/.keras), run folders and/or cross-validation folders (dermo cv: all "
                        "its fold models); required")
    p.add_argument("--data", help="dataset folder or CSV manifest (default: the members' runs' data and "
                                   "recorded split)")
    p.add_argument("--task", choices=["binary", "multiclass", "auto"], default="auto",
                   help="class names of model files outside run folders (auto: from the data)")
    p.add_argument("--weights", nargs="+", type=float, metavar="W",
                   help="one non-negative weight per model (default: equal weights)")
    p.add_argument("--method", choices=METHODS, default="mean",
                   help="mean: weighted mean of the probabilities (soft vote); geometric: weighted geometric "
                        "mean; rank: weighted mean of per-class ranks scaled to [0, 1] (scores: AUC-type use)")
    p.add_argument("--split", choices=["train", "val"], default="val",
                   help="the runs' recorded split, or the split of a --data set that has one (data without a "
                        "split is scored whole)")
    p.add_argument("--drop-training-images", action="store_true",
                   help="drop (and count) images a member trained on (same path, content or group) instead of "
                        "refusing them")
    p.add_argument("--label-column", default=None,
                   help="CSV label column (default: the first run's, or label)")
    p.add_argument("--batch-size", type=int, default=16, help="images per prediction batch")
    p.add_argument("--on-bad-image", choices=["error", "skip"], default="error",
                   help="an unreadable image stops the ensemble (error) or is skipped, counted and listed")
    p.add_argument("--cache-dir", help="preprocessing cache (default: $DERMO_CACHE or ~/.cache/dermo)")
    p.add_argument("--out", help="output folder (default: runs/ensemble-<timestamp>/)")
    args = p.parse_args(argv)
    args.cv_folders = [m for m in args.models if is_cv_folder(m)]
    args.models = expand_members(args.models)
    if args.weights is not None:
        if len(args.weights) != len(args.models):
            p.error(f"--weights: {len(args.weights)} weights for {len(args.models)} models")
        if min(args.weights) < 0 or sum(args.weights) <= 0:
            p.error("--weights must be non-negative with a positive sum")
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    return args


def expand_members(specs: list[str]) -> list[str]:
    """A cross-validation folder stands for its fold run folders, in fold order."""
    return [str(f) for s in specs for f in (fold_runs(s) if is_cv_folder(s) else [s])]


def common_classes(sources, task: str) -> list[str] | None:
    """The members' shared class list (None: only auto model files -> from the data); else one line."""
    from dermo.evaluation.sources import EvaluationError

    named = [(s, s.classes) for s in sources if s.classes is not None]
    tasks = {s.task for s in sources if s.task != "auto"}
    if len(tasks) > 1 or len({tuple(c) for _, c in named}) > 1:
        listing = "; ".join(f"{s.spec}: task {s.task}, classes {', '.join(s.classes or ['from the data'])}"
                            for s in sources)
        raise EvaluationError(f"the models disagree on their task or classes ({listing}); ensemble only "
                              "models of one task with the same class list")
    return list(named[0][1]) if named else None


def evaluation_set(args, sources, log) -> tuple[list, list[str] | None, str, list[str], bool]:
    """(samples, data classes or None, data source, skipped lines, whole): --data whole when it has no split of
    its own (whole True), else its --split; without --data the first run's recorded split, when every member has
    a run and the runs share their data."""
    from dermo.data.datasets import load_dataset
    from dermo.evaluation.sources import EvaluationError, data_meta_columns
    from dermo.evaluation.splits import recorded_samples

    first_run = next((s.run for s in sources if s.run is not None), None)
    if args.data:
        cfg = first_run.config if first_run else None
        label_column = args.label_column or (cfg.label_column if cfg else "label")
        ds = load_dataset(args.data, "auto", label_column, on_bad=args.on_bad_image, make_split=False,
                          meta_columns=data_meta_columns(sources, args.data, log))
        samples = ds.split(args.split) if ds.given_split else ds.val
        which = f"its {args.split} split" if ds.given_split else "whole: it has no train/val split"
        log(f"scoring {len(samples)} images of {args.data} ({which})")
        return samples, list(ds.classes), ds.source, list(ds.skipped), not ds.given_split
    lone = next((s for s in sources if s.run is None), None)
    if lone is not None:
        raise EvaluationError(f"{lone.spec}: not in a run folder (no config.json beside it), so there is no "
                              "data to take; pass --data DIR|CSV")
    data = {s.spec: (str(Path(s.run.config.data or "").resolve()), s.run.config.label_column) for s in sources}
    if len(set(data.values())) > 1:
        listing = "; ".join(f"{spec}: {d} (label column {col})" for spec, (d, col) in data.items())
        raise EvaluationError(f"the models were trained on different data ({listing}); pass --data DIR|CSV "
                              "to choose one evaluation set")
    samples, source, skipped = recorded_samples(first_run, args.split, args.on_bad_image, log)
    recorded = {n for s in samples for n, _ in (s.meta or ())}
    absent = [n for s in sources for n in s.meta_columns if n not in recorded]
    if absent:
        raise EvaluationError(f"{source}: has no metadata column {', '.join(dict.fromkeys(absent))} that a member "
                              "takes; pass --data CSV with those columns")
    return samples, None, source, skipped, False


def member_probs(source, predictor, samples, args, log, skipped_lines: list | None = None) -> dict:
    """{image path: probabilities (K,)} of one member (its Predictor) on `samples`, fed at its own input size with
    its own preprocessing; the one-line reasons of the images it skipped are appended to `skipped_lines`."""
    items, skipped = predictor.prepare(samples, args.on_bad_image)
    for line in skipped:
        log(f"skipped by {source.spec}: {line}")
    if skipped_lines is not None:
        skipped_lines.extend(skipped)
    if not items:
        return {}
    pred = predictor.predict_items(items, with_cams=False)
    calibrated = f", temperature {predictor.temperature:g}" if predictor.temperature != 1.0 else ""
    log(f"{source.spec}: {len(items)} images at {predictor.image_size} px{calibrated}")
    return dict(zip(pred.paths, pred.probs))


def align(samples, per_model: list[dict]) -> tuple[list, int]:
    """Samples (in dataset order) that every member predicted, and how many were dropped."""
    kept = [s for s in samples if all(s.path in pm for pm in per_model)]
    return kept, len(samples) - len(kept)


def run_ensemble(args, log=print) -> dict:
    import numpy as np

    from dermo import metrics
    from dermo.evaluation.report import write_labelled
    from dermo.evaluation.sources import EvaluationError, resolve_source
    from dermo.evaluation.splits import held_out, training_set
    from dermo.metrics.ensemble import PROBABILITY_METHODS

    cv_folders = getattr(args, "cv_folders", [])
    if cv_folders and not args.data:
        raise EvaluationError(f"{cv_folders[0]}: every image of a cross-validation folder trained some fold, so "
                              "none is held out: its honest scores are the out-of-fold ones (cv.md, oof.csv); "
                              "score the fold ensemble on a separate set with --data DIR|CSV")
    sources = [resolve_source(m, args.task, own_run=True) for m in args.models]
    classes = common_classes(sources, args.task)
    samples, data_classes, data_source, ds_skipped, whole = evaluation_set(args, sources, log)
    if classes is None:
        classes = data_classes
    elif data_classes is not None and data_classes != classes:
        raise EvaluationError(f"{args.data}: classes {', '.join(data_classes)} differ from the models' "
                                 f"({', '.join(classes)})")
    if not samples:
        raise EvaluationError(f"{data_source}: the {args.split} split is empty")
    if args.split != "train" or whole:
        trained = {s.spec: training_set(s.run, log) for s in sources if s.run is not None}
        for s in sources:
            if s.run is None:
                log(f"note: {s.spec} is not in a run folder; its training images are unknown (not checked)")
        samples = held_out(samples, trained, data_source, "" if whole else args.split,
                           "members must be scored on images none of them trained on (members trained on other "
                           "splits, e.g. another --seed, cannot share one); pass --data with a held-out set, or "
                           "--split train on purpose", args.drop_training_images, log, data=args.data)
        if not samples:
            raise EvaluationError(f"{data_source}: every image was used in training by a member")
    from dermo.evaluation.sources import predictor_for

    predictors = [predictor_for(s, classes, args.cache_dir, args.batch_size) for s in sources]   # all load first
    bad: list[str] = []
    per_model = [member_probs(s, pr, samples, args, log, bad) for s, pr in zip(sources, predictors)]
    kept, dropped = align(samples, per_model)
    if dropped:
        log(f"dropped {dropped} image(s) that at least one model could not use")
    if not kept:
        raise EvaluationError(f"{data_source}: no image is usable by every model")
    labels = np.array([s.label for s in kept])
    probs_list = [np.stack([pm[s.path] for s in kept]) for pm in per_model]          # M x (N,K)
    probs = metrics.combine(args.method, probs_list, args.weights)
    members = []
    for s, p in zip(sources, probs_list):
        mm = metrics.classification_metrics(labels, p, classes)
        members.append({"model": s.spec, **{k: mm[k] for k in HEADLINE}})
    extra = {"split": "all" if whole else args.split, "data": data_source, "models": [s.spec for s in sources],
             "method": args.method, "outputs": "scores" if args.method == "rank" else "probabilities",
             "weights": args.weights or [1.0] * len(sources), "members": members, "n_dropped": dropped,
             "skipped": list(dict.fromkeys(ds_skipped + bad))}          # once each, as dermo evaluate
    out = Path(args.out) if args.out else Path("runs") / f"ensemble-{time.strftime('%Y%m%d-%H%M%S')}"
    m, report = write_labelled(out, [s.path for s in kept], labels, probs, classes, extra,
                               probabilities=args.method in PROBABILITY_METHODS)
    log(report.rstrip())
    for mem in members:
        log(f"  member {mem['model']}: accuracy {mem['accuracy']:.4f}")
    log(f"wrote {out}/ (metrics.json, predictions.csv, report.txt, confusion_matrix.png, roc.png)")
    return m


def main(argv=None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)

    def body() -> int:
        run_ensemble(args)
        return 0

    return run_cli(body, prog)


if __name__ == "__main__":
    sys.exit(main())
