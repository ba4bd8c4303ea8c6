"""Crash-safe checkpoints for --resume: the run's state after every epoch, written atomically.

    runs/NAME/backup/epoch-0007.weights.h5   model + optimizer variables (centres and LR included)
    runs/NAME/backup/state.json              {"epoch": 7, "weights": "epoch-0007.weights.h5",
                                              "best": 0.83, "callbacks": {...}, "rng": [...],
                                              "train_seconds": 412.5}   (over every process of the run)
    runs/NAME/best.weights.h5                best val_accuracy so far

Each file is written to a temporary name and renamed, and state.json is replaced only after the weights it
names are complete, so a kill at any moment leaves a loadable pair. Keras' BackupAndRestore writes in place
and keeps no early-stopping/LR-schedule state, hence this callback.
"""
from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from dermo.data.imageio import atomic_write_bytes
from dermo.run.folder import read_json, save_keras_atomic, write_json

STATE = "state.json"
# fields of Keras callbacks that carry over an interruption
CALLBACK_FIELDS = {keras.callbacks.EarlyStopping: ("wait", "best", "stopped_epoch", "best_epoch"),
                   keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter")}


def save_weights_atomic(model: keras.Model, path) -> None:
    save_keras_atomic(model, path, weights_only=True)


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if hasattr(value, "numpy"):
        return float(value.numpy())
    return value


def rng_variables(model: keras.Model) -> list:
    """Variables that are not weights: the seed-generator states of Dropout & co. (save_weights skips
    them, yet a resumed run must draw the same dropout masks as an uninterrupted one)."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _fields(cb) -> tuple[str, ...]:
    return next((f for klass, f in CALLBACK_FIELDS.items() if isinstance(cb, klass)), ())


class RunCheckpoint(keras.callbacks.Callback):
    """After each epoch: best weights (by `monitor`, max) and a full backup + state for --resume."""

    def __init__(self, run_dir, watched: list, monitor: str = "val_accuracy", best_name="best.weights.h5",
                 resume_state: dict | None = None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.backup_dir = self.run_dir / "backup"
        self.watched = watched
        self.monitor = monitor
        self.best_path = self.run_dir / best_name
        self.resume_state = resume_state or {}
        self.best = self.resume_state.get("best")
        self.earlier_seconds = float(self.resume_state.get("train_seconds", 0.0))   # the processes before this one

    def train_seconds(self) -> float:
        """Training time of the whole run so far: every earlier process's (up to its last saved epoch) and this
        one's since fit began."""
        return self.earlier_seconds + time.perf_counter() - self.start

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        # after EarlyStopping/ReduceLROnPlateau reset themselves in their own on_train_begin
        for cb in self.watched:
            for name, value in self.resume_state.get("callbacks", {}).get(type(cb).__name__, {}).items():
                setattr(cb, name, value)

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            return          # NaN weights (NaNGuard stops the run): keep the last good state, if any
        value = epoch + 1 if self.monitor == "last" else (logs or {}).get(self.monitor)     # last: always newest
        if value is not None and np.isfinite(value) and (self.best is None or value > self.best):
            self.best = float(value)
            save_weights_atomic(self.model, self.best_path)
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        weights = self.backup_dir / f"epoch-{epoch + 1:04d}.weights.h5"
        save_weights_atomic(self.model, weights)
        state = {"epoch": epoch + 1, "weights": weights.name, "best": self.best,
                 "callbacks": {type(cb).__name__: {f: _plain(getattr(cb, f, None)) for f in _fields(cb)}
                               for cb in self.watched},
                 "rng": [[v.path, np.asarray(v).tolist()] for v in rng_variables(self.model)],
                 "train_seconds": round(self.train_seconds(), 1)}
        write_json(self.backup_dir / STATE, state)
        for old in self.backup_dir.glob("epoch-*.weights.h5"):
            if old.name != weights.name:
                old.unlink(missing_ok=True)


def read_resume_state(run_dir) -> dict | None:
    path = Path(run_dir) / "backup" / STATE
    return read_json(path) if path.exists() else None


def restore(model: keras.Model, run_dir, state: dict) -> int:
    """Load the backed-up weights and optimizer state; returns the epoch to continue from."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(Path(run_dir) / "backup" / state["weights"])
    variables = rng_variables(model)
    saved = state.get("rng", [])
    # same graph -> same order (names can differ by Keras' auto-numbering in another process)
    if len(saved) == len(variables):
        for v, (_, value) in zip(variables, state["rng"]):
            v.assign(np.asarray(value, dtype=v.dtype))
    return int(state["epoch"])


def truncate_history(path, epoch: int) -> None:
    """Drop history rows of epochs >= `epoch` (logged after the last backup, before a kill)."""
    path = Path(path)
    if not path.exists():
        return
    h = pd.read_csv(path)
    if "epoch" in h and (h["epoch"] >= epoch).any():
        atomic_write_bytes(path, h[h["epoch"] < epoch].to_csv(index=False).encode())
