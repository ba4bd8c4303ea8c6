"""The run folder (docs/method.md §8): names, atomic JSON writes, reading a run back."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from dermo.data.imageio import atomic_write_bytes
from dermo.errors import DermoError
from dermo.run.config import TrainConfig
from dermo.run.contract import embed_contract

CONFIG = "config.json"
CLASSES = "classes.json"
MODEL_KERAS = "model.keras"
MODEL_H5 = "model.h5"
SEG_MODEL = "seg_model.keras"
HISTORY = "history.csv"
CURVES = "curves.png"
BEST_WEIGHTS = "best.weights.h5"
BACKUP_DIR = "backup"
RESUME_CONFIG = "resume_config.json"
FOLDS_CSV = "folds.csv"          # a cross-validation folder (dermo.experiments.cv): its fold assignment


class RunError(DermoError, ValueError):
    """A run folder that cannot be used, as one line naming the fix."""


def default_run_name(cfg: TrainConfig) -> str:
    return f"{cfg.task}-{cfg.backbone.lower()}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def save_keras_atomic(model, path, weights_only: bool = False, contract: dict | None = None) -> None:
    """model.save (or save_weights) to a temporary name in the same folder, then rename: a kill never
    leaves half a file. The temporary name keeps the suffix Keras checks (.keras, .h5, .weights.h5).
    `contract` (dermo.run.contract) is embedded in the model file before the rename."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        (model.save_weights if weights_only else model.save)(tmp)
        if contract is not None:
            embed_contract(tmp, contract)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def run_folder_of(model_file) -> Path | None:
    """The run folder a model file sits in: its parent folder when that holds config.json, else None."""
    parent = Path(model_file).resolve().parent
    return parent if (parent / CONFIG).is_file() else None


def latest_run(root="runs") -> Path | None:
    """The finished run (a folder with config.json and classes.json) under `root`, at any depth, whose
    config.json is the newest; None when there is none."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = [c.parent for c in root.rglob(CONFIG) if c.is_file() and (c.parent / CLASSES).is_file()]
    return max(found, key=lambda d: ((d / CONFIG).stat().st_mtime_ns, str(d)), default=None)


def is_cv_folder(path) -> bool:
    """A cross-validation folder of `dermo cv` (it holds folds.csv)."""
    return (Path(path) / FOLDS_CSV).is_file()


def fold_runs(path) -> list[Path]:
    """The fold run folders of a cross-validation folder, in fold order (folds.csv's fold column)."""
    import csv

    with open(Path(path) / FOLDS_CSV, newline="") as f:
        folds = sorted({int(row["fold"]) for row in csv.DictReader(f)})
    return [Path(path) / f"fold-{k}" for k in folds]


@dataclass
class Run:
    path: Path
    config: TrainConfig
    classes: list[str]

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_KERAS if (self.path / MODEL_KERAS).exists() else self.path / MODEL_H5


def load_run(path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: run folder not found")
    if not (path / CONFIG).exists():
        raise RunError(f"{path}: no {CONFIG} — not a finished dermo run folder (train with dermo train "
                       "--out, or evaluate a model file with --model FILE --task T --data DATA)")
    cfg = TrainConfig.from_dict(read_json(path / CONFIG))
    classes = read_json(path / CLASSES)["classes"] if (path / CLASSES).exists() else None
    if not classes:
        raise RunError(f"{path}: no {CLASSES}; the run did not finish")
    run = Run(path, cfg, classes)
    if not run.model_path.exists():
        raise RunError(f"{path}: no {MODEL_KERAS} or {MODEL_H5}; the run did not finish "
                       f"(continue it with dermo train --resume --out {path})")
    return run
