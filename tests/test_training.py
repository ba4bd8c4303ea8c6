"""End-to-end training on tiny generated data (64 px, B0 from scratch, a few epochs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from dermo.training import cli as train
from conftest import HISTORY_COLUMNS, RUN_FILES, assert_only_actionable_lines, kill_after_first_epoch
from dermo.data.synthetic import write_dataset
from dermo.run import folder as runs
from dermo.run.config import TrainConfig

TERMS = ["cls_loss", "center_loss", "cskl_loss", "mask_loss"]
EPOCHS = 4
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data64(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synth") / "binary", "binary", n=96, seed=3, size=80,
                         workers=1)


def train_args(data, out, epochs=EPOCHS, *extra):
    return ["--data", str(data), "--task", "binary", "--backbone", "B0", "--image-size", "64",
            "--batch-size", "8", "--epochs", str(epochs), "--weights", "none", "--out", str(out),
            "--workers", "1", "--seed", "7", *extra]


@pytest.fixture(scope="module")
def run_a(data64, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "a"
    assert train.main(train_args(data64, out)) == 0
    return out


@pytest.fixture(scope="module")
def val_arrays(run_a, data64):
    """Validation images and labels through the same pipeline as training."""
    from dermo.data.datasets import load_dataset
    from dermo.pipeline.batches import LesionBatches
    from dermo.pipeline.prepare import prepare, settings_for

    ds = load_dataset(data64, "binary")
    items, _ = prepare(ds.val, settings_for(64))
    batches = LesionBatches(items, 2, 64, batch_size=64)
    x, (y, _) = batches[0]
    return x, y.argmax(1)


@pytest.mark.slow
def test_run_folder_has_every_file(run_a):
    assert {p.name for p in run_a.iterdir()} == RUN_FILES
    assert list(pd.read_csv(run_a / "history.csv").columns) == HISTORY_COLUMNS
    for name in ("config.json", "classes.json", "model.keras", "model.h5", "history.csv", "curves.png"):
        assert (run_a / name).stat().st_size > 0, name
    assert json.loads((run_a / "classes.json").read_text())["classes"] == ["nevus", "others"]
    cfg = json.loads((run_a / "config.json").read_text())
    assert cfg["backbone"] == "B0" and cfg["image_size"] == 64 and cfg["num_classes"] == 2
    assert TrainConfig.from_dict(cfg).lambda_cskl == 0.1
    state = json.loads((run_a / runs.BACKUP_DIR / "state.json").read_text())     # kept: --resume --epochs N
    assert state["epoch"] == EPOCHS and (run_a / runs.BACKUP_DIR / state["weights"]).exists()
    assert len(list((run_a / runs.BACKUP_DIR).iterdir())) == 2                # the last epoch's state only


@pytest.mark.slow
def test_history_logs_real_per_term_values_and_loss_decreases(run_a):
    h = pd.read_csv(run_a / "history.csv")
    assert len(h) == EPOCHS
    for col in ["loss", "accuracy"] + TERMS:
        assert np.isfinite(h[col]).all() and np.isfinite(h["val_" + col]).all(), col
        assert (h[col] != 0).all(), f"{col} logged as 0 (tracker not updated)"
    assert (h["cskl_loss"] < 0).all()      # divergence between class CAMs is rewarded
    assert h["loss"].iloc[-1] < h["loss"].iloc[0]


@pytest.mark.slow
def test_saved_models_reload_without_custom_code_and_agree(run_a, val_arrays):
    x, _ = val_arrays
    m_keras = keras.models.load_model(run_a / "model.keras", compile=False, safe_mode=True)
    m_h5 = keras.models.load_model(run_a / "model.h5", compile=False)
    p1, p2 = m_keras.predict(x, verbose=0), m_h5.predict(x, verbose=0)
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    np.testing.assert_allclose(p1.sum(1), 1.0, atol=1e-5)
    # the saved graph holds the best checkpoint's weights
    from dermo.training.setup import build_model

    model = build_model(TrainConfig(image_size=64, weights="none"), 2)
    model.load_weights(run_a / runs.BEST_WEIGHTS)
    np.testing.assert_allclose(model.predict(x, verbose=0)["probs"], p1, atol=1e-5)


@pytest.mark.slow
def test_val_predictions_do_not_collapse_to_one_class(run_a, val_arrays):
    x, y = val_arrays
    probs = keras.models.load_model(run_a / "model.keras", compile=False).predict(x, verbose=0)
    assert len(set(probs.argmax(1))) == 2, "eval-mode predictions collapsed to a single class"


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_history(run_a, data64, tmp_path):
    """SIGKILL a training subprocess after its first epoch's checkpoint, --resume it (`python -m dermo train`): the
    finished run has every planned epoch and the same history as the uninterrupted run with the same seed
    (reproducibility, and weights/optimizer/centres/LR/early-stopping state carried over); the resumed process
    names the best epoch of the whole run (history.csv's), whose weights the saved model holds. Both processes, as a
    user's shell starts them, print only lines a user can act on (conftest.ACTIONABLE_LINES)."""
    out = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *train_args(data64, out)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        kill_after_first_epoch([proc], out)
    assert not (out / "model.keras").exists()
    assert_only_actionable_lines((tmp_path / "first.log").read_text())
    first_seconds = json.loads((out / runs.BACKUP_DIR / "state.json").read_text())["train_seconds"]
    resumed = subprocess.run([sys.executable, "-m", "dermo", "train", "--resume", "--out", str(out)], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = assert_only_actionable_lines(resumed.stdout + resumed.stderr)
    a = pd.read_csv(run_a / "history.csv")
    b = pd.read_csv(out / "history.csv")
    assert list(b["epoch"]) == list(range(EPOCHS))
    pd.testing.assert_frame_equal(a, b)
    best = int(b["val_accuracy"].idxmax())
    assert any(line.startswith(f"restored the weights of the best epoch, {best + 1} of {EPOCHS} (val_accuracy")
               for line in lines)
    assert lines[-1].startswith("done in ") and f"resuming {out} after epoch 1" in lines
    assert (out / runs.BEST_WEIGHTS).exists() and (out / runs.CONFIG).exists()
    np.testing.assert_array_equal(b["learning_rate"].iloc[0], 1.0)
    # the training time counts both processes: the killed one's (its state.json after epoch 1) plus the resumed
    # epochs (by the resumed process's own log lines "epoch k/N · S s", each rounded to 1 s)
    resumed_s = [float(line.split(" · ")[1].removesuffix(" s")) for line in lines if line.startswith("epoch ")]
    config = json.loads((out / runs.CONFIG).read_text())
    assert len(resumed_s) == EPOCHS - 1 and first_seconds > 0
    assert first_seconds + sum(resumed_s) - len(resumed_s) <= config["train_seconds"]
    assert config["train_seconds"] <= first_seconds + config["wall_seconds"]
    assert "s of training over all its processes)" in lines[-1]


@pytest.mark.slow
def test_refuses_to_overwrite_and_resume_without_checkpoint(run_a, tmp_path, capsys, data64):
    assert train.main(train_args(data64, run_a)) == 2
    assert "already holds" in capsys.readouterr().err
    assert train.main(["--resume", "--out", str(tmp_path / "none")] + ["--data", str(data64)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.slow
def test_segmentation_head_trains_and_evaluate_reports_dice(data64, tmp_path):
    from dermo.evaluation import cli as evaluate

    out = tmp_path / "seg"
    assert train.main(train_args(data64, out, 1, "--head", "segmentation")) == 0
    h = pd.read_csv(out / "history.csv")
    assert (h["seg_loss"] > 0).all() and h["val_seg_dice"].between(0, 1).all()
    assert (out / runs.SEG_MODEL).exists()
    assert evaluate.main(["--run", str(out)]) == 0
    metrics = json.loads((out / "eval-val" / "metrics.json").read_text())
    assert 0.0 <= metrics["segmentation_dice"] <= 1.0


@pytest.mark.slow
def test_adamw_cosine_warmup_and_last_epoch_kept(data64, tmp_path, val_arrays):
    """--optimizer adamw --lr-schedule cosine --warmup-epochs 1 over 2 epochs: keras' CosineDecay warms up linearly
    to the peak at the end of epoch 1 and decays to 0 at the last step, so history.csv logs 1e-3 then 0;
    --monitor last keeps the last epoch (its backup weights are the saved model's) and stops nothing early."""
    out = tmp_path / "run"
    assert train.main(train_args(data64, out, 2, "--optimizer", "adamw", "--lr-schedule", "cosine",
                                 "--warmup-epochs", "1", "--monitor", "last")) == 0
    h = pd.read_csv(out / "history.csv")
    np.testing.assert_allclose(h["learning_rate"], [1e-3, 0.0], atol=1e-9)
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["optimizer"], cfg["lr_schedule"], cfg["monitor"]) == ("adamw", "cosine", "last")
    from dermo.training.setup import build_model

    last = build_model(TrainConfig(image_size=64, weights="none"), 2)
    last.load_weights(out / runs.BACKUP_DIR / "epoch-0002.weights.h5")
    x, _ = val_arrays
    saved = keras.models.load_model(out / "model.keras", compile=False).predict(x, verbose=0)
    np.testing.assert_allclose(last.predict(x, verbose=0)["probs"], saved, atol=1e-5)
