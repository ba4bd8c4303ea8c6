"""Numerical safety of the whole training loss (CAMModel.loss_terms) and the NaN guard of train.py.

The loss functions on their own (extreme probabilities, empty/full masks, constant CAMs, large CAMs) are
covered in test_losses.py; here the same corner cases go through the model's loss_terms — with the real
classifier kernel, centres and every LossConfig variant — and through gradients into the network, and a
NaN loss in a real (tiny) training must stop it with one line naming the fix.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from dermo.training import cli as train
from dermo.data.synthetic import write_dataset
from dermo.model import objective
from dermo.model.cam_model import LossConfig
from dermo.model.network import CLASSIFIER_LAYER
from dermo.run import folder as runs
from dermo.run.config import TrainConfig
from dermo.training.callbacks import NaNGuard
from dermo.training.trainer import prepare_run_dir

SIZE = 64          # B0 at 64 px: 2x2 feature maps, the smallest grid where the CAM terms are defined
B = 4
CONFIGS = {"ce-penalized": LossConfig(),
           "focal-original": LossConfig(classification="focal", cskl="original"),
           "ce-hot-cams": LossConfig(cam_temperature=0.05, lambda_a=10.0)}


@pytest.fixture(scope="module")
def model(cam_model64):
    return cam_model64


def _channels(model) -> int:
    return int(model.centers.shape[1])


def corner_batch(case: str, channels: int):
    """(y (B,2), masks (B,S,S,1), logits (B,2), features (B,2,2,C), pooled (B,C), seg (B,S,S,1))."""
    rng = np.random.default_rng(0)
    y = np.eye(2, dtype="float32")[np.arange(B) % 2]
    masks = np.zeros((B, SIZE, SIZE, 1), "float32")
    masks[:, :SIZE // 2, :SIZE // 2] = 1.0
    logits = rng.normal(size=(B, 2)).astype("float32")
    features = rng.normal(size=(B, 2, 2, channels)).astype("float32")
    seg = rng.uniform(size=(B, SIZE, SIZE, 1)).astype("float32")
    if case == "empty masks":
        masks[:] = 0.0
        seg[:] = 0.0                                          # prediction agrees exactly: log(0) territory
    elif case == "full masks":
        masks[:] = 1.0
        seg[:] = 1.0
    elif case == "constant CAMs":
        features[:] = rng.normal(size=(B, 1, 1, channels))    # same features at every position
    elif case == "zero features":
        features[:] = 0.0
    elif case == "one-class batch":
        y = np.eye(2, dtype="float32")[np.zeros(B, int)]
    elif case == "extreme logits":
        logits = (50.0 * (1.0 - 2.0 * y)).astype("float32")  # certain and wrong: logit gap 100
        features *= 1e4                                        # CAMs in the ±1e5 range
    elif case == "certain and right":
        logits = (50.0 * (2.0 * y - 1.0)).astype("float32")
    return y, masks, logits, features, features.mean(axis=(1, 2)), seg


CASES = ["empty masks", "full masks", "constant CAMs", "zero features", "one-class batch", "extreme logits",
         "certain and right"]


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("case", CASES)
def test_loss_terms_and_gradients_stay_finite(model, monkeypatch, case, config):
    monkeypatch.setattr(model, "loss_config", CONFIGS[config])
    y, masks, *outs = corner_batch(case, _channels(model))
    names = ["logits", "features", "pooled", "mask"]
    watched = [tf.Variable(v) for v in outs]
    kernel = model.get_layer(CLASSIFIER_LAYER).kernel
    with tf.GradientTape() as tape:
        terms = model.loss_terms(y, masks, dict(zip(names, watched)), training=True)
    assert set(terms) >= {"loss", "cls_loss", "center_loss", "cskl_loss", "mask_loss", "seg_loss"}
    values = {k: float(v) for k, v in terms.items()}
    assert all(np.isfinite(v) for v in values.values()), values
    grads = tape.gradient(terms["loss"], [*watched, kernel])
    for name, g in zip(names + ["kernel"], grads):
        assert g is not None and np.isfinite(np.asarray(g)).all(), f"{case}: d loss / d {name} not finite"
    # the corner cases really are corners: the terms take their limiting values
    if case in ("empty masks", "full masks"):
        assert values["mask_loss"] == 0.0                      # no localisation signal: left out
    if case in ("constant CAMs", "zero features"):
        assert values["cskl_loss"] == pytest.approx(0.0, abs=1e-6)    # identical spatial distributions
        assert values["mask_loss"] == pytest.approx(1.0, abs=1e-3)    # r = 0
    if case == "extreme logits":
        assert values["cls_loss"] == pytest.approx(100.0, rel=1e-5)   # −log p_true, from the logits
    if case == "certain and right":
        assert values["cls_loss"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("fill", [128.0, 255.0])
def test_identical_images_through_the_network_in_training_mode(model, fill):
    """A one-class batch of identical flat images (zero batch variance in BatchNorm): the forward pass, every
    term and every weight gradient stay finite. (An all-black batch, exactly 0 everywhere, makes every
    activation 0 and every BatchNorm variance 0; each BatchNorm then scales the backward signal by
    1/sqrt(1e-3) ≈ 32 and the stem's gradient overflows float32 — a property of BatchNorm, not of the
    loss, which NaNGuard stops; preprocessing never produces such images.)"""
    x = np.full((B, SIZE, SIZE, 3), fill, "float32")
    y = np.eye(2, dtype="float32")[np.zeros(B, int)]
    masks = np.zeros((B, SIZE, SIZE, 1), "float32")
    with tf.GradientTape() as tape:
        terms = model.loss_terms(y, masks, model(x, training=True), training=True)
    assert all(np.isfinite(float(v)) for v in terms.values()), terms
    grads = tape.gradient(terms["loss"], model.trainable_variables)
    bad = [v.path for v, g in zip(model.trainable_variables, grads)
           if g is not None and not np.isfinite(np.asarray(g)).all()]
    assert not bad, bad


# ---------------------------------------------------------------- the last guard

class _Stub:
    stop_training = False


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_guard_stops_and_says_what_to_do(value):
    guard = NaNGuard()
    guard.set_model(_Stub())
    guard.on_batch_end(2, {"loss": 0.7, "cls_loss": 0.7})
    assert guard.message is None and not guard.model.stop_training
    guard.on_batch_end(3, {"loss": value, "cls_loss": 0.69, "mask_loss": value, "accuracy": 0.5})
    assert guard.model.stop_training
    msg = guard.message
    assert "\n" not in msg and f"the loss became {value}" in msg and "batch 3" in msg
    assert "'mask_loss': " + str(value) in msg and "accuracy" not in msg      # the culprit term is shown
    assert "--learning-rate" in msg


@pytest.mark.slow
def test_nan_loss_stops_training_with_one_line(tmp_path, monkeypatch, capsys):
    """A loss term gone NaN: train.py stops in the first epoch with exit status 2 and one line naming
    the fix, and leaves no checkpoint that --resume would continue from NaN weights."""
    data = write_dataset(tmp_path / "data", "binary", n=24, size=SIZE, workers=1)
    calls = []

    def nan_mask_loss(cams, masks):
        calls.append(1)
        return tf.constant(float("nan"))

    monkeypatch.setattr(objective, "mask_loss", nan_mask_loss)
    out = tmp_path / "run"
    rc = train.main(["--data", str(data), "--task", "binary", "--backbone", "B0", "--image-size", str(SIZE),
                     "--batch-size", "8", "--epochs", "3", "--weights", "none", "--out", str(out),
                     "--workers", "1"])
    cap = capsys.readouterr()
    assert calls, "the patched term was never used"
    assert rc == 2, cap.err
    err = cap.err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("dermo train: error: training stopped: the loss became nan at batch 0")
    assert "mask_loss" in err and "--learning-rate" in err
    assert not (out / runs.MODEL_KERAS).exists() and not (out / runs.CONFIG).exists()
    assert not (out / runs.BACKUP_DIR).exists() and not (out / runs.BEST_WEIGHTS).exists()
    history = out / runs.HISTORY
    assert not history.exists() or len(pd.read_csv(history)) <= 1          # stopped in epoch 1 of 3
    # the named fix can be tried in the same folder: a fresh start there is allowed
    prepare_run_dir(TrainConfig(data=str(data), out=str(out), learning_rate=0.1))
