"""The end of a run: the model files with their contract, config.json, curves.png, and the closing lines
(docs/method.md §8)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermo import __version__
from dermo.data.datasets import Dataset
from dermo.metrics.classification import majority_note
from dermo.model.cam_model import CAMModel
from dermo.model.names import CAM_FEATURE_LAYERS
from dermo.model.network import inference_model, segmentation_model
from dermo.pipeline.prepare import settings_for
from dermo.run import folder as runs
from dermo.run.config import TrainConfig
from dermo.training.workers import plain_batchnorm


def model_contract(cfg: TrainConfig, classes: list[str]) -> dict:
    """What a saved classifier needs to be used correctly (dermo.run.contract): classes, input size and the
    preprocessing of its training images; with metadata also its encoding ("meta", dermo.data.metadata)."""
    meta = {"meta": cfg.meta_encoding} if cfg.meta_encoding else {}
    return {**meta, "classes": list(classes), "task": cfg.task, "image_size": cfg.image_size,
            "preprocessing": {"hair": cfg.hair_removal, "color": cfg.color_constancy, "color_region": cfg.color_region,
                              "mask_grow": cfg.mask_grow,
                              "p": settings_for(cfg.image_size).p,
                              "cache_size": settings_for(cfg.image_size).size},
            "input": "RGB float 0..255 (B,S,S,3) after the preprocessing; normalisation is inside the model",
            "backbone": cfg.backbone, "weights": cfg.weights if cfg.weights in ("imagenet", "noisy-student",
                                                                                   "none") else "file",
            "feature_layer": CAM_FEATURE_LAYERS[cfg.cam_stride], "dermo_version": __version__}


def val_note(validation, classes: list[str]) -> str | None:
    """The one-class warning (dermo.metrics.classification.majority_note) for the saved model on the val split;
    `validation`: the run's ValidationMetrics (its traced prediction of the whole val set)."""
    return majority_note(*validation.predict(), classes)


def finish_run(cfg: TrainConfig, run_dir: Path, model: CAMModel, ds: Dataset, seconds: dict, log,
               class_weights=None, runtime: dict | None = None, validation=None) -> None:
    """Save the model files, curves.png and config.json; `seconds`: {"train": fit (over every process of a
    resumed run), "wall": this process, "resumed": bool}.
    backup/ (the last epoch's full state) stays, so `--resume --epochs N` can train the run for longer."""
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
    config = {**config_dict(cfg), "classes": ds.classes, "num_classes": ds.num_classes,
              "data_source": ds.source, "feature_layer": contract["feature_layer"],
              "class_weights": class_weights, "preprocessing": contract["preprocessing"],
              "train_seconds": round(seconds["train"], 1), "wall_seconds": round(seconds["wall"], 1),
              "skipped": ds.skipped, **(runtime or {})}
    runs.write_json(run_dir / runs.CONFIG, config)
    note = val_note(validation, ds.classes) if validation is not None else None
    if note:
        log(note)
    if cfg.monitor == "last":
        figure = f"last epoch's val accuracy {history['val_accuracy'].iloc[-1]:.3f}"
    else:
        best = history[cfg.monitor].max() if cfg.monitor in history else float("nan")
        figure = f"best {cfg.monitor.replace('_', ' ')} {best:.3f}"
    trained = f"{seconds['train']:.0f} s of training" + (" over all its processes" if seconds.get("resumed") else "")
    log(f"done in {seconds['wall']:.0f} s ({trained}): {figure}. Run folder: {run_dir}/ (curves.png, history.csv, "
        f"model.keras). Evaluate: dermo evaluate --run {run_dir}")


def config_dict(cfg: TrainConfig) -> dict:
    import dataclasses

    d = dataclasses.asdict(cfg)
    d["resume"] = False
    return d
