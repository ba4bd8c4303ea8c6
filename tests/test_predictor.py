"""The headline path and the one prediction API, on the session's shared run (conftest.tiny_run: multiclass,
B0, focal loss, --class-weight balanced, --monitor val_balanced_accuracy):

- model selection follows --monitor, computed on the whole val set each epoch; evaluate.py --run reproduces
  the selected epoch's numbers;
- the preprocessing contract travels inside model.keras and model.h5 (plain Keras still loads them);
- Predictor.from_run / from_model on paths and on raw arrays gives evaluate.py's probabilities.
"""
from __future__ import annotations

import json
import zipfile

import h5py
import keras
import numpy as np
import pandas as pd
import pytest
from conftest import random_classifier

from dermo.evaluation import cli as evaluate
from dermo.data.imageio import read_image
from dermo.data.synthetic import write_dataset
from dermo.predict import Predictor
from dermo.predict.loading import PredictError
from dermo.run import folder as runs
from dermo.run.contract import read_contract
from dermo.training.setup import balanced_class_weights

CLASSES = ["bcc", "mel", "scc"]


@pytest.fixture(scope="module")
def evaluated(tiny_eval):
    """evaluate.py --run on the shared run (conftest.tiny_eval)."""
    return {"metrics": json.loads((tiny_eval / "metrics.json").read_text()),
            "predictions": pd.read_csv(tiny_eval / "predictions.csv")}


def test_balanced_class_weights_by_hand():
    # 6 images: class 0 ×3, class 1 ×2, class 2 ×1 -> w_k = 6 / (3·n_k) = 2/3, 1, 2
    assert balanced_class_weights([0, 0, 0, 1, 1, 2], 3) == pytest.approx((2 / 3, 1.0, 2.0))
    assert balanced_class_weights([0, 0], 2) == (0.5, 1.0)            # 2/(2·2); an absent class gets 1


def test_monitor_selects_the_best_epoch_and_evaluate_reproduces_it(tiny_run, evaluated):
    cfg = json.loads((tiny_run / runs.CONFIG).read_text())
    assert cfg["task"] == "multiclass" and cfg["backbone"] == "B0" and cfg["monitor"] == "val_balanced_accuracy"
    assert cfg["class_weights"] == pytest.approx([1.0, 1.0, 1.0])     # 9 training images of each class
    h = pd.read_csv(tiny_run / runs.HISTORY)
    for col in ("val_balanced_accuracy", "val_kappa", "val_auc", "val_cls_loss"):
        assert h[col].notna().all(), col
    best = h.loc[h["val_balanced_accuracy"].idxmax()]          # first maximum, as the checkpoint keeps it
    m = evaluated["metrics"]
    assert m["n"] == 9 and m["classes"] == CLASSES
    assert m["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    assert m["balanced_accuracy"] == pytest.approx(best["val_balanced_accuracy"], abs=1e-6)
    assert m["kappa"] == pytest.approx(best["val_kappa"], abs=1e-6)


@pytest.mark.parametrize("name", [runs.MODEL_KERAS, runs.MODEL_H5])
def test_contract_travels_inside_the_model_files(tiny_run, name):
    path = tiny_run / name
    c = read_contract(path)
    assert c["classes"] == CLASSES and c["image_size"] == 64 and c["backbone"] == "B0"
    assert c["preprocessing"] == {"hair": True, "color": True, "color_region": "fov", "mask_grow": 0.015, "p": 6,
                                  "cache_size": 74}
    if name.endswith(".keras"):                                  # readable without dermo
        raw = json.loads(zipfile.ZipFile(path).read("dermo.json"))
    else:
        raw = json.loads(h5py.File(path, "r").attrs["dermo"])
    assert raw == c
    assert keras.models.load_model(path, compile=False).output.shape[1:] == (3,)


def test_predictor_matches_evaluate_on_paths_and_on_raw_arrays(tiny_run, evaluated):
    pred_csv = evaluated["predictions"]
    paths = list(pred_csv["path"])
    p = Predictor.from_run(tiny_run)
    assert p.classes == CLASSES and p.image_size == 64 and (p.hair, p.color) == (True, True)
    out = p.predict(paths)
    np.testing.assert_allclose(out.probs, pred_csv[CLASSES].to_numpy(), atol=1e-5)
    assert out.predicted == list(pred_csv["predicted"])
    assert out.cams.shape == (len(paths), 2, 2, 3) and out.masks.shape == (len(paths), 64, 64)
    np.testing.assert_allclose(out.lesion_focus, pred_csv["lesion_focus"].to_numpy(), atol=1e-5)
    arrays = Predictor.from_model(tiny_run / runs.MODEL_H5).predict([read_image(f) for f in paths[:3]])
    np.testing.assert_allclose(arrays.probs, out.probs[:3], atol=1e-5)
    assert arrays.sources == ["array[0]", "array[1]", "array[2]"]


def test_evaluate_model_file_takes_classes_from_its_contract(tiny_run, tmp_path, capsys):
    data = json.loads((tiny_run / runs.CONFIG).read_text())["data"]
    assert evaluate.main(["--model", str(tiny_run / runs.MODEL_KERAS), "--data", data,
                          "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["classes"] == CLASSES
    capsys.readouterr()
    assert evaluate.main(["--model", str(tiny_run / runs.MODEL_KERAS), "--task", "binary", "--data", data]) == 2
    err = capsys.readouterr().err.strip()
    assert "has classes bcc, mel, scc, not task binary's" in err and "\n" not in err


def test_model_without_hair_removal_is_evaluated_without_it(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", "binary", n=12, size=64, workers=1)
    model = random_classifier(2, 64, 0, data)
    contract = {"classes": ["nevus", "others"], "image_size": 64,
                "preprocessing": {"hair": False, "color": True}}
    runs.save_keras_atomic(model, tmp_path / "m.keras", contract=contract)
    predictor = Predictor.from_model(tmp_path / "m.keras")
    assert predictor.hair is False and predictor.color_region == "fov"      # a contract from before the option
    assert evaluate.main(["--model", str(tmp_path / "m.keras"), "--data", str(data),
                          "--out", str(tmp_path / "e")]) == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["preprocessing"] == {"hair": False, "color": True, "color_region": "fov"}
    assert m["classes"] == ["nevus", "others"]
    contract["preprocessing"]["color_region"] = "skin"                     # --color-region skin: its own cache
    runs.save_keras_atomic(model, tmp_path / "skin.keras", contract=contract)
    skin = Predictor.from_model(tmp_path / "skin.keras")
    assert skin.color_region == skin.settings.color_region == "skin"
    assert skin.settings.key() != predictor.settings.key()
    x, masks = (np.full((1, 80, 80, 3), 180, np.uint8), [np.pad(np.ones((40, 40), np.uint8), 20)])
    x[0, 20:60, 20:60], x[0, :10, :30] = (90, 60, 50), (40, 90, 230)     # a lesion and a blue artefact
    assert not np.allclose(skin.preprocess(x, masks)[0], predictor.preprocess(x, masks)[0])
    model.save(tmp_path / "plain.keras")                                  # no contract, no classes given
    with pytest.raises(PredictError, match="records no class names"):
        Predictor.from_model(tmp_path / "plain.keras")
    (tmp_path / "corrupt.keras").write_bytes(b"PK\x03\x04 not a zip")          # as evaluate says it
    with pytest.raises(PredictError, match=r"corrupt.keras: not a readable Keras model \(BadZipFile"):
        Predictor.from_model(tmp_path / "corrupt.keras")
