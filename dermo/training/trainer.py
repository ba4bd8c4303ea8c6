"""One training run: data -> preprocessing cache -> CAMModel.fit -> run folder (docs/method.md §6, §8)."""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from dermo import __version__
from dermo.data.datasets import Dataset, load_dataset
from dermo.data.metadata import MetaEncoding, fit_encoding
from dermo.data.duplicates import check_duplicates
from dermo.errors import DermoError
from dermo.model.backbones import check_image_size, check_weights, get_backbone
from dermo.model.cam_model import CAMModel
from dermo.model.names import CAM_FEATURE_LAYERS
from dermo.model.network import inference_model, segmentation_model
from dermo.pipeline.batches import LesionBatches
from dermo.pipeline.prepare import prepare, settings_for
from dermo.run import folder as runs
from dermo.run.config import TrainConfig, check_config, meta_column_list
from dermo.run.splits import record_split
from dermo.training.callbacks import CenterRefresh, NaNGuard, PreciseBatchNorm, ValidationMetrics
from dermo.training.checkpoint import RunCheckpoint, read_resume_state, restore, truncate_history
from dermo.training.devices import backend_devices, device_lines, resolve_jit
from dermo.training.setup import (balanced_class_weights, build_model, compile_model, initial_centers,
                                  make_strategy, precision_policy, set_seeds)
from dermo.training.workers import (SINGLE, Worker, check_batch_size, distributed_batches,
                                    keras_multiworker_fixes, plain_batchnorm, synchronise_batchnorm, this_worker)


class TrainingError(DermoError, RuntimeError):
    """Training could not go on; one line saying why and what to do."""


def make_callbacks(cfg: TrainConfig, run_dir: Path, val_batches, calibration_batches, num_classes: int,
                   resume_state: dict | None = None) -> list:
    # the best weights come back from best.weights.h5 after fit (train_model), also in a resumed process, where
    # Keras' own restore_best_weights would only know the epochs since the resume
    early = keras.callbacks.EarlyStopping(monitor=cfg.monitor, patience=cfg.early_stopping_patience,
                                          mode="max", restore_best_weights=False, verbose=1)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=cfg.lr_patience,
                                                min_lr=1e-4, verbose=1)
    return [
        CenterRefresh(),
        NaNGuard(),
        PreciseBatchNorm(calibration_batches, cfg.bn_recalibration_batches),
        ValidationMetrics(val_batches, num_classes),      # before every callback that reads its numbers
        plateau,            # before the log: it adds the epoch's learning_rate (then maybe lowers it for the next)
        keras.callbacks.CSVLogger(str(run_dir / runs.HISTORY), append=resume_state is not None),
        early,
        # last: restores the two above after their own on_train_begin reset; saves after they updated
        RunCheckpoint(run_dir, [early, plateau], monitor=cfg.monitor, best_name=runs.BEST_WEIGHTS,
                      resume_state=resume_state),
    ]


def check_setup(cfg: TrainConfig) -> None:
    """Options, backbone, image size and weights file: refused before anything is written or preprocessed."""
    check_config(cfg)
    if cfg.strategy != "auto" and keras.backend.backend() != "tensorflow":
        raise TrainingError(f"--strategy {cfg.strategy} needs the TensorFlow backend; under "
                            f"KERAS_BACKEND={keras.backend.backend()} train on one device (--strategy auto)")
    check_image_size(get_backbone(cfg.backbone), cfg.image_size)
    check_weights(cfg.weights)


def prepare_run_dir(cfg: TrainConfig, worker: Worker = SINGLE) -> Path:
    """Check the run folder (--out) for a new or resumed run; returns where this process writes it: the run
    folder, or a temporary folder on the workers of a multi-worker run that are not its chief."""
    run_dir = cfg.run_dir
    if cfg.resume:
        if read_resume_state(run_dir) is None and (run_dir / runs.CONFIG).exists():
            raise TrainingError(f"{run_dir}: this run already finished (nothing to resume); evaluate it "
                                f"with evaluate.py --run {run_dir}, or train anew with another --out")
        if read_resume_state(run_dir) is None:
            raise TrainingError(f"{run_dir}: nothing to resume (no {runs.BACKUP_DIR}/ checkpoint); "
                                "start without --resume")
    elif (run_dir / runs.CONFIG).exists() or (run_dir / runs.BACKUP_DIR).exists():
        raise TrainingError(f"{run_dir}: already holds a run; pass --resume to continue it or choose "
                            "another --out")
    return worker.write_dir(run_dir)


def load_data(cfg: TrainConfig, log=print, run_dir=None) -> tuple[Dataset, list, list]:
    ds = load_dataset(cfg.data, cfg.task, cfg.label_column, cfg.seed, cfg.val_fraction, cfg.on_bad_image,
                      cfg.group_column, meta_column_list(cfg.meta_columns))
    check_classes_present(cfg, ds, log)
    duplicates = check_duplicates(ds, cfg.allow_duplicates)      # before any preprocessing
    record_split(run_dir or cfg.run_dir, ds, cfg.resume)           # split.csv, also for interrupted runs
    if duplicates:
        log(f"note: {len(duplicates)} exact duplicate image pair(s) across train and val (--allow-duplicates)")
    settings = settings_for(cfg.image_size, hair=cfg.hair_removal, color=cfg.color_constancy)
    log(f"data: {ds.source} — classes {ds.classes}, {len(ds.train)} train / {len(ds.val)} val images")
    log("preprocessing (cached; hair removal, colour constancy, lesion masks)…")
    train_items, bad_train = prepare(ds.train, settings, cfg.cache_dir, cfg.on_bad_image)
    val_items, bad_val = prepare(ds.val, settings, cfg.cache_dir, cfg.on_bad_image)
    ds.skipped += bad_train + bad_val
    if ds.skipped:
        log(f"skipped {len(ds.skipped)} bad file(s):")
        for line in ds.skipped:
            log(f"  {line}")
    if not train_items or not val_items:
        raise TrainingError(f"{cfg.data}: no usable {'training' if not train_items else 'validation'} "
                            "images left")
    return ds, train_items, val_items


EVERY_CLASS_MONITORS = ("val_auc", "val_balanced_accuracy")    # undefined or misleading without every class


def check_classes_present(cfg: TrainConfig, ds: Dataset, log=print) -> None:
    """A class without training images cannot be learnt (refused); one without validation images is said in a
    note, and refused with a monitor that needs every class (AUC is undefined, balanced accuracy ignores it)."""
    for split in ("train", "val"):
        counts = np.bincount([s.label for s in ds.split(split)], minlength=ds.num_classes)
        absent = [c for c, n in zip(ds.classes, counts) if n == 0]
        if not absent:
            continue
        what = f"{cfg.data}: the {split} split has no image of class {', '.join(absent)}"
        if split == "train":
            raise TrainingError(f"{what}; every class needs training images")
        if cfg.monitor in EVERY_CLASS_MONITORS:
            raise TrainingError(f"{what}, so --monitor {cfg.monitor} is undefined; use --monitor val_accuracy or "
                                "val_kappa, or a split with every class in val")
        log(f"note: {what}; its recall, the AUC and the balanced accuracy are not measured")


def fit_meta(cfg: TrainConfig, ds: Dataset, train_items: list, log=print) -> MetaEncoding | None:
    """The metadata encoding of --meta-columns fitted on the training images only (stored in
    cfg.meta_encoding, hence config.json); None without --meta-columns."""
    names = meta_column_list(cfg.meta_columns)
    if not names:
        return None
    enc = fit_encoding(names, [dict(it.meta or ()) for it in train_items], source=ds.source)
    cfg.meta_encoding = enc.to_dict()
    missing = {n: sum(dict(it.meta or ()).get(n) is None for it in train_items) for n in names}
    log(f"metadata: {', '.join(enc.feature_names())} ({enc.width} inputs, fitted on {len(train_items)} training "
        "images; missing: " + ", ".join(f"{n} {k}" for n, k in missing.items()) + ")")
    return enc


def train(cfg: TrainConfig, log=print) -> Path:
    """Run a whole training; returns the run folder."""
    return train_model(cfg, log)[0]


def train_model(cfg: TrainConfig, log=print) -> tuple[Path, CAMModel]:
    """Run a whole training; returns the run folder and the trained in-memory model (best weights), the very
    model whose inference graph was saved."""
    check_setup(cfg)
    worker = this_worker(cfg.strategy)                 # TF_CONFIG with --strategy multiworker
    strategy = make_strategy(cfg.strategy)             # before any other TF op (MultiWorkerMirroredStrategy)
    set_seeds(cfg.seed, cfg.deterministic)
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy(precision_policy())
    run_dir = prepare_run_dir(cfg, worker)             # where this process writes (chief: the run folder)
    try:
        return cfg.run_dir, _train(cfg, worker, strategy, run_dir, log)
    finally:
        worker.cleanup(run_dir)                         # the temporary folder of a non-chief worker


def _train(cfg: TrainConfig, worker: Worker, strategy, run_dir: Path, log) -> CAMModel:
    if not cfg.resume:
        runs.write_json(run_dir / runs.RESUME_CONFIG, _config_dict(cfg))
    ds, train_items, val_items = load_data(cfg, log, run_dir)
    meta = fit_meta(cfg, ds, train_items, log)
    runs.write_json(run_dir / runs.CLASSES, {"classes": ds.classes})
    devices = backend_devices()
    for line in device_lines(devices):
        log(line)
    jit = resolve_jit(cfg.jit_compile, devices)
    role = f", {worker.task} {worker.index} of {worker.count} worker(s)" if cfg.strategy == "multiworker" else ""
    log(f"strategy: {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s){role}; XLA "
        f"jit_compile {'on' if jit else 'off'} (--jit-compile {cfg.jit_compile})")
    class_weights = (balanced_class_weights([it.label for it in train_items], ds.num_classes)
                     if cfg.class_weight == "balanced" else None)
    if class_weights is not None:
        log("class weights: " + ", ".join(f"{c} {w:.3f}" for c, w in zip(ds.classes, class_weights)))
    with strategy.scope():
        model = build_model(cfg, ds.num_classes, class_weights, meta.width if meta else 0)
        synchronise_batchnorm(model, strategy.num_replicas_in_sync)
        compile_model(model, cfg, jit)
        if cfg.strategy == "multiworker":
            keras_multiworker_fixes(model)
    train_batches = LesionBatches(train_items, ds.num_classes, cfg.image_size, cfg.batch_size, training=True,
                                  seed=cfg.seed, workers=cfg.workers, meta=meta)
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
        train_batches.set_epoch(initial_epoch)        # the shuffle/augmentation of that epoch
        truncate_history(run_dir / runs.HISTORY, initial_epoch)
        log(f"resuming {run_dir} after epoch {initial_epoch}")
    callbacks = make_callbacks(cfg, run_dir, val_batches, plain_batches, ds.num_classes, state)
    start = time.time()
    # shuffle=False: LesionBatches shuffles itself from (seed, epoch); Keras' own batch shuffling uses
    # Python's global `random`, which a resumed process cannot replay
    fit_data, val_data, steps = train_batches, val_batches, None
    if cfg.strategy == "multiworker":                 # each replica's slice of every global batch
        check_batch_size(cfg.batch_size, strategy.num_replicas_in_sync)
        fit_data = distributed_batches(strategy, train_batches, (initial_epoch, cfg.epochs))
        val_data, steps = distributed_batches(strategy, val_batches), len(train_batches)
    model.fit(fit_data, validation_data=val_data, epochs=cfg.epochs, callbacks=callbacks, steps_per_epoch=steps,
              initial_epoch=initial_epoch, shuffle=False, verbose=1 if sys.stdout.isatty() else 2)
    guard = next(cb for cb in callbacks if isinstance(cb, NaNGuard))
    if guard.message:
        raise TrainingError(guard.message)
    if (run_dir / runs.BEST_WEIGHTS).exists():
        model.load_weights(run_dir / runs.BEST_WEIGHTS)
        history = pd.read_csv(run_dir / runs.HISTORY)
        if cfg.monitor in history and history[cfg.monitor].notna().any():
            best = history.loc[history[cfg.monitor].idxmax()]
            log(f"restored the weights of the best epoch, {int(best['epoch']) + 1} of {len(history)} "
                f"({cfg.monitor} {best[cfg.monitor]:.4f})")
    runtime = {"backend": keras.backend.backend(), "devices": devices, "jit_compile_used": jit,
               "replicas": strategy.num_replicas_in_sync, "precision": keras.mixed_precision.global_policy().name}
    finish_run(cfg, run_dir, model, ds, time.time() - start, log, class_weights, runtime)
    return model


def model_contract(cfg: TrainConfig, classes: list[str]) -> dict:
    """What a saved classifier needs to be used correctly (dermo.run.contract): classes, input size and the
    preprocessing of its training images; with metadata also its encoding ("meta", dermo.data.metadata)."""
    meta = {"meta": cfg.meta_encoding} if cfg.meta_encoding else {}
    return {**meta, "classes": list(classes), "task": cfg.task, "image_size": cfg.image_size,
            "preprocessing": {"hair": cfg.hair_removal, "color": cfg.color_constancy,
                              "p": settings_for(cfg.image_size).p,
                              "cache_size": settings_for(cfg.image_size).size},
            "input": "RGB float 0..255 (B,S,S,3) after the preprocessing; normalisation is inside the model",
            "backbone": cfg.backbone, "weights": cfg.weights if cfg.weights in ("imagenet", "noisy-student",
                                                                                   "none") else "file",
            "feature_layer": CAM_FEATURE_LAYERS[cfg.cam_stride], "dermo_version": __version__}


def finish_run(cfg: TrainConfig, run_dir: Path, model: CAMModel, ds: Dataset, seconds: float, log,
               class_weights=None, runtime: dict | None = None) -> None:
    from dermo.evaluation.plots import plot_history  # matplotlib only when a run finishes

    contract = model_contract(cfg, ds.classes)
    with plain_batchnorm(model):              # loadable under every backend, also after --strategy mirrored
        net = inference_model(model)
        runs.save_keras_atomic(net, run_dir / runs.MODEL_KERAS, contract=contract)
        runs.save_keras_atomic(net, run_dir / runs.MODEL_H5, contract=contract)
        segmenter = segmentation_model(model)
        if segmenter is not None:
            runs.save_keras_atomic(segmenter, run_dir / runs.SEG_MODEL, contract=contract)
    history = pd.read_csv(run_dir / runs.HISTORY)
    plot_history(history, run_dir / runs.CURVES)
    config = {**_config_dict(cfg), "classes": ds.classes, "num_classes": ds.num_classes,
              "data_source": ds.source, "feature_layer": contract["feature_layer"],
              "class_weights": class_weights, "preprocessing": contract["preprocessing"],
              "train_seconds": round(seconds, 1), "skipped": ds.skipped, **(runtime or {})}
    runs.write_json(run_dir / runs.CONFIG, config)
    shutil.rmtree(run_dir / runs.BACKUP_DIR, ignore_errors=True)
    best = history[cfg.monitor].max() if cfg.monitor in history else float("nan")
    log(f"done in {seconds:.0f} s: best {cfg.monitor.replace('_', ' ')} {best:.3f}. Run folder: {run_dir}/ "
        f"(curves.png, history.csv, model.keras). Evaluate: python3 evaluate.py --run {run_dir}")


def _config_dict(cfg: TrainConfig) -> dict:
    import dataclasses

    d = dataclasses.asdict(cfg)
    d["resume"] = False
    return d
