"""One training run: data -> preprocessing cache -> CAMModel.fit -> run folder (docs/method.md §6, §8)."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from dermo.model.backbones import check_image_size, check_weights, download_imagenet, get_backbone
from dermo.model.cam_model import CAMModel
from dermo.pipeline.batches import LesionBatches
from dermo.run import folder as runs
from dermo.run.config import LAST_EPOCH, TrainConfig, check_config
from dermo.training.callbacks import (CenterRefresh, EpochLog, LearningRateLog, NaNGuard, PreciseBatchNorm,
                                      ValidationMetrics)
from dermo.training.checkpoint import RunCheckpoint, read_resume_state, restore, truncate_history
from dermo.training.devices import backend_devices, device_lines, resolve_jit
from dermo.training.setup import (balanced_class_weights, build_model, compile_model, initial_centers,
                                  make_strategy, precision_policy, set_seeds)
from dermo.training.finish import config_dict, finish_run
from dermo.training.inputs import TrainingError, fit_meta, load_data
from dermo.training.workers import (SINGLE, Worker, check_batch_size, distributed_batches,
                                    keras_multiworker_fixes, synchronise_batchnorm, this_worker)

__all__ = ["TrainingError", "make_callbacks", "train", "train_model"]


def make_callbacks(cfg: TrainConfig, run_dir: Path, val_batches, calibration_batches, num_classes: int,
                   resume_state: dict | None = None, steps: int = 0, log=print) -> list:
    # the best weights come back from best.weights.h5 after fit (train_model), also in a resumed process, where
    # Keras' own restore_best_weights would only know the epochs since the resume
    early = None if cfg.monitor == LAST_EPOCH else keras.callbacks.EarlyStopping(
        monitor=cfg.monitor, patience=cfg.early_stopping_patience, mode="max", restore_best_weights=False, verbose=0)
    # plateau: ReduceLROnPlateau logs the epoch's rate (then maybe lowers it for the next); cosine: the schedule
    # sets the rate every step and LearningRateLog logs it
    rate = (keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=cfg.lr_patience,
                                              min_lr=1e-4, verbose=0)
            if cfg.lr_schedule == "plateau" else LearningRateLog())
    watched = [cb for cb in (early, rate if cfg.lr_schedule == "plateau" else None) if cb is not None]
    callbacks = [
        CenterRefresh(),
        NaNGuard(),
        PreciseBatchNorm(calibration_batches, cfg.bn_recalibration_batches),
        ValidationMetrics(val_batches, num_classes),      # before every callback that reads its numbers
        rate,               # before the log: the epoch line and history.csv show the rate
        keras.callbacks.CSVLogger(str(run_dir / runs.HISTORY), append=resume_state is not None),
        early,
        # last: restores the ones it watches after their own on_train_begin reset; saves after they updated
        RunCheckpoint(run_dir, watched, monitor=cfg.monitor, best_name=runs.BEST_WEIGHTS, resume_state=resume_state),
        EpochLog(cfg.epochs, steps, active_terms(cfg), early, log),
    ]
    return [cb for cb in callbacks if cb is not None]


def active_terms(cfg: TrainConfig) -> list[str]:
    """The loss terms of the epoch line: L_cls and each term whose λ is on."""
    on = {"center_loss": cfg.lambda_center, "cskl_loss": cfg.lambda_cskl if cfg.cskl != "off" else 0,
          "mask_loss": cfg.lambda_mask, "outside_loss": cfg.lambda_outside, "rrr_loss": cfg.lambda_rrr,
          "seg_loss": cfg.lambda_seg if cfg.head == "segmentation" else 0}
    return ["cls_loss"] + [name for name, weight in on.items() if weight]


def check_setup(cfg: TrainConfig) -> None:
    """Options, backbone, image size and weights file: refused before anything is written or preprocessed."""
    check_config(cfg)
    if cfg.strategy != "auto" and keras.backend.backend() != "tensorflow":
        raise TrainingError(f"--strategy {cfg.strategy} needs the TensorFlow backend; under "
                            f"KERAS_BACKEND={keras.backend.backend()} train on one device (--strategy auto)")
    spec = get_backbone(cfg.backbone)
    check_image_size(spec, cfg.image_size)
    if check_weights(cfg.weights, spec) == "imagenet" and spec.lite is None:
        download_imagenet(spec)            # now, not after every image is preprocessed: offline is one line at once


def prepare_run_dir(cfg: TrainConfig, worker: Worker = SINGLE) -> Path:
    """Check the run folder (--out) for a new or resumed run; returns where this process writes it: the run
    folder, or a temporary folder on the workers of a multi-worker run that are not its chief. A finished run
    resumes only to train longer (more --epochs, or more patience after an early stop)."""
    run_dir = cfg.run_dir
    if cfg.resume:
        state = read_resume_state(run_dir)
        finished = (run_dir / runs.CONFIG).exists()
        if state is None and finished:
            raise TrainingError(f"{run_dir}: this run finished without keeping its last state ({runs.BACKUP_DIR}/), "
                                f"so it cannot go on; evaluate it with dermo evaluate --run {run_dir}, or train "
                                "anew with another --out")
        if state is None:
            raise TrainingError(f"{run_dir}: nothing to resume (no {runs.BACKUP_DIR}/ checkpoint); "
                                "start without --resume")
        stopped = state.get("callbacks", {}).get("EarlyStopping", {}).get("stopped_epoch") or 0
        saved = runs.read_json(run_dir / runs.CONFIG) if finished else {}
        longer = state["epoch"] < cfg.epochs and (not stopped or cfg.early_stopping_patience >
                                                  saved.get("early_stopping_patience", cfg.early_stopping_patience))
        if finished and not longer:
            why = (f"it stopped early after epoch {stopped + 1}; pass a larger --early-stopping-patience" if stopped
                   else f"it trained all {state['epoch']} epochs; pass --epochs N with N > {state['epoch']}")
            raise TrainingError(f"{run_dir}: this run already finished ({why}) to train it longer, or evaluate it "
                                f"with dermo evaluate --run {run_dir}")
    elif (run_dir / runs.CONFIG).exists() or (run_dir / runs.BACKUP_DIR).exists():
        raise TrainingError(f"{run_dir}: already holds a run; pass --resume to continue it or choose "
                            "another --out")
    return worker.write_dir(run_dir)


def train(cfg: TrainConfig, log=print, started: float | None = None) -> Path:
    """Run a whole training; returns the run folder. `started`: when the command started (time.time()), so the
    closing line counts the imports too."""
    return train_model(cfg, log, started)[0]


def train_model(cfg: TrainConfig, log=print, started: float | None = None) -> tuple[Path, CAMModel]:
    """Run a whole training; returns the run folder and the trained in-memory model (best weights), the very
    model whose inference graph was saved."""
    started = started or time.time()
    check_setup(cfg)
    worker = this_worker(cfg.strategy)                 # TF_CONFIG with --strategy multiworker
    strategy = make_strategy(cfg.strategy)             # before any other TF op (MultiWorkerMirroredStrategy)
    set_seeds(cfg.seed, cfg.deterministic)
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy(precision_policy())
    run_dir = prepare_run_dir(cfg, worker)             # where this process writes (chief: the run folder)
    try:
        return cfg.run_dir, _train(cfg, worker, strategy, run_dir, log, started)
    finally:
        worker.cleanup(run_dir)                         # the temporary folder of a non-chief worker


def _train(cfg: TrainConfig, worker: Worker, strategy, run_dir: Path, log, started: float) -> CAMModel:
    if not cfg.resume:
        runs.write_json(run_dir / runs.RESUME_CONFIG, config_dict(cfg))
    ds, train_items, val_items = load_data(cfg, log, run_dir)
    meta = fit_meta(cfg, ds, train_items, log)
    runs.write_json(run_dir / runs.CLASSES, {"classes": ds.classes})
    devices = backend_devices()
    jit = resolve_jit(cfg.jit_compile, devices)
    lines = device_lines(devices)
    replicas = strategy.num_replicas_in_sync
    role = f", {worker.task} {worker.index} of {worker.count} workers" if cfg.strategy == "multiworker" else ""
    lines[0] += (f"; {type(strategy).__name__} over {replicas} replicas{role}" if replicas > 1 or role else "") + \
        f"; XLA {'on' if jit else 'off'}"
    for line in lines:
        log(line)
    class_weights = (balanced_class_weights([it.label for it in train_items], ds.num_classes)
                     if cfg.class_weight == "balanced" else None)
    if class_weights is not None:
        log("class weights: " + ", ".join(f"{c} {w:.3f}" for c, w in zip(ds.classes, class_weights)))
    train_batches = LesionBatches(train_items, ds.num_classes, cfg.image_size, cfg.batch_size, training=True,
                                  seed=cfg.seed, workers=cfg.workers, meta=meta, paste_share=cfg.paste_share)
    with strategy.scope():
        model = build_model(cfg, ds.num_classes, class_weights, meta.width if meta else 0)
        synchronise_batchnorm(model, strategy.num_replicas_in_sync)
        compile_model(model, cfg, jit, steps_per_epoch=len(train_batches))
        if cfg.strategy == "multiworker":
            keras_multiworker_fixes(model)
    val_batches = LesionBatches(val_items, ds.num_classes, cfg.image_size, cfg.batch_size,
                                workers=cfg.workers, meta=meta)
    # un-augmented training images in a fixed shuffled order: centre init and BatchNorm re-estimation
    order = np.random.default_rng(cfg.seed).permutation(len(train_items))
    plain_batches = LesionBatches([train_items[i] for i in order], ds.num_classes, cfg.image_size,
                                  cfg.batch_size, meta=meta)
    state = read_resume_state(cfg.run_dir) if cfg.resume else None      # the chief's folder, on every worker
    if state is None:
        model.set_centers(initial_centers(model, plain_batches))
        initial_epoch = 0
    else:
        initial_epoch = restore(model, cfg.run_dir, state)
        if run_dir != cfg.run_dir and (cfg.run_dir / runs.BEST_WEIGHTS).exists():
            # a non-chief worker's own copy: the best epoch may predate this process (read before any epoch ends)
            shutil.copyfile(cfg.run_dir / runs.BEST_WEIGHTS, run_dir / runs.BEST_WEIGHTS)
        train_batches.set_epoch(initial_epoch)        # the shuffle/augmentation of that epoch
        truncate_history(run_dir / runs.HISTORY, initial_epoch)
        log(f"resuming {cfg.run_dir} after epoch {initial_epoch}")
    callbacks = make_callbacks(cfg, run_dir, val_batches, plain_batches, ds.num_classes, state, len(train_batches),
                               log)
    # shuffle=False: LesionBatches shuffles itself from (seed, epoch); Keras' own batch shuffling uses
    # Python's global `random`, which a resumed process cannot replay
    fit_data, val_data, steps = train_batches, val_batches, None
    if cfg.strategy == "multiworker":                 # each replica's slice of every global batch
        check_batch_size(cfg.batch_size, strategy.num_replicas_in_sync)
        fit_data = distributed_batches(strategy, train_batches, (initial_epoch, cfg.epochs))
        val_data, steps = distributed_batches(strategy, val_batches), len(train_batches)
    model.fit(fit_data, validation_data=val_data, epochs=cfg.epochs, callbacks=callbacks, steps_per_epoch=steps,
              initial_epoch=initial_epoch, shuffle=False, verbose=0)           # EpochLog says each epoch
    guard = next(cb for cb in callbacks if isinstance(cb, NaNGuard))
    if guard.message:
        raise TrainingError(guard.message)
    if (run_dir / runs.BEST_WEIGHTS).exists():
        model.load_weights(run_dir / runs.BEST_WEIGHTS)
        history = pd.read_csv(run_dir / runs.HISTORY)
        if cfg.monitor == LAST_EPOCH:
            log(f"kept the last epoch, {len(history)} (--monitor last: no choice made on the val images)")
        elif cfg.monitor in history and history[cfg.monitor].notna().any():
            best = history.loc[history[cfg.monitor].idxmax()]
            log(f"restored the weights of the best epoch, {int(best['epoch']) + 1} of {len(history)} "
                f"({cfg.monitor} {best[cfg.monitor]:.4f})")
    runtime = {"backend": keras.backend.backend(), "devices": devices, "jit_compile_used": jit,
               "replicas": strategy.num_replicas_in_sync, "precision": keras.mixed_precision.global_policy().name}
    checkpoint = next(cb for cb in callbacks if isinstance(cb, RunCheckpoint))
    # train: the whole run's fit time, every earlier process of a resumed run included; wall: this process
    seconds = {"train": checkpoint.train_seconds(), "wall": time.time() - started, "resumed": state is not None}
    validation = next(cb for cb in callbacks if isinstance(cb, ValidationMetrics))
    finish_run(cfg, run_dir, model, ds, seconds, log, class_weights, runtime, validation)
    return model
