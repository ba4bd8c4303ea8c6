"""Every --weights kind: the model that trains is the model that is saved, reloaded and evaluated.

Pretrained files cannot be downloaded here, so they are generated in their real layouts with random values
(conftest.write_notop_weights): Keras' imagenet no-top .h5 (mean and std in the Normalization layer, as the
download stores them) and the `efficientnet` package's (noisy-student). For each: the normalised input equals the
recipe of those weights (test_weights_parity.py compares whole backbones with the reference libraries' own models),
in memory and after reloading; a short training's in-memory model, best.weights.h5, model.keras and model.h5
give the same probabilities; evaluate.py --run reproduces history.csv's best epoch; --resume after an
interruption gives the same agreement.
"""
from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import write_notop_weights

from dermo.evaluation import cli as evaluate
from dermo.data.datasets import load_dataset
from dermo.data.synthetic import write_dataset
from dermo.model.backbones import IMAGENET_MEAN, IMAGENET_STD, normalization_layer
from dermo.model.network import build_graph, inference_model
from dermo.pipeline.batches import LesionBatches
from dermo.pipeline.prepare import prepare, settings_for
from dermo.run import folder as runs
from dermo.run.config import TrainConfig
from dermo.training import trainer
from dermo.training.setup import build_model

SIZE = 64
MEAN, STD = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
RECIPES = {  # x (0..255) -> the input each weights file was trained with
    "keras": lambda x: (x / 255 - MEAN) / STD,                        # Keras' imagenet model (TF #49930)
    "efficientnet": lambda x: (x / 255 - MEAN) / STD,                 # its preprocess_input (torch mode)
    "none": lambda x: x / 255,
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return {"root": root, "none": "none",
            "keras": str(write_notop_weights(root / "efficientnetb0_notop.h5", "keras")),
            "efficientnet": str(write_notop_weights(root / "efficientnet-b0_noisy-student_notop.h5",
                                                    "efficientnet")),
            "data": write_dataset(root / "data", "binary", n=32, size=SIZE, seed=3, workers=1)}


def normalised_input(model: keras.Model, x: np.ndarray) -> np.ndarray:
    layer = normalization_layer(model)
    return np.asarray(keras.Model(model.inputs, layer.output)(x), np.float64)


@pytest.mark.parametrize("kind", ["keras", "efficientnet", "none"])
def test_normalised_input_follows_the_weights_recipe_in_memory_and_reloaded(files, kind, tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    inputs, out = build_graph("B0", 2, SIZE, files[kind])
    net = inference_model(keras.Model(inputs, out))
    want = RECIPES[kind](x.astype(np.float64))
    np.testing.assert_allclose(normalised_input(net, x), want, rtol=1e-5, atol=1e-5)
    for name in ("m.keras", "m.h5"):
        net.save(tmp_path / name)
        again = keras.models.load_model(tmp_path / name, compile=False)
        np.testing.assert_allclose(normalised_input(again, x), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(again(x)), np.asarray(net(x)), atol=1e-6)


def _config(files, kind, out, epochs=2, **kw) -> TrainConfig:
    return TrainConfig(data=str(files["data"]), task="binary", backbone="B0", image_size=SIZE, batch_size=8,
                       epochs=epochs, weights=files[kind], out=str(out), workers=1, **kw)


def _val_images(files) -> np.ndarray:
    items, _ = prepare(load_dataset(files["data"], "binary").val, settings_for(SIZE))
    return LesionBatches(items, 2, SIZE, batch_size=len(items))[0][0]


def _assert_saved_models_agree(cfg, run_dir, model, x) -> float:
    """in-memory model == best.weights.h5 in a fresh build == model.keras == model.h5; returns max |Δ|."""
    probs = np.asarray(inference_model(model)(x))
    fresh = build_model(cfg, 2)
    fresh.load_weights(run_dir / runs.BEST_WEIGHTS)
    others = [np.asarray(inference_model(fresh)(x))]
    others += [np.asarray(keras.models.load_model(run_dir / f, compile=False)(x))
               for f in (runs.MODEL_KERAS, runs.MODEL_H5)]
    delta = max(float(np.abs(o - probs).max()) for o in others)
    assert delta <= 1e-5, delta
    return delta


class _Interrupt(keras.callbacks.Callback):
    """Stops the process's training at the start of epoch 2, as a kill would (the backup of epoch 1 is
    written)."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_keras_file_run_interrupted_resumed_saved_and_evaluated_agree(files, tmp_path, monkeypatch, capsys):
    """train.py --weights FILE (Keras layout), interrupted after epoch 1 and resumed: the in-memory model,
    best.weights.h5, model.keras and model.h5 agree, and evaluate.py --run reproduces the best epoch of
    history.csv (val_accuracy and val_cls_loss)."""
    cfg = _config(files, "keras", tmp_path / "run")
    make = trainer.make_callbacks
    monkeypatch.setattr(trainer, "make_callbacks", lambda *a, **k: make(*a, **k) + [_Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        trainer.train_model(cfg, log=lambda *a: None)
    monkeypatch.setattr(trainer, "make_callbacks", make)
    assert (tmp_path / "run" / runs.BACKUP_DIR).is_dir() and not (tmp_path / "run" / runs.CONFIG).exists()
    resumed = TrainConfig.from_dict({**json.loads((tmp_path / "run" / runs.RESUME_CONFIG).read_text()),
                                     "resume": True, "out": str(tmp_path / "run")})
    run_dir, model = trainer.train_model(resumed, log=lambda *a: None)
    h = pd.read_csv(run_dir / runs.HISTORY)
    assert list(h["epoch"]) == [0, 1]
    _assert_saved_models_agree(resumed, run_dir, model, _val_images(files))
    assert evaluate.main(["--run", str(run_dir)]) == 0
    capsys.readouterr()
    m = json.loads((run_dir / "eval-val" / "metrics.json").read_text())
    best = h.loc[h["val_accuracy"].idxmax()]
    assert m["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    # evaluate's log loss comes from float32 probabilities, kept above float32's smallest normal (−log p ≤ 87.3);
    # the training's val_cls_loss from the logits: equal unless a true-class probability underflowed to 0
    preds = pd.read_csv(run_dir / "eval-val" / "predictions.csv")
    p_true = preds.apply(lambda r: r[r["label"]], axis=1).to_numpy(float)
    if p_true.min() > np.finfo(np.float32).tiny:
        assert m["log_loss"] == pytest.approx(best["val_cls_loss"], rel=1e-4, abs=1e-4)
    else:
        assert m["log_loss"] <= best["val_cls_loss"] + 1e-4
    assert m["preprocessing"] == {"hair": True, "color": True, "color_region": "fov"}


@pytest.mark.slow
def test_efficientnet_file_run_saves_the_model_it_trained(files, tmp_path):
    cfg = _config(files, "efficientnet", tmp_path / "run", epochs=1)
    run_dir, model = trainer.train_model(cfg, log=lambda *a: None)
    _assert_saved_models_agree(cfg, run_dir, model, _val_images(files))
