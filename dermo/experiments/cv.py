"""Cross-validation: k stratified (group) folds, each a normal run folder, out-of-fold predictions, a table.

    dermo cv --folds 5 --data DATA [--group-column COL] [any dermo train option] --out OUT
    dermo cv --folds 3 --demo --out runs/cv-demo       # the demo data and demo training settings

All labelled images of DATA (train and val alike) are dealt into k folds (seeded, stratified; with
--group-column no lesion/patient id on two folds). Fold k's model never sees fold k before predicting it: it
trains on an inner split of the other folds and selects its epoch (--monitor, best checkpoint, early stopping, LR
schedule, BatchNorm re-estimation) on the inner validation part — a seeded stratified (grouped) split of
--val-fraction of those folds — in OUT/fold-k/, an ordinary run folder (dermo train's files, split.csv, eval-val/
on the inner validation images) trained from OUT/manifests/fold-k.csv (image, label, mask, split[, group] and the
data's other CSV columns); then it predicts fold k (OUT/manifests/fold-k-test.csv) into OUT/fold-k/eval-oof/.
Finished folds are reused and an interrupted one resumes, so re-running continues. Writes
    OUT/folds.csv   path, label, mask, fold[, group]: the assignment (refused if the data changed)
    OUT/oof.csv     every image's out-of-fold prediction exactly once: path, label, fold, predicted, per-class
                    probabilities, lesion_focus, cam_mask_pearson — from a model that used it neither in
                    training nor in selection
    OUT/cv.csv, OUT/cv.md   per-fold and mean ± sd accuracy, balanced accuracy, κ, AUC, lesion focus, and the
                    same numbers over the pooled out-of-fold predictions
The fold models form one ensemble: `dermo ensemble --models OUT --data HELD_OUT` (docs/method.md §9).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dermo.data.datasets import Sample, load_dataset
from dermo.data.groups import group_split, stratified_folds
from dermo.data.manifest import read_manifest
from dermo.console import parser
from dermo.errors import DermoError, run_cli
from dermo.experiments.ablation_report import cell as _cell, md_table as _md_table
from dermo.experiments.grid import ensure_run
from dermo.metrics import classification_metrics
from dermo.run.config import TrainConfig, check_config, meta_column_list
from dermo.run.options import add_train_arguments
from dermo.run.folder import FOLDS_CSV

OOF_CSV, CV_CSV, CV_MD = "oof.csv", "cv.csv", "cv.md"
MANIFESTS = "manifests"
OOF_DIR = "eval-oof"            # fold k's run folder: its predictions of fold k
SUMMARY = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "kappa": "kappa", "auc": "AUC",
           "lesion_focus": "lesion focus"}
RESERVED = ("image", "label", "mask", "split", "group", "entry")
PROG = "dermo cv"


class CVError(DermoError, ValueError):
    """A cross-validation that cannot run as asked; one line naming the option or folder and the fix."""


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    p = parser(prog, __doc__)
    p.add_argument("--folds", type=int, default=5, help="number of folds k (at least 2)")
    p.add_argument("--demo", action="store_true", help="the demo data and demo training settings")
    add_train_arguments(p, out_help="the cross-validation folder: fold-k/ run folders, folds.csv, oof.csv, cv.md "
                                    "(default: runs/cv-<task>-<backbone>; --demo: runs/cv-demo)")
    return p.parse_args(argv)


def fold_dir(out: Path, k: int) -> Path:
    return out / f"fold-{k}"


def assign_folds(cfg: TrainConfig, k: int) -> tuple[pd.DataFrame, list[str]]:
    """(path, label, mask, fold[, group]) for every labelled image of cfg.data, and the class names."""
    ds = load_dataset(cfg.data, cfg.task, cfg.label_column, cfg.seed, cfg.val_fraction, cfg.on_bad_image,
                      group_column=cfg.group_column, meta_columns=meta_column_list(cfg.meta_columns))
    samples = sorted(ds.train + ds.val, key=lambda s: s.path)
    folds = stratified_folds(samples, k, cfg.seed, cfg.data, cfg.group_column)
    frame = pd.DataFrame({"path": [s.path for s in samples], "label": [ds.classes[s.label] for s in samples],
                          "mask": [s.mask or "" for s in samples], "fold": folds})
    if cfg.group_column:
        frame["group"] = [s.group or "" for s in samples]
    return frame, ds.classes


def _same_assignment(saved: pd.DataFrame, frame: pd.DataFrame) -> bool:
    cols = ["path", "label", "fold"]
    return saved[cols].astype(str).equals(frame[cols].astype(str))


def write_folds(out: Path, frame: pd.DataFrame) -> None:
    path = out / FOLDS_CSV
    if path.exists() and not _same_assignment(pd.read_csv(path, keep_default_na=False), frame):
        raise CVError(f"{path}: the folds of this folder were made from other data or options (--data, --seed, "
                      "--folds, --group-column); choose another --out or delete the folder")
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def extra_columns(cfg: TrainConfig) -> pd.DataFrame | None:
    """A CSV's other columns (metadata such as age or sex) by absolute image path, to carry into the folds."""
    if Path(cfg.data).suffix.lower() != ".csv":
        return None
    df = read_manifest(cfg.data, meta_columns=meta_column_list(cfg.meta_columns))   # metadata as written
    keep = [c for c in df.columns if c not in RESERVED and c != cfg.label_column]
    return df.set_index("image")[keep] if keep else None


def inner_split(part: pd.DataFrame, cfg: TrainConfig, source) -> np.ndarray:
    """"train"/"val" per row of a fold's training part (path, label, mask[, group]): a seeded stratified split,
    grouped by the group column when given (dermo.data.groups.group_split), with --val-fraction as val."""
    names = sorted(part["label"].unique())
    samples = [Sample(p, names.index(lab), None, (g or None) if cfg.group_column else None)
               for p, lab, g in zip(part["path"], part["label"], part.get("group", [""] * len(part)))]
    _, val = group_split(samples, cfg.val_fraction, cfg.seed, source, "group" if cfg.group_column else None)
    return np.where(part["path"].isin({s.path for s in val}), "val", "train")


def write_manifests(out: Path, frame: pd.DataFrame, extras: pd.DataFrame | None, cfg: TrainConfig) -> list[Path]:
    """Per fold k: OUT/manifests/fold-k.csv, the other folds split into inner train and val (the run's data), and
    fold-k-test.csv, fold k's images without a split column (scored whole, out of fold)."""
    (out / MANIFESTS).mkdir(parents=True, exist_ok=True)
    paths = []
    for k in sorted(frame["fold"].unique()):
        m = frame.rename(columns={"path": "image"}).drop(columns="fold")
        if extras is not None:
            m = m.join(extras, on="image")
        part = frame["fold"] != k
        train = m[part].copy()
        train.insert(3, "split", inner_split(frame[part], cfg, out / MANIFESTS / f"fold-{k}.csv"))
        train.to_csv(out / MANIFESTS / f"fold-{k}.csv", index=False)
        m[~part].to_csv(out / MANIFESTS / f"fold-{k}-test.csv", index=False)
        paths.append(out / MANIFESTS / f"fold-{k}.csv")
    return paths


def predict_out_of_fold(run_dir: Path, test_manifest: Path, batch_size: int, log=print) -> dict:
    """Fold k's model on fold k's images -> run_dir/eval-oof/ (reused when done); its metrics.json dict."""
    from dermo.experiments.grid import evaluate_run
    from dermo.run.folder import read_json

    metrics = run_dir / OOF_DIR / "metrics.json"
    if not metrics.exists():
        log(f"== {run_dir}: predicting its out-of-fold images")
        evaluate_run(run_dir, log, "--data", str(test_manifest), "--batch-size", str(batch_size), "--out",
                     str(run_dir / OOF_DIR))
    return read_json(metrics)


def fold_config(base: TrainConfig, manifest: Path, run_dir: Path) -> TrainConfig:
    return dataclasses.replace(base, data=str(manifest), label_column="label", out=str(run_dir), resume=False,
                               group_column="group" if base.group_column else None)


def out_of_fold(out: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Every fold's eval-oof/predictions.csv, with its fold; each image must appear exactly once."""
    parts = []
    for k in sorted(frame["fold"].unique()):
        pred = pd.read_csv(fold_dir(out, k) / OOF_DIR / "predictions.csv")
        pred.insert(2, "fold", k)
        parts.append(pred)
    oof = pd.concat(parts, ignore_index=True)
    counts = oof["path"].value_counts()
    missing = set(frame["path"]) - set(oof["path"])
    if missing or (counts > 1).any():
        raise CVError(f"{out}: the out-of-fold predictions cover {len(set(oof['path']))} of {len(frame)} images "
                      f"({len(missing)} missing, {(counts > 1).sum()} twice); delete the fold's {OOF_DIR}/ and rerun")
    return oof


def summary(per_fold: list[dict], oof: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One row per fold, then mean and sd over folds, then the pooled out-of-fold numbers."""
    rows = [{"fold": str(k), **{m: r.get(m) for m in SUMMARY}} for k, r in enumerate(per_fold)]
    table = pd.DataFrame(rows).astype({m: float for m in SUMMARY})
    stats = [{"fold": "mean", **table[list(SUMMARY)].mean().to_dict()},
             {"fold": "sd", **table[list(SUMMARY)].std(ddof=1).to_dict()}]
    labels = oof["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    pooled = classification_metrics(labels, oof[_prob_columns(oof, classes)].to_numpy(), classes)
    focus = oof["lesion_focus"].to_numpy(float) if "lesion_focus" in oof else np.array([np.nan])
    stats.append({"fold": "out-of-fold", **{m: pooled.get(m) for m in SUMMARY},
                  "lesion_focus": float(np.nanmean(focus)) if np.isfinite(focus).any() else np.nan})
    return pd.concat([table, pd.DataFrame(stats)], ignore_index=True)


def _prob_columns(frame: pd.DataFrame, classes: list[str]) -> list[str]:
    return [c if c in frame.columns else f"p_{c}" for c in classes]


def markdown(table: pd.DataFrame, base: TrainConfig, k: int) -> str:
    setting = (f"data `{base.data}`, task {base.task}, backbone {base.backbone}, {base.image_size} px, at most "
               f"{base.epochs} epoch(s), weights {base.weights}, seed {base.seed}"
               + (f", grouped by `{base.group_column}`" if base.group_column else ""))
    rows = [[str(r["fold"]), *(_cell(r[m]) for m in SUMMARY)] for _, r in table.iterrows()]
    return "\n".join([f"# {k}-fold cross-validation", "", f"{setting}.", "",
                      "Each fold's numbers are on its own fold, predicted by a model that used none of its images: "
                      f"it trained on the other folds and chose its epoch on an inner validation split of them "
                      f"({base.val_fraction:g} of their images"
                      + (f", grouped by `{base.group_column}`" if base.group_column else "") + "). `mean` and "
                      "`sd` are over the folds; `out-of-fold` pools every image's prediction.", "",
                      _md_table(["fold", *SUMMARY.values()], rows)])


def cross_validate(base: TrainConfig, k: int, out, log=print) -> pd.DataFrame:
    """Run (or reuse) every fold and write folds.csv, oof.csv, cv.csv and cv.md; returns the cv table."""
    if k < 2:
        raise CVError(f"--folds {k}: use at least 2 folds")
    check_config(base)
    out = Path(out)
    frame, classes = assign_folds(base, k)
    write_folds(out, frame)
    manifests = write_manifests(out, frame, extra_columns(base), base)
    per_fold = []
    for fold, manifest in enumerate(manifests):
        log(f"== fold {fold + 1}/{k}: {(frame['fold'] == fold).sum()} out-of-fold images")
        ensure_run(fold_config(base, manifest, fold_dir(out, fold)), log)      # trained, selected on inner val
        per_fold.append(predict_out_of_fold(fold_dir(out, fold), manifest.with_name(f"fold-{fold}-test.csv"),
                                            base.batch_size, log))
    oof = out_of_fold(out, frame)
    oof.to_csv(out / OOF_CSV, index=False)
    table = summary(per_fold, oof, classes)
    table.to_csv(out / CV_CSV, index=False)
    (out / CV_MD).write_text(markdown(table, base, k))
    log((out / CV_MD).read_text().rstrip())
    log(f"wrote {out / FOLDS_CSV}, {out / OOF_CSV}, {out / CV_CSV}, {out / CV_MD}")
    return table


def main(argv=None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)

    def body() -> int:
        from dermo.training.cli import resolve_config

        out = Path(args.out) if args.out else Path("runs") / ("cv-demo" if args.demo else
                                                             f"cv-{args.task}-{args.backbone.lower()}")
        train_args = {k: v for k, v in vars(args).items() if k != "folds"}
        base = resolve_config(argparse.Namespace(**{**train_args, "resume": False}))
        cross_validate(base, args.folds, out)
        return 0

    return run_cli(body, prog)


if __name__ == "__main__":
    sys.exit(main())
