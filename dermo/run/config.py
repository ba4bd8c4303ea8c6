"""Training configuration: one dataclass, its command-line parser and its JSON form (docs/method.md §9)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from dermo.errors import DermoError


CLASS_WEIGHTS = ("none", "balanced")
CAM_STRIDES = (32, 16)                    # the CAM grid: the backbone's last map, or a stride-16 one
OUTSIDE_FORMS = ("contrast", "positive", "logit", "swap")  # CAM shares (dermo.losses.outside), occlusion
RECOMMENDED_LAMBDA_OUTSIDE = 1.0          # λ4 when the outside term is switched on (ablation row +outside)
RECOMMENDED_PASTE_SHARE = 0.5            # --paste-share of the ablation rows `paste`, `+stride16+paste`
RECOMMENDED_LAMBDA_RRR = 1e-3             # λ_rrr of the ablation row `rrr`: λ·L_rrr ≈ 1.1–1.6 ≈ 2·L_cls at the start
                                          # (B0 from scratch, 128 px shortcut images; Ross et al.'s rule, method.md §5)
JIT_CHOICES = ("auto", "on", "off")
COLOR_REGIONS = ("fov", "skin")           # = dermo.preprocessing.color.REGIONS (tests/test_lesion.py checks)
LEGACY_MASK_GROW = 0.03                   # the generated masks' margin before --mask-grow existed
OPTIMIZERS = ("adadelta", "adam", "adamw")
DEFAULT_LEARNING_RATES = {"adadelta": 1.0, "adam": 1e-3, "adamw": 1e-3}
LR_SCHEDULES = ("plateau", "cosine")
MONITORS = ("val_accuracy", "val_balanced_accuracy", "val_kappa", "val_auc", "val_counterfactual_accuracy",
            "val_worst_accuracy", "last")
LAST_EPOCH = "last"                       # --monitor last: keep the last epoch, choose nothing on the val images


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
    lambda_rrr: float = 0.0               # RRR (Ross et al. 2017): input gradients outside the lesion (0 = off)
    paste_share: float = 0.0              # share of each training batch put on other images' surroundings (0 = off)
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
    optimizer: str = "adadelta"            # the deck's; adam / adamw (weight decay 1e-4) to compare
    learning_rate: float | None = None     # None: the optimizer's default (DEFAULT_LEARNING_RATES)
    lr_schedule: str = "plateau"           # the deck's ReduceLROnPlateau, or cosine decay (after a warm-up)
    warmup_epochs: int = 0                 # cosine: linear warm-up from 0 over these epochs
    early_stopping_patience: int = 10
    lr_patience: int = 2
    val_fraction: float = 0.2
    group_column: str | None = None       # CSV column of lesion/patient ids: no group on both sides
    allow_duplicates: bool = False        # accept exact duplicate images across train and val
    meta_columns: str | None = None       # "age_approx,sex": CSV metadata columns fused into the classifier
    meta_encoding: dict | None = None     # their encoding fitted on the train split (written by training)
    color_region: str = "fov"             # Shades of Gray's illuminant over the field of view or the skin only
    mask_grow: float = 0.015              # generated lesion masks' margin (= dermo.preprocessing.segment.GROW)
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
    demo: str | bool = False              # --demo: "synthetic" or "real"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        if "image_size" in d and "mask_grow" not in d:       # a run saved before --mask-grow: made with 0.03
            values["mask_grow"] = LEGACY_MASK_GROW
        return cls(**values)

    @property
    def run_dir(self) -> Path:
        return Path(self.out or "runs/train")


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Refuse option values that cannot train (before any file is written); returns cfg."""
    lambdas = {"--lambda-center": cfg.lambda_center, "--lambda-cskl": cfg.lambda_cskl,
               "--lambda-mask": cfg.lambda_mask, "--lambda-seg": cfg.lambda_seg, "--lambda-a": cfg.lambda_a,
               "--lambda-outside": cfg.lambda_outside, "--lambda-rrr": cfg.lambda_rrr}
    rules = [(cfg.epochs >= 1, f"--epochs {cfg.epochs}: train for at least 1 epoch"),
             (cfg.batch_size >= 1, f"--batch-size {cfg.batch_size}: use at least 1"),
             (cfg.workers >= 1, f"--workers {cfg.workers}: use at least 1 augmentation worker"),
             (0 < cfg.val_fraction < 1, f"--val-fraction {cfg.val_fraction}: use a share between 0 and 1, "
                                        "e.g. 0.2"),
             (cfg.learning_rate is None or cfg.learning_rate > 0,
              f"--learning-rate {cfg.learning_rate}: must be positive"),
             (cfg.optimizer in OPTIMIZERS, f"--optimizer {cfg.optimizer}: use one of {', '.join(OPTIMIZERS)}"),
             (cfg.lr_schedule in LR_SCHEDULES,
              f"--lr-schedule {cfg.lr_schedule}: use one of {', '.join(LR_SCHEDULES)}"),
             (0 <= cfg.warmup_epochs < cfg.epochs or (cfg.warmup_epochs == 0),
              f"--warmup-epochs {cfg.warmup_epochs}: use 0 or more, fewer than --epochs {cfg.epochs}"),
             (cfg.warmup_epochs == 0 or cfg.lr_schedule == "cosine",
              f"--warmup-epochs {cfg.warmup_epochs} needs --lr-schedule cosine (plateau starts at the full rate)"),
             (0 <= cfg.dropout < 1, f"--dropout {cfg.dropout}: use a rate in [0, 1)"),
             (cfg.cam_temperature > 0, f"--cam-temperature {cfg.cam_temperature}: must be positive"),
             (cfg.focal_gamma >= 0, f"--focal-gamma {cfg.focal_gamma}: must be 0 or more"),
             (0 <= cfg.center_momentum <= 1,
              f"--center-momentum {cfg.center_momentum}: use a value in [0, 1]"),
             (cfg.class_weight in CLASS_WEIGHTS,
              f"--class-weight {cfg.class_weight}: use one of {', '.join(CLASS_WEIGHTS)}"),
             (cfg.monitor in MONITORS, f"--monitor {cfg.monitor}: use one of {', '.join(MONITORS)}"),
             (cfg.cam_stride in CAM_STRIDES, f"--cam-stride {cfg.cam_stride}: use 32 or 16"),
             (0 <= cfg.paste_share <= 1, f"--paste-share {cfg.paste_share}: use a share in [0, 1], e.g. 0.5"),
             (0 <= cfg.mask_grow < 0.5, f"--mask-grow {cfg.mask_grow}: use a fraction in [0, 0.5), e.g. 0.015"),
             (cfg.color_region in COLOR_REGIONS,
              f"--color-region {cfg.color_region}: use one of {', '.join(COLOR_REGIONS)}"),
             (cfg.outside_form in OUTSIDE_FORMS,
              f"--outside-form {cfg.outside_form}: use one of {', '.join(OUTSIDE_FORMS)}"),
             (not (cfg.lambda_rrr and cfg.mixed_precision),
              f"--lambda-rrr {cfg.lambda_rrr} with --mixed-precision: RRR's input gradients are not loss-scaled "
              "and would underflow in float16; train RRR in float32 (drop --mixed-precision)"),
             (cfg.jit_compile in JIT_CHOICES, f"--jit-compile {cfg.jit_compile}: use one of {', '.join(JIT_CHOICES)}")]
    rules += [(v >= 0, f"{name} {v}: loss weights must be 0 (off) or more") for name, v in lambdas.items()]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message)
    if cfg.group_column and cfg.data and Path(cfg.data).is_dir():
        from dermo.data.datasets import group_column_needs_csv

        raise group_column_needs_csv(cfg.group_column, cfg.data)
    names = checked_meta_columns(cfg.meta_columns)
    if names and cfg.strategy == "multiworker":
        raise ConfigError(f"--meta-columns {cfg.meta_columns}: metadata models train on one machine (--strategy "
                          "auto or mirrored); the multi-worker input pipeline feeds images only")
    if names and cfg.data and Path(cfg.data).is_dir():
        from dermo.data.datasets import meta_needs_csv

        raise meta_needs_csv(names, cfg.data)
    return cfg


def learning_rate(cfg: TrainConfig) -> float:
    """--learning-rate, or the optimizer's default."""
    return cfg.learning_rate if cfg.learning_rate is not None else DEFAULT_LEARNING_RATES[cfg.optimizer]


def meta_column_list(text: str | None) -> list[str]:
    """--meta-columns "age_approx, sex" -> ["age_approx", "sex"] ([] when not given)."""
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def checked_meta_columns(text: str | None) -> list[str]:
    """meta_column_list, refusing a given --meta-columns with no names or a name twice (ConfigError, one line)."""
    names = meta_column_list(text)
    if text is not None and (not names or len(set(names)) != len(names)):
        raise ConfigError(f"--meta-columns {text!r}: give distinct CSV column names separated by commas, e.g. "
                          "age_approx,sex")
    return names
