"""Keras callbacks the training loop needs beyond Keras' own."""
from __future__ import annotations

import sys
import time

import keras
import numpy as np

from dermo.metrics import classification_metrics
from dermo.model.names import PROBS_LAYER
from dermo.pipeline.batches import image_of
from dermo.pipeline.counterfactual import donor_pool, swap_with_other_class

class CenterRefresh(keras.callbacks.Callback):
    """At each epoch end move the class centres to the features seen in that epoch."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.refresh_centers()


class LearningRateLog(keras.callbacks.Callback):
    """The optimizer's learning rate at the epoch's end in the logs (`learning_rate`), where no ReduceLROnPlateau
    puts it there (a schedule such as --lr-schedule cosine sets the rate every step)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class NaNGuard(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN that says what happened and what to try."""

    def __init__(self):
        super().__init__()
        self.message = None

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            terms = {k: float(v) for k, v in (logs or {}).items() if k.endswith("loss")}
            self.message = (f"training stopped: the loss became {float(loss)} at batch {batch} "
                            f"(terms {terms}); try a lower --learning-rate or --lambda-cskl, "
                            "or --cskl penalized")
        super().on_batch_end(batch, logs)


class PreciseBatchNorm(keras.callbacks.Callback):
    """Before each validation, re-estimate every BatchNorm layer's moving mean/variance as the exact
    average over `max_batches` training batches (inference-mode statistics that match the current
    weights). Guards against the eval-mode collapse of from-scratch training on small data, where
    moving averages (momentum 0.99) lag far behind fast-moving weights (Adadelta, lr 1.0)."""

    def __init__(self, batches, max_batches: int = 8):
        super().__init__()
        self.batches = batches
        self.max_batches = max_batches

    def on_test_begin(self, logs=None):
        layers = [l for l in self.model.layers if isinstance(l, keras.layers.BatchNormalization)]
        if not layers or not self.max_batches:
            return
        saved = [l.momentum for l in layers]
        try:
            for i in range(min(self.max_batches, len(self.batches))):
                for layer in layers:
                    layer.momentum = 1.0 - 1.0 / (i + 1)      # running mean of per-batch statistics
                self.model(self.batches[i][0], training=True)
        finally:
            for layer, momentum in zip(layers, saved):
                layer.momentum = momentum


class ValidationMetrics(keras.callbacks.Callback):
    """After each validation, the numbers of the WHOLE validation set (not per-batch means) added to the
    epoch's logs: val_balanced_accuracy, val_kappa, val_auc (NaN where undefined) and
    val_counterfactual_accuracy: the accuracy on the val images with each lesion put on the surroundings of an
    image of another class (dermo.pipeline.counterfactual; NaN with one class) and val_worst_accuracy, the lower
    of that and the plain accuracy (a net that reads the surroundings the wrong way round scores high on the
    swapped images alone; docs/method.md §11). Must come before the callbacks
    that read them (CSVLogger, EarlyStopping, RunCheckpoint): Keras hands every callback the same logs dict. Two
    extra forward passes of the validation images through the probability head (as they are, swapped)."""

    KEYS = ("balanced_accuracy", "kappa", "auc")

    def __init__(self, batches, num_classes: int):
        super().__init__()
        self.batches = batches
        self.num_classes = num_classes
        self._probs_model = None
        self._donors = None

    def _probs(self, x, n: int, model=None) -> np.ndarray:
        if self._probs_model is None:
            model = model or self.model
            self._probs_model = keras.Model(model.input, model.get_layer(PROBS_LAYER).output)
        # (n,K); [:n]: under a multi-worker strategy Keras may concatenate every worker's copy
        return np.asarray(self._probs_model.predict_on_batch(x), np.float64)[:n]

    def predict(self, model=None, counterfactual: bool = False):
        """(labels (N,), probabilities (N,K)) of the whole validation set through `model`'s probability head (its
        predict function is traced once and reused, also for the run's closing check); counterfactual: also the
        probabilities of the swapped images (N,K) and which of them are valid (N,)."""
        probs, labels, swapped, valid = [], [], [], []
        if counterfactual and self._donors is None:
            self._donors = donor_pool(self.batches, self.num_classes)
        start = 0
        for i in range(len(self.batches)):
            x, (y, masks) = self.batches[i]                       # x: maybe a dict (metadata)
            n, y = len(y), np.asarray(y).argmax(1)
            probs.append(self._probs(x, n, model))
            labels.append(y)
            if counterfactual:
                x_hat, ok = swap_with_other_class(image_of(x), masks, y, self._donors, start)
                swapped.append(self._probs({**x, "image": x_hat} if isinstance(x, dict) else x_hat, n, model))
                valid.append(ok)
            start += n
        out = np.concatenate(labels), np.concatenate(probs)
        return (*out, np.concatenate(swapped), np.concatenate(valid)) if counterfactual else out

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or "val_loss" not in logs:
            return
        labels, probs, swapped, valid = self.predict(counterfactual=True)
        m = classification_metrics(labels, probs, list(range(self.num_classes)))
        for key in self.KEYS:
            logs[f"val_{key}"] = float("nan") if m[key] is None else float(m[key])
        counterfactual = (float(np.mean(swapped[valid].argmax(1) == labels[valid])) if valid.any()
                          else float("nan"))
        logs["val_counterfactual_accuracy"] = counterfactual
        logs["val_worst_accuracy"] = float(np.minimum(m["accuracy"], counterfactual))   # NaN stays NaN


SHORT = {"cls_loss": "cls", "center_loss": "centre", "cskl_loss": "cskl", "mask_loss": "mask",
         "outside_loss": "outside", "rrr_loss": "rrr", "seg_loss": "seg"}
VAL_SHORT = {"val_accuracy": "acc", "val_balanced_accuracy": "bal.acc", "val_kappa": "κ", "val_auc": "AUC",
             "val_counterfactual_accuracy": "cf.acc", "val_worst_accuracy": "worst"}


class EpochLog(keras.callbacks.Callback):
    """One short line per epoch instead of Keras' own: time, the loss with the terms that are on (λ > 0), train
    accuracy, the validation numbers and the learning rate; on a terminal, a tqdm bar over the epoch's steps
    (never `\r` progress into a log file). `terms`: the loss terms switched on. `early`: the EarlyStopping whose
    stop is said in a line at the end. Must come after every callback that adds to the logs."""

    def __init__(self, epochs: int, steps: int, terms: list[str], early=None, log=print, stream=None):
        super().__init__()
        self.epochs, self.steps, self.terms, self.early, self.log = epochs, steps, terms, early, log
        self.stream = stream or sys.stdout
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False, unit="step",
                            file=self.stream)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        logs = logs or {}

        def num(key):
            value = logs.get(key)
            return "–" if value is None else f"{float(value):.4g}"
        terms = ", ".join(f"{SHORT.get(t, t)} {num(t)}" for t in self.terms)
        line = (f"epoch {epoch + 1}/{self.epochs} · {time.perf_counter() - self.start:.0f} s · loss {num('loss')}"
                + (f" ({terms})" if terms else "") + f" · acc {num('accuracy')}")
        if "val_loss" in logs:
            line += f" | val loss {num('val_loss')} " + " ".join(f"{name} {num(k)}" for k, name in VAL_SHORT.items()
                                                                if k in logs)
        if "learning_rate" in logs:
            line += f" · lr {num('learning_rate')}"
        self.log(line)

    def on_train_end(self, logs=None):
        early = self.early
        if early is not None and early.stopped_epoch > 0:
            self.log(f"stopped early after epoch {early.stopped_epoch + 1}: {early.monitor} did not improve for "
                     f"{early.patience} epochs")
