"""One evaluation (`dermo evaluate`, docs/method.md §7–9): which images, which output folder, the predictions,
the report, and --calibrate. The command line is dermo.evaluation.cli; cross-validation and the ablation call
`evaluate(args)` with that parser's options.

    evaluate(args, log)          -> metrics dict (labelled) or {"n", "skipped"} (--images)
    default_out(args, source, whole, log)   eval-<split>/, eval-<data name>[-<split>]/, predict-<name>/, never an
                                            existing folder unless --out names it
"""
from __future__ import annotations

import time
from pathlib import Path

from dermo.data.duplicates import file_digest
from dermo.run.folder import is_cv_folder


def data_name(data) -> str:
    """A short name for a data set: a CSV's stem, a folder's name."""
    p = Path(data)
    return (p.stem if p.suffix.lower() == ".csv" else p.resolve().name) or "data"


def free_folder(path: Path, log=print) -> Path:
    """`path`, or the first free `path-2`, `path-3`, … when it exists (an evaluation never replaces another)."""
    if not path.exists():
        return path
    n = 2
    while path.with_name(f"{path.name}-{n}").exists():
        n += 1
    free = path.with_name(f"{path.name}-{n}")
    log(f"note: {path} exists; writing {free} (name a folder with --out to replace it)")
    return free


def stale_note(folder: Path, model_path) -> str | None:
    """A note when the evaluation in `folder` scored another version of the model file (its metrics.json records
    the file's digest; evaluations from before that record say nothing)."""
    import json

    metrics = Path(folder) / "metrics.json"
    if not metrics.is_file():
        return None
    recorded = json.loads(metrics.read_text()).get("model_digest")
    if recorded is None or recorded == file_digest(model_path):
        return None
    return (f"note: {folder} scored an earlier version of {model_path} (the model file changed since, e.g. trained "
            "longer or calibrated): its numbers are not this model's")


def default_out(args, source, whole: bool = False, log=print) -> Path:
    """--out as given; else in the run folder (beside a --model file): eval-<split> for the run's own split,
    eval-<data name>[-<split>] for --data (no split suffix when scored whole), predict-<name> for --images;
    never an existing folder."""
    if args.out:
        return Path(args.out)
    base = source.run.path if source.run is not None else source.model_path.parent
    if args.images:
        name = f"predict-{data_name(args.images)}"
    elif args.data:
        name = f"eval-{data_name(args.data)}" + ("" if whole else f"-{args.split}")
    else:
        name = f"eval-{args.split}"
    note = stale_note(base / name, source.model_path)
    if note:
        log(note)
    return free_folder(base / name, log)


def labelled_samples(args, source, log=print):
    """(samples, class names, dataset source, skipped lines, whole) for a labelled evaluation: a run without
    --data -> its split.csv rows of --split; else --data, whole when it has no split of its own (whole True),
    else its --split, where a run refuses (or with --drop-training-images drops) images it trained on unless
    --split train. A metadata model's columns come with the samples (split.csv's meta:<name> columns, or the
    --data CSV's own columns)."""
    from dermo.data.datasets import load_dataset
    from dermo.evaluation.sources import EvaluationError, check_classes, data_meta_columns
    from dermo.evaluation.splits import held_out, recorded_samples, training_set

    run = source.run
    if run is not None and not args.data:
        samples, data, skipped = recorded_samples(run, args.split, _on_bad(args, source), log)
        if not samples:
            raise EvaluationError(f"{data}: the {args.split} split is empty")
        log(f"scoring the run's {len(samples)} {args.split} images ({data})")
        return samples, list(run.classes), data, skipped, False
    cfg = run.config if run is not None else None
    label_column = args.label_column or (cfg.label_column if cfg else "label")
    task = "auto" if run is not None else source.task
    ds = load_dataset(args.data, task, label_column, on_bad=_on_bad(args, source), make_split=False,
                      meta_columns=data_meta_columns([source], args.data, log))
    classes = check_classes(source, ds.classes, args.data)
    samples = ds.split(args.split) if ds.given_split else ds.val
    if not samples:
        raise EvaluationError(f"{args.data}: the {args.split} split is empty")
    if run is not None and (args.split != "train" or not ds.given_split):
        split = args.split if ds.given_split else ""
        samples = held_out(samples, {str(run.path): training_set(run, log)}, args.data, split,
                           "evaluate on held-out images, or pass --split train to score training images on "
                           "purpose", args.drop_training_images, log, data=args.data)
        if not samples:
            raise EvaluationError(f"{args.data}: every image was used in training by {run.path}")
    elif run is None:
        log(f"note: {source.spec} is not in a run folder; its training images are unknown, so whether it trained "
            f"on these images is not checked (evaluate it with --run RUN to have them refused)")
    which = f"its {args.split} split" if ds.given_split else "whole: it has no train/val split"
    log(f"scoring {len(samples)} images of {args.data} ({which})")
    return samples, classes, ds.source, list(ds.skipped), not ds.given_split


def latest_run(args, log=print) -> str:
    """`dermo evaluate` without --run/--model: the most recent finished run under runs/."""
    from dermo.evaluation.sources import EvaluationError
    from dermo.run.folder import CONFIG
    from dermo.run.folder import latest_run as newest

    if args.task:
        raise EvaluationError("--task is for --model FILE; without --run or --model the most recent run "
                              "under runs/ is evaluated, and it knows its task")
    run = newest(Path("runs"))
    if run is None:
        raise EvaluationError(f"no finished run under {Path('runs').resolve()} (no runs/*/{CONFIG}); train "
                              "one with dermo train, or pass --run RUN or --model FILE")
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime((run / CONFIG).stat().st_mtime))
    log(f"evaluating the most recent run {run} (finished {stamp}; choose another with --run)")
    return str(run)


def check_calibrate(args, source) -> None:
    """--calibrate fits on a run's own recorded val split: one line for anything else."""
    from dermo.evaluation.sources import EvaluationError

    conflicts = [(source.run is None, "--model FILE (pass the run folder with --run)"),
                 (args.images, "--images (unlabelled images)"),
                 (args.data, "--data (it fits on the run's own split.csv val rows)"),
                 (args.split != "val", "--split train (fit on held-out images)")]
    for conflict, option in conflicts:
        if conflict:
            raise EvaluationError(f"--calibrate fits the temperature on a run's val split; it cannot be used "
                                  f"with {option}")


def _on_bad(args, source) -> str:
    return args.on_bad_image or (source.run.config.on_bad_image if source.run is not None else "error")


def evaluate_folds(args, log=print) -> dict:
    """--run on a cross-validation folder: its fold models as one soft-vote ensemble (dermo ensemble)."""
    from dermo.evaluation import ensemble

    argv = ["--models", args.run, "--split", args.split, "--batch-size", str(args.batch_size),
            "--out", str(args.out or free_folder(Path(args.run) / f"eval-{args.split}", log))]
    for flag, value in (("--data", args.data), ("--label-column", args.label_column),
                        ("--on-bad-image", args.on_bad_image), ("--cache-dir", args.cache_dir)):
        argv += [flag, value] if value else []
    argv += ["--drop-training-images"] if args.drop_training_images else []
    return ensemble.run_ensemble(ensemble.parse_args(argv), log)


def evaluate(args, log=print) -> dict:
    from dermo.data.datasets import unlabelled_samples
    from dermo.metrics.classification import majority_note, outside_greyed
    from dermo.evaluation.report import write_labelled, write_unlabelled
    from dermo.evaluation.sources import EvaluationError, mask_source, predictor_for, resolve_source
    from dermo.predict.loading import load_model_safely
    from dermo.predict.tta import check_tta
    from dermo.run.folder import SEG_MODEL

    start = time.perf_counter()
    check_tta(args.tta)
    if not args.run and not args.model:
        args.run = latest_run(args, log)
    if args.run and is_cv_folder(args.run):
        if args.calibrate:
            raise EvaluationError(f"{args.run}: --calibrate fits one run's val split; for a cross-validation folder "
                                  "fit T on its out-of-fold predictions (oof.csv) with dermo.metrics.fit_temperature "
                                  "and store it in every fold with dermo.evaluation.calibration.store_temperature "
                                  "(docs/method.md §7), or calibrate each fold on its own with --run OUT/fold-k")
        return evaluate_folds(args, log)
    kind = "run" if args.run else "model"
    source = resolve_source(args.run or args.model, args.task or "auto", kind, own_run=True)
    if source.run is None and not (args.data or args.images):
        raise EvaluationError(f"{args.model}: not inside a run folder (no config.json beside it), so there is no "
                              "split to score; pass --data DIR|CSV (or --images DIR)")
    if args.calibrate:
        check_calibrate(args, source)
    if args.images:
        if source.classes is None:
            raise EvaluationError("--images with --model needs --task binary|multiclass (class names "
                                  "cannot come from unlabelled images)")
        samples, classes, skipped = unlabelled_samples(args.images), source.classes, []
        data_source, whole = args.images, True
    else:
        samples, classes, data_source, skipped, whole = labelled_samples(args, source, log)
    predictor = predictor_for(source, classes, args.cache_dir, args.batch_size)
    if args.calibrate:
        predictor.temperature = 1.0                       # fit on the model's own probabilities
    size = predictor.image_size
    out = default_out(args, source, whole, log)
    items, bad = predictor.prepare(samples, _on_bad(args, source))
    skipped += bad
    if not items:
        raise EvaluationError(f"{data_source}: no usable images left (all {len(samples)} skipped)")
    kept = {it.source for it in items}
    pred = predictor.predict_items(items, args.tta, progress=True, grey_outside=args.grey_outside)
    for line in skipped:
        log(f"skipped: {line}")
    if args.images:
        frame = write_unlabelled(out, pred, classes)
        counts = frame["predicted"].value_counts().reindex(classes, fill_value=0)
        log(f"predicted {len(frame)} images: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        log(f"wrote {out}/predictions.csv and cams.png")
        return {"n": len(frame), "skipped": skipped}
    extra = {"split": "all" if whole else args.split, "tta": args.tta, "image_size": size, "model": str(source.model_path),
             "model_digest": file_digest(source.model_path),
             "preprocessing": {"hair": predictor.hair, "color": predictor.color,
                               "color_region": predictor.color_region},
             "data": str(data_source), "mask_source": mask_source([s for s in samples if s.path in kept]),
             "n_skipped": len(skipped), "skipped": skipped,
             "predict_seconds": round(time.perf_counter() - start, 2), "temperature": predictor.temperature}
    if pred.probs_greyed is not None:
        extra["outside_greyed"] = outside_greyed(pred.labels, pred.probs, pred.probs_greyed)
    curves = None
    if args.calibrate:
        curves = calibrate(source.run, pred, args.tta, extra, log)
    seg_path = source.run.path / SEG_MODEL if source.run is not None else None
    if seg_path is not None and seg_path.exists():        # classification + segmentation run
        from dermo.evaluation.segmentation import segmentation_dice

        extra["segmentation_dice"] = segmentation_dice(load_model_safely(seg_path), items,
                                                       len(classes), args.batch_size)
        log(f"segmentation head: mean Dice {extra['segmentation_dice']:.4f} vs the lesion masks")
    m, report = write_labelled(out, pred.paths, pred.labels, pred.probs, classes, extra, pred,
                               reliability=curves)
    log(report.rstrip())
    if "outside_greyed" in extra:
        g = extra["outside_greyed"]
        log(f"outside the lesion greyed ({extra['mask_source']} masks): accuracy {g['accuracy']:.4f} "
            f"({g['accuracy_change']:+.4f}), balanced accuracy {g['balanced_accuracy']:.4f} "
            f"({g['balanced_accuracy_change']:+.4f}), decisions unchanged {g['unchanged']:.1%}")
    note = majority_note(pred.labels, pred.probs, classes, "images")
    if note:
        log(note)
    log(f"wrote {out}/ (metrics.json, predictions.csv, report.txt, confusion_matrix.png, roc.png, "
        "reliability.png, cams.png, focus.png)")
    return m


def calibrate(run, pred, tta: int, extra: dict, log=print) -> dict:
    """Fit and store the run's temperature on `pred` (raw val probabilities); pred.probs become the calibrated
    ones and `extra` gets the record; returns the before/after curves of reliability.png."""
    from dermo.evaluation.calibration import store_temperature, temperature_record
    from dermo.metrics import apply_temperature

    record = temperature_record(pred.labels, pred.probs, "val", tta)
    raw, t = pred.probs, record["temperature"]
    pred.probs = apply_temperature(raw, t).astype("float32")
    extra.update({"calibration": record, "temperature": t})
    changed = store_temperature(run.path, record)
    log(f"temperature T = {t:g} stored in " + ", ".join(f.name for f in changed))
    return {"before (T = 1)": raw, f"after (T = {t:.3g})": pred.probs}
