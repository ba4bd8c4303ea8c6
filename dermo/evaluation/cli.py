"""Evaluate a trained lesion classifier, or predict unlabelled images (docs/method.md §7–9).

    dermo evaluate                      # the most recent finished run under runs/, its val split
    dermo evaluate --run runs/NAME [--data DIR|CSV] [--split val] [--tta N] [--out DIR]
    dermo evaluate --model FILE.h5|FILE.keras [--task binary|multiclass|auto] [--data DIR|CSV] [--out DIR]
    dermo evaluate --run runs/NAME --images DIR [--out DIR]        # unlabelled: predictions only
    dermo evaluate --run runs/NAME --calibrate [--tta N]          # fit a temperature on the val split
    (python3 evaluate.py ... is the same command)

Writes eval-<split>/ for a run's own split, eval-<data name>/ for other data (eval-<data name>-<split> when that
data has a train/val split of its own), predict-<folder name>/ for --images — in the run folder, or beside a
--model file; an existing folder is never replaced (a numbered name is taken) unless --out names it: metrics.json,
predictions.csv, report.txt, confusion_matrix.png, roc.png, reliability.png, cams.png (the predicted class's
CAM over 16 images spread over the set, lesion mask contour in white), focus.png (histogram of the per-image lesion
focus, per class). With --images: predict/ with predictions.csv and cams.png. The image size comes from the model's
input; preprocessing is cached.

A run is evaluated on exactly the rows of its split.csv for --split (runs from before split.csv: the split
is rebuilt from config.json); a --model file inside a run folder is that run's model (its classes, split and
preprocessing). --data without a train/val split of its own (no split column, no train/val folders) is scored
whole; with one, its --split. With --data, images the run trained on — the same path, the same bytes, or the
same id in the run's --group-column — are refused (or dropped and counted with --drop-training-images) unless
--split train.

Probabilities carry the model's stored temperature (1 = none). --calibrate fits temperature scaling on the
run's val split (the model's own probabilities, whatever was stored before), stores T in model.keras/model.h5
and config.json, and reports ECE, Brier and NLL before and after; the eval folder then holds the calibrated
probabilities and a before/after reliability.png.
"""
from __future__ import annotations

import sys
from pathlib import Path

from dermo.console import parser
from dermo.errors import run_cli

PROG = "dermo evaluate"


def parse_args(argv=None, prog: str = PROG):
    p = parser(prog, __doc__)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", help="run folder written by dermo train (config.json, classes.json, model); "
                                   "default: the most recent finished run under runs/")
    src.add_argument("--model", help="a saved model (.h5 or .keras): image -> probabilities; inside a run folder "
                                     "it is that run's model (default: none, see --run)")
    p.add_argument("--task", choices=["binary", "multiclass", "auto"], default=None,
                   help="class names of a --model file outside a run folder (default: auto, from the data)")
    p.add_argument("--data", help="dataset folder or CSV to score (default: the run's recorded --split)")
    p.add_argument("--images", help="folder of unlabelled images (recursive): write predictions only "
                                    "(default: none)")
    p.add_argument("--label-column", default=None, help="CSV label column (default: the run's, or label)")
    p.add_argument("--split", choices=["train", "val"], default="val",
                   help="a run's recorded split (split.csv), or the split of a --data set that has one (data "
                        "without a split is scored whole)")
    p.add_argument("--drop-training-images", action="store_true",
                   help="drop (and count) --data images the run trained on (same path, content or group) "
                        "instead of refusing them")
    p.add_argument("--tta", type=int, default=1,
                   help="test-time augmentation: average over N flips/rotations (1 = none, at most 8)")
    p.add_argument("--batch-size", type=int, default=16, help="images per prediction batch")
    p.add_argument("--grey-outside", action="store_true",
                   help="also score every image with everything outside its lesion mask greyed (the data's masks, "
                        "else generated ones): accuracy and balanced accuracy without the surroundings, and the "
                        "share of decisions that did not change (a model that reads the lesion loses little)")
    p.add_argument("--on-bad-image", choices=["error", "skip"], default=None,
                   help="a broken image stops evaluation (error) or is skipped, counted and listed (default: the "
                        "run's option, else error)")
    p.add_argument("--cache-dir",
                   help="preprocessing cache (default: the run's, $DERMO_CACHE or ~/.cache/dermo)")
    p.add_argument("--out", help="output folder, replaced if it exists (default: RUN/eval-<split>/, "
                                 "RUN/eval-<data name>/ for --data, RUN/predict-<name>/ for --images; never an "
                                 "existing one)")
    p.add_argument("--calibrate", action="store_true",
                   help="fit temperature scaling on the run's val split, store it with the model (contract "
                        "of model.keras/model.h5, config.json) and report before/after")
    return _check_args(p, p.parse_args(argv))


def _check_args(p, args):
    if args.data and args.images:
        p.error("give --data (labelled) or --images (unlabelled), not both")
    if args.images and args.grey_outside:
        p.error("--grey-outside scores labelled images (--data or the run's split), not --images")
    if args.run and args.task:
        p.error("--task is for --model; a run knows its task")
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    return args


def check_paths(args) -> None:
    """The options' paths and --tta, checked before TensorFlow is imported (a mistake answered in well under a
    second instead of ~8 s): the same one-line messages the full checks give."""
    from dermo.errors import DermoError
    from dermo.predict.loading import MODEL_SUFFIXES
    from dermo.predict.tta import check_tta

    check_tta(args.tta)
    run = Path(args.run) if args.run else None
    if run is not None and not run.is_dir():
        if run.is_file() and run.suffix.lower() in MODEL_SUFFIXES:
            raise DermoError(f"{run}: a model file, not a run folder; evaluate it with --model {run}")
        raise DermoError(f"{run}: run folder not found")
    if args.model and not Path(args.model).exists():
        raise DermoError(f"{args.model}: model file not found")
    if args.data and not Path(args.data).exists():
        raise DermoError(f"{args.data}: data path not found")
    if args.images and not Path(args.images).exists():
        raise DermoError(f"{args.images}: not found")


def main(argv=None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)

    def body() -> int:
        check_paths(args)
        from dermo.evaluation.scoring import evaluate

        evaluate(args)
        return 0

    return run_cli(body, prog)


if __name__ == "__main__":
    sys.exit(main())
