"""python -m dermo.export on a run around a random-weight B0 classifier (conftest.fake_run, bcc/mel/scc, 64 px)
with its contract and a temperature: each format, run by its own runtime (tf.saved_model, the TFLite
interpreter, onnxruntime), gives model.keras's probabilities with that temperature applied, and its CAMs, within
1e-4 on real preprocessed images; the sidecar says what a user outside dermo needs.

Not conftest.tiny_run: two epochs from scratch leave it chaotic (its features move by ~900 of ~2600 when
the input moves by 1e-4), so another runtime's float32 round-off alone changes its CAMs by hundreds; the export
check refuses such a file (test_a_file_that_disagrees_with_the_keras_model_is_refused)."""
from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest
from conftest import fake_run, one_line_error, random_classifier

from dermo import metrics
from dermo.data.datasets import load_dataset
from dermo.data.synthetic import write_dataset
from dermo.export import cli, formats
from dermo.export.graph import export_graph
from dermo.predict import Predictor
from dermo.predict.cams import predict_with_cams
from dermo.run.config import TrainConfig
from dermo.run.contract import read_contract, update_contract
from dermo.training.finish import model_contract

CLASSES = ["bcc", "mel", "scc"]
T = 2.5
PROG = "dermo export"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The run (contract as train.py writes it, plus T), exported in all three formats with CAMs; the Keras
    reference on 4 val images."""
    root = tmp_path_factory.mktemp("export")
    data = write_dataset(root / "multi", "multiclass", n=18, size=64, workers=1)
    run = fake_run(root / "run", random_classifier(3, 64, 5, data), data, "multiclass", CLASSES)
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    update_contract(run / "model.keras", {**model_contract(cfg, CLASSES), "temperature": T})
    assert cli.main(["--run", str(run), "--format", *formats.FORMATS, "--with-cams"]) == 0
    x = Predictor.from_run(run).preprocess([s.path for s in load_dataset(data).val[:4]])[0]    # (4,64,64,3)
    model = keras.models.load_model(run / "model.keras", compile=False)
    raw, cams = predict_with_cams(model, x)
    return {"run": run, "out": run / "export", "x": x, "model": model, "raw": raw,
            "probs": metrics.apply_temperature(raw, T), "cams": cams}


def _savedmodel(path, x):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return {k: v.numpy() for k, v in loaded.serve(x).items()}


def _tflite(path, x):
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_path=str(path)).get_signature_runner("serving_default")(image=x)


def _onnx(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": x})))


RUNTIMES = {"savedmodel": _savedmodel, "tflite": _tflite, "onnx": _onnx}


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_each_format_gives_the_keras_models_calibrated_probabilities_and_cams(exported, fmt):
    got = RUNTIMES[fmt](exported["out"] / formats.ARTEFACTS[fmt], exported["x"])
    assert sorted(got) == ["cams", "probs"]
    assert got["probs"].shape == (4, 3) and got["cams"].shape == exported["cams"].shape == (4, 2, 2, 3)
    assert np.abs(got["probs"] - exported["probs"]).max() <= 1e-4
    # CAMs of up to ~40 here: float32 sums over 1280 channels in another order differ by ~1e-6 relative
    assert np.abs(got["cams"] - exported["cams"]).max() <= 1e-4 * np.abs(exported["cams"]).max()
    assert np.abs(exported["probs"] - exported["raw"]).max() > 0.01          # T = 2.5 really changed them


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_the_sidecar_names_classes_input_preprocessing_and_temperature(exported, fmt):
    name = formats.ARTEFACTS[fmt]
    info = json.loads((exported["out"] / f"{name}.json").read_text())
    contract = read_contract(exported["run"] / "model.keras")
    assert info["format"] == fmt and info["file"] == name
    assert info["classes"] == CLASSES and info["image_size"] == 64 and info["temperature"] == T
    assert info["task"] == "multiclass" and info["backbone"] == "B0" and info["feature_layer"] == "top_activation"
    assert info["input"]["shape"] == [None, 64, 64, 3] and info["input"]["dtype"] == "float32"
    pre = contract["preprocessing"]
    assert {k: info["preprocessing"][k] for k in pre} == pre
    assert info["outputs"]["probs"]["shape"] == [None, 3] and info["outputs"]["cams"]["shape"] == [None, 2, 2, 3]
    for output, diff in info["check"]["max_abs_diff"].items():
        assert diff <= info["check"]["tolerance"][output]
    assert not list(exported["out"].glob(".export-*"))                     # the scratch folder is gone


def test_graph_without_cams_or_temperature_is_the_keras_model(exported):
    graph = export_graph(exported["model"], 1.0, with_cams=False)
    out = graph(exported["x"])
    assert list(out) == ["probs"]
    np.testing.assert_array_equal(np.asarray(out["probs"]), np.asarray(exported["model"](exported["x"])))


def test_a_file_that_disagrees_with_the_keras_model_is_refused(exported):
    ref = {"probs": np.zeros((2, 3)), "cams": np.full((2, 2, 2, 3), 50.0)}
    assert cli.check({"probs": 1e-5, "cams": 4e-3}, ref, "onnx") == {"probs": 1e-4, "cams": pytest.approx(5e-3)}
    with pytest.raises(formats.ExportError, match="onnx file differs .*probs by 0.0002"):
        cli.check({"probs": 2e-4, "cams": 0.0}, ref, "onnx")


def test_an_earlier_export_with_other_outputs_is_not_replaced(exported, capsys):
    before = (exported["out"] / "model.tflite").read_bytes()
    msg = one_line_error(capsys, cli.main, ["--run", exported["run"], "--format", "tflite"], PROG)
    assert msg.startswith(f"{exported['out'] / 'model.tflite'} was exported with --with-cams (outputs cams, probs); "
                          "this export's outputs are probs: export it with --with-cams to replace it alike, or write "
                          "to another --out")
    assert (exported["out"] / "model.tflite").read_bytes() == before


def test_missing_converter_and_bad_run_are_one_line(exported, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(formats.NEEDS, "onnx", ("tf2onnx", "no_such_converter_pkg"))
    msg = one_line_error(capsys, cli.main, ["--run", exported["run"], "--format", "onnx"], PROG)
    assert "no_such_converter_pkg" in msg and "pip install" in msg
    msg = one_line_error(capsys, cli.main, ["--run", tmp_path / "nope", "--format", "tflite"], PROG)
    assert "run folder not found" in msg
