"""Building blocks of a training run: seeds, distribution strategy, the CAMModel and its optimizer,
and the initial class centres.

TensorFlow is imported only under the TensorFlow backend (inside the functions that need it): under
KERAS_BACKEND=jax nothing here needs it, and machines with JAX but no TensorFlow can train."""
from __future__ import annotations

import keras
import numpy as np

from dermo.data.datasets import loss_kind
from dermo.model.cam_model import CAMModel, LossConfig
from dermo.model.names import GAP_LAYER
from dermo.model.network import build_graph, set_bn_momentum
from dermo.pipeline.batches import LesionBatches
from dermo.run.config import TrainConfig, learning_rate
from dermo.training.devices import gpu_driver_present

SCRATCH_BN_MOMENTUM = 0.9


def set_seeds(seed: int, deterministic: bool) -> None:
    """Python, NumPy and backend seeds; TF op determinism makes two CPU runs give identical histories (JAX on
    CPU is deterministic as it is)."""
    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


class NoStrategy:
    """The JAX backend's stand-in for tf.distribute's default strategy: one device, nothing to enter."""
    num_replicas_in_sync = 1

    def scope(self):
        import contextlib

        return contextlib.nullcontext()


def make_strategy(name: str):
    if keras.backend.backend() != "tensorflow":
        return NoStrategy()
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if gpu_driver_present() and len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def balanced_class_weights(labels, num_classes: int) -> tuple[float, ...]:
    """w_k = n / (K · n_k) (scikit-learn's "balanced"); a class without images gets 1."""
    counts = np.bincount(np.asarray(labels, int), minlength=num_classes).astype("float64")
    n = counts.sum()
    return tuple(float(n / (num_classes * c)) if c else 1.0 for c in counts)


def loss_config(cfg: TrainConfig, num_classes: int, class_weights=None) -> LossConfig:
    return LossConfig(classification=loss_kind(num_classes), lambda_center=cfg.lambda_center,
                      lambda_cskl=cfg.lambda_cskl, lambda_mask=cfg.lambda_mask, cskl=cfg.cskl,
                      lambda_a=cfg.lambda_a, cam_temperature=cfg.cam_temperature,
                      focal_gamma=cfg.focal_gamma, center_momentum=cfg.center_momentum,
                      lambda_seg=cfg.lambda_seg, lambda_outside=cfg.lambda_outside,
                      outside_form=cfg.outside_form, lambda_rrr=cfg.lambda_rrr,
                      class_weights=tuple(class_weights) if class_weights is not None else None)


def build_model(cfg: TrainConfig, num_classes: int, class_weights=None, meta_width: int = 0) -> CAMModel:
    """The CAMModel for `cfg` (not compiled); `class_weights` (K,) weight L_cls in training; meta_width > 0
    adds the metadata input and branch (dermo.model.network)."""
    inputs, outputs = build_graph(cfg.backbone, num_classes, cfg.image_size, cfg.weights, cfg.dropout,
                                  head=cfg.head, cam_stride=cfg.cam_stride, meta_width=meta_width)
    model = CAMModel(inputs, outputs, loss_config(cfg, num_classes, class_weights), name="dermo_cam_model")
    momentum = cfg.bn_momentum or (SCRATCH_BN_MOMENTUM if cfg.weights == "none" else None)
    if momentum:
        set_bn_momentum(model, momentum)
    return model


ADAMW_WEIGHT_DECAY = 1e-4


def learning_rate_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """--lr-schedule cosine: linear warm-up 0 -> lr over --warmup-epochs, then cosine decay to 0 at the last step
    of --epochs (keras.optimizers.schedules.CosineDecay); plateau: the constant rate that ReduceLROnPlateau lowers."""
    lr = learning_rate(cfg)
    if cfg.lr_schedule != "cosine":
        return lr
    warmup = cfg.warmup_epochs * steps_per_epoch
    decay = max(1, (cfg.epochs - cfg.warmup_epochs) * steps_per_epoch)
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(lr, decay)
    return keras.optimizers.schedules.CosineDecay(0.0, decay, warmup_target=lr, warmup_steps=warmup)


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
    """--optimizer with its learning rate (schedule): Adadelta(ρ 0.9), the deck's; Adam; AdamW (weight decay 1e-4)."""
    lr = learning_rate_schedule(cfg, steps_per_epoch)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=ADAMW_WEIGHT_DECAY)
    return keras.optimizers.Adadelta(learning_rate=lr, rho=0.9)


def compile_model(model: CAMModel, cfg: TrainConfig, jit_compile: bool | str = "auto",
                  steps_per_epoch: int = 1) -> None:
    """--optimizer (setup.make_optimizer); loss scaling for float16 only (TF's mixed_float16; JAX's mixed_bfloat16
    needs none). `steps_per_epoch`: the length of an epoch, for a cosine schedule."""
    optimizer = make_optimizer(cfg, steps_per_epoch)
    if cfg.mixed_precision and keras.backend.backend() == "tensorflow":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    # its variables now, not inside the first traced train step: a tf.function that creates variables is traced
    # twice (measured: a tiny B0 training 64 s -> see benchmarks/README.md), and under JAX the state is set up once
    optimizer.build(model.trainable_variables)


def precision_policy() -> str:
    """--mixed-precision: float16 with loss scaling under TensorFlow, bfloat16 under JAX."""
    return "mixed_bfloat16" if keras.backend.backend() == "jax" else "mixed_float16"


def initial_centers(model: CAMModel, batches: LesionBatches) -> np.ndarray:
    """Class means of the pooled features over the training set (inference mode) -> (K, C)."""
    pooled_model = keras.Model(model.input, model.get_layer(GAP_LAYER).output)
    sums = np.zeros(tuple(model.centers.shape), "float64")
    counts = np.zeros(model.num_classes)
    for i in range(len(batches)):
        x, (y, _) = batches[i]
        g = np.asarray(pooled_model(x, training=False), "float64")
        sums += y.T @ g
        counts += y.sum(axis=0)
    return (sums / np.maximum(counts, 1)[:, None]).astype("float32")
