"""Training configuration: one dataclass, its command-line parser and its JSON form (docs/method.md §9)."""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from dermo.errors import DermoError


CLASS_WEIGHTS = ("none", "balanced")
CAM_STRIDES = (32, 16)                    # the CAM grid: the backbone's last map, or a stride-16 one
OUTSIDE_FORMS = ("contrast", "positive", "logit", "swap")  # CAM shares (dermo.losses.outside), occlusion
RECOMMENDED_LAMBDA_OUTSIDE = 1.0          # λ4 when the outside term is switched on (ablation row +outside)
JIT_CHOICES = ("auto", "on", "off")
MONITORS = ("val_accuracy", "val_balanced_accuracy", "val_kappa", "val_auc")


class ConfigError(DermoError, ValueError):
    """An option value that cannot train; one line naming the option and the valid range."""


@dataclass
class TrainConfig:
    data: str | None = None
    task: str = "auto"
    label_column: str = "label"
    backbone: str = "B0"
    image_size: int = 299
    batch_size: int = 16
    epochs: int = 50
    weights: str = "imagenet"
    lambda_center: float = 1.0
    lambda_cskl: float = 0.1
    lambda_mask: float = 0.5
    lambda_outside: float = 0.0           # λ4, beyond the deck: class evidence outside the lesion (0 = off)
    outside_form: str = "logit"
    cam_stride: int = 32                  # 16: CAMs and CAM losses on a stride-16 feature map
    cskl: str = "penalized"
    lambda_a: float = 0.1
    cam_temperature: float = 1.0
    focal_gamma: float = 2.0
    center_momentum: float = 0.5
    dropout: float = 0.2
    head: str = "classification"          # "segmentation" adds a lesion-mask decoder
    lambda_seg: float = 1.0
    bn_momentum: float | None = None      # None: 0.9 when training from scratch, else the backbone's
    bn_recalibration_batches: int = 8     # precise-BN batches before each validation (0: off)
    class_weight: str = "none"            # "balanced": L_cls weighted n/(K·n_k) in training
    monitor: str = "val_accuracy"         # early stopping and the best checkpoint (max)
    learning_rate: float = 1.0
    early_stopping_patience: int = 10
    lr_patience: int = 2
    val_fraction: float = 0.2
    group_column: str | None = None       # CSV column of lesion/patient ids: no group on both sides
    allow_duplicates: bool = False        # accept exact duplicate images across train and val
    meta_columns: str | None = None       # "age_approx,sex": CSV metadata columns fused into the classifier
    meta_encoding: dict | None = None     # their encoding fitted on the train split (written by training)
    seed: int = 0
    out: str | None = None
    resume: bool = False
    on_bad_image: str = "error"
    workers: int = 2
    strategy: str = "auto"
    mixed_precision: bool = False
    jit_compile: str = "auto"             # XLA train/test step: auto = on with a GPU or JAX, off for TF on CPU
    hair_removal: bool = True
    color_constancy: bool = True
    cache_dir: str | None = None
    deterministic: bool = True
    demo: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def run_dir(self) -> Path:
        return Path(self.out or "runs/train")


def add_train_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = TrainConfig()
    p.add_argument("--data", help="dataset folder (train/val/<class>/...) or CSV manifest")
    p.add_argument("--task", choices=["binary", "multiclass", "auto"], default=d.task)
    p.add_argument("--label-column", default=d.label_column, help="CSV column holding the class name")
    p.add_argument("--backbone", default=d.backbone, help="EfficientNet B0 … B7")
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--weights", default=d.weights, help="imagenet | noisy-student | none | FILE.h5")
    p.add_argument("--lambda-center", type=float, default=d.lambda_center)
    p.add_argument("--lambda-cskl", type=float, default=d.lambda_cskl)
    p.add_argument("--lambda-mask", type=float, default=d.lambda_mask)
    p.add_argument("--lambda-outside", type=float, default=d.lambda_outside,
                   help="weight of the outside-evidence term (beyond the deck; 0 = off)")
    p.add_argument("--outside-form", choices=OUTSIDE_FORMS, default=d.outside_form,
                   help="what the outside term counts: CAM evidence outside the mask, |CAM_k − mean CAM| "
                        "(contrast) or relu(CAM_k) (positive), or the logit change when the outside is occluded "
                        "(logit), or the loss and logit change with the outside of another image of the batch "
                        "(swap); logit and swap run a second forward pass per step")
    p.add_argument("--cam-stride", type=int, choices=CAM_STRIDES, default=d.cam_stride,
                   help="16: compute the CAMs (and the CAM losses) on a stride-16 feature map")
    p.add_argument("--cskl", choices=["penalized", "original", "off"], default=d.cskl)
    p.add_argument("--lambda-a", type=float, default=d.lambda_a, help="penalty of the penalised CSKL")
    p.add_argument("--cam-temperature", type=float, default=d.cam_temperature)
    p.add_argument("--focal-gamma", type=float, default=d.focal_gamma)
    p.add_argument("--center-momentum", type=float, default=d.center_momentum)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--head", choices=["classification", "segmentation"], default=d.head,
                   help="segmentation: add a light decoder predicting the lesion mask (BCE + Dice)")
    p.add_argument("--lambda-seg", type=float, default=d.lambda_seg, help="weight of the segmentation loss")
    p.add_argument("--bn-momentum", type=float, default=None,
                   help="BatchNorm moving-average momentum (default: 0.9 from scratch, else the backbone's)")
    p.add_argument("--bn-recalibration-batches", type=int, default=d.bn_recalibration_batches,
                   help="re-estimate BatchNorm statistics on N training batches before each validation "
                        "(0 = off)")
    p.add_argument("--class-weight", choices=CLASS_WEIGHTS, default=d.class_weight,
                   help="balanced: weight the classification loss by n/(K·n_k) (imbalanced classes)")
    p.add_argument("--monitor", choices=MONITORS, default=d.monitor,
                   help="validation number (whole val set, each epoch) for early stopping and the best "
                        "checkpoint")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--early-stopping-patience", type=int, default=d.early_stopping_patience)
    p.add_argument("--lr-patience", type=int, default=d.lr_patience)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="validation share when the data has no split")
    p.add_argument("--group-column",
                   help="CSV column of lesion or patient ids: a stratified group split (no group in both "
                        "train and val); with a split column, refuse groups on both sides")
    p.add_argument("--allow-duplicates", action="store_true",
                   help="accept validation images that are exact copies of training images")
    p.add_argument("--meta-columns",
                   help="comma-separated CSV columns of patient metadata (e.g. age_approx,sex[,site]) fed to the "
                        "classifier beside the image features: numbers standardised, categories one-hot, each "
                        "with a missing indicator; encoding fitted on the train split")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", help="run folder (default runs/<task>-<backbone>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--on-bad-image", choices=["error", "skip"], default=d.on_bad_image)
    p.add_argument("--workers", type=int, default=d.workers,
                   help="image decoding/augmentation processes (1: in the training process)")
    p.add_argument("--strategy", choices=["auto", "mirrored", "multiworker"], default=d.strategy)
    p.add_argument("--mixed-precision", action="store_true",
                   help="16-bit compute (GPU): float16 with loss scaling (TensorFlow), bfloat16 (JAX)")
    p.add_argument("--jit-compile", choices=JIT_CHOICES, default=d.jit_compile,
                   help="XLA-compile the train/test step (auto: on with a GPU; on a CPU off under TensorFlow, "
                        "on under JAX)")
    p.add_argument("--no-hair-removal", dest="hair_removal", action="store_false")
    p.add_argument("--no-color-constancy", dest="color_constancy", action="store_false")
    p.add_argument("--cache-dir", help="preprocessing cache (default $DERMO_CACHE or ~/.cache/dermo)")
    p.add_argument("--no-deterministic", dest="deterministic", action="store_false",
                   help="allow non-deterministic (faster) TF ops")
    return p


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Refuse option values that cannot train (before any file is written); returns cfg."""
    lambdas = {"--lambda-center": cfg.lambda_center, "--lambda-cskl": cfg.lambda_cskl,
               "--lambda-mask": cfg.lambda_mask, "--lambda-seg": cfg.lambda_seg, "--lambda-a": cfg.lambda_a,
               "--lambda-outside": cfg.lambda_outside}
    rules = [(cfg.epochs >= 1, f"--epochs {cfg.epochs}: train for at least 1 epoch"),
             (cfg.batch_size >= 1, f"--batch-size {cfg.batch_size}: use at least 1"),
             (cfg.workers >= 1, f"--workers {cfg.workers}: use at least 1 augmentation worker"),
             (0 < cfg.val_fraction < 1, f"--val-fraction {cfg.val_fraction}: use a share between 0 and 1, "
                                        "e.g. 0.2"),
             (cfg.learning_rate > 0, f"--learning-rate {cfg.learning_rate}: must be positive"),
             (0 <= cfg.dropout < 1, f"--dropout {cfg.dropout}: use a rate in [0, 1)"),
             (cfg.cam_temperature > 0, f"--cam-temperature {cfg.cam_temperature}: must be positive"),
             (cfg.focal_gamma >= 0, f"--focal-gamma {cfg.focal_gamma}: must be 0 or more"),
             (0 <= cfg.center_momentum <= 1,
              f"--center-momentum {cfg.center_momentum}: use a value in [0, 1]"),
             (cfg.class_weight in CLASS_WEIGHTS,
              f"--class-weight {cfg.class_weight}: use one of {', '.join(CLASS_WEIGHTS)}"),
             (cfg.monitor in MONITORS, f"--monitor {cfg.monitor}: use one of {', '.join(MONITORS)}"),
             (cfg.cam_stride in CAM_STRIDES, f"--cam-stride {cfg.cam_stride}: use 32 or 16"),
             (cfg.outside_form in OUTSIDE_FORMS,
              f"--outside-form {cfg.outside_form}: use one of {', '.join(OUTSIDE_FORMS)}"),
             (cfg.jit_compile in JIT_CHOICES, f"--jit-compile {cfg.jit_compile}: use one of {', '.join(JIT_CHOICES)}")]
    rules += [(v >= 0, f"{name} {v}: loss weights must be 0 (off) or more") for name, v in lambdas.items()]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)
    if cfg.group_column and cfg.data and Path(cfg.data).is_dir():
        from dermo.data.datasets import group_column_needs_csv

        raise group_column_needs_csv(cfg.group_column, cfg.data)
    names = meta_column_list(cfg.meta_columns)
    if cfg.meta_columns is not None and (not names or len(set(names)) != len(names)):
        raise ConfigError(f"--meta-columns {cfg.meta_columns!r}: give distinct CSV column names separated by "
                          "commas, e.g. age_approx,sex")
    if names and cfg.strategy == "multiworker":
        raise ConfigError(f"--meta-columns {cfg.meta_columns}: metadata models train on one machine (--strategy "
                          "auto or mirrored); the multi-worker input pipeline feeds images only")
    if names and cfg.data and Path(cfg.data).is_dir():
        from dermo.data.datasets import meta_needs_csv

        raise meta_needs_csv(names, cfg.data)
    return cfg


def meta_column_list(text: str | None) -> list[str]:
    """--meta-columns "age_approx, sex" -> ["age_approx", "sex"] ([] when not given)."""
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig.from_dict(vars(args))
