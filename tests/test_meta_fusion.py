"""--meta-columns end to end: the encoding through config.json and the model contract, one tiny metadata run
(in-memory model = reloaded model.keras = evaluate.py), CAMs of a metadata model from the image rows of the
classifier kernel, and one-line errors for absent columns."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from conftest import one_line_error

from dermo.data.metadata import MetaEncoding, fit_encoding

ROWS = [{"age_approx": "35", "sex": "male"}, {"age_approx": "70", "sex": ""}, {"age_approx": None, "sex": "female"}]


def _meta_csv(root, n=24, seed=3):
    """A binary synthetic set listed in a CSV with age_approx (older for 'others') and sex, some missing."""
    from dermo.data.datasets import list_images
    from dermo.data.synthetic import write_dataset

    data = write_dataset(root / "syn", "binary", n=n, size=64, seed=seed, workers=1)
    rng = np.random.default_rng(seed)
    rows = []
    for p in list_images(data):
        age = int(rng.integers(20, 50) + (25 if p.parent.name == "others" else 0))
        rows.append({"image": str(p), "label": p.parent.name,
                     "age_approx": "" if rng.random() < 0.25 else str(age),
                     "sex": "" if rng.random() < 0.25 else str(rng.choice(["female", "male"]))})
    csv = root / "meta.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def test_encoding_round_trips_through_config_and_contract(tmp_path):
    import h5py

    from dermo.run.config import TrainConfig
    from dermo.run.contract import embed_contract, read_contract

    enc = fit_encoding(["age_approx", "sex"], ROWS)
    want = enc.encode(ROWS + [{}])
    cfg = TrainConfig.from_dict(json.loads(TrainConfig(meta_encoding=enc.to_dict(),
                                                       meta_columns="age_approx,sex").to_json()))
    assert cfg.meta_columns == "age_approx,sex"
    np.testing.assert_array_equal(MetaEncoding.from_dict(cfg.meta_encoding).encode(ROWS + [{}]), want)
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as z:
        z.writestr("config.json", "{}")
    with h5py.File(tmp_path / "m.h5", "w"):
        pass
    for name in ("m.keras", "m.h5"):
        embed_contract(tmp_path / name, {"classes": ["a", "b"], "meta": enc.to_dict()})
        back = MetaEncoding.from_dict(read_contract(tmp_path / name)["meta"])
        assert back == enc
        np.testing.assert_array_equal(back.encode(ROWS + [{}]), want)
    assert enc.width == 2 + 3 and want[3].tolist() == [0, 1, 0, 0, 1]      # {} -> only the missing indicators


def test_absent_metadata_column_is_one_line(tmp_path, capsys):
    from dermo.training import cli as train

    csv = _meta_csv(tmp_path, n=8)
    base = ["--data", csv, "--task", "binary", "--image-size", "64", "--weights", "none", "--epochs", "1"]
    msg = one_line_error(capsys, train.main, base + ["--meta-columns", "age_approx,site", "--out",
                                                     tmp_path / "r1"], "dermo train")
    assert str(csv) in msg and "'site'" in msg and "--meta-columns" in msg
    msg = one_line_error(capsys, train.main, base + ["--meta-columns", " , ", "--out", tmp_path / "r2"],
                         "dermo train")
    assert "--meta-columns" in msg
    folder = tmp_path / "syn"
    msg = one_line_error(capsys, train.main, ["--data", folder, "--task", "binary", "--image-size", "64",
                                              "--meta-columns", "age_approx", "--out", tmp_path / "r3"], "dermo train")
    assert str(folder) in msg and "CSV" in msg


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory):
    """One tiny metadata run: B0, 64 px, 1 epoch, --meta-columns age_approx,sex; the in-memory model too."""
    from dermo.run.config import TrainConfig
    from dermo.training.trainer import train_model

    root = tmp_path_factory.mktemp("meta-run")
    csv = _meta_csv(root)
    cfg = TrainConfig(data=str(csv), task="binary", backbone="B0", image_size=64, batch_size=8, epochs=1,
                      weights="none", workers=1, meta_columns="age_approx,sex", out=str(root / "run"))
    run_dir, model = train_model(cfg, log=lambda *a: None)
    return run_dir, model, csv


def _val_inputs(run_dir, enc):
    """The run's val split (split.csv) prepared and batched with its metadata: x dict, items."""
    from dermo.pipeline.batches import LesionBatches
    from dermo.pipeline.prepare import prepare, settings_for
    from dermo.run.splits import split_samples

    samples = split_samples(run_dir, ["nevus", "others"], "val")
    items, _ = prepare(samples, settings_for(64))
    x = LesionBatches(items, 2, 64, batch_size=len(items), meta=enc)[0][0]
    return x, items, samples


def test_meta_run_records_encoding_and_values(meta_run):
    from dermo.run.contract import read_contract

    run_dir, model, csv = meta_run
    config = json.loads((run_dir / "config.json").read_text())
    enc = MetaEncoding.from_dict(config["meta_encoding"])
    assert enc.names == ["age_approx", "sex"] and enc.columns[1]["categories"] == ["female", "male"]
    assert read_contract(run_dir / "model.keras")["meta"] == config["meta_encoding"]
    assert read_contract(run_dir / "model.h5")["meta"] == config["meta_encoding"]
    split = pd.read_csv(run_dir / "split.csv", dtype=str, keep_default_na=False)
    rows = pd.read_csv(csv, dtype=str, keep_default_na=False).set_index("image")
    assert split["meta:age_approx"].tolist() == rows.loc[split["path"], "age_approx"].tolist()
    assert split["meta:sex"].tolist() == rows.loc[split["path"], "sex"].tolist()
    train_ages = [float(a) for a in split.loc[split["split"] == "train", "meta:age_approx"] if a]
    assert enc.columns[0]["mean"] == pytest.approx(np.mean(train_ages))           # fitted on train only
    assert [t.name for t in model.inputs] == ["image", "meta"] and model.inputs[1].shape[-1] == enc.width


def test_in_memory_reloaded_and_evaluate_agree(meta_run, tmp_path):
    from dermo.evaluation import cli as evaluate
    from dermo.model.network import inference_model
    from dermo.predict import Predictor

    run_dir, model, _ = meta_run
    p = Predictor.from_run(run_dir)
    x, items, samples = _val_inputs(run_dir, p.meta)
    memory = np.asarray(inference_model(model).predict_on_batch(x), np.float64)
    reloaded = p.predict_items(items, with_cams=False).probs
    np.testing.assert_allclose(reloaded, memory, atol=1e-5)
    assert evaluate.main(["--run", str(run_dir), "--out", str(tmp_path / "ev")]) == 0
    frame = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    assert frame["path"].tolist() == [s.path for s in samples]
    np.testing.assert_allclose(frame[["nevus", "others"]].to_numpy(), memory, atol=1e-5)
    from dermo.viewer.members import Members                      # the viewer's eval rows: the recorded values

    members = Members.load([str(run_dir)])
    assert members.meta_of(samples[0].path) == samples[0].meta_values()
    np.testing.assert_allclose(members.predict(samples[0].path, members.meta_of(samples[0].path))[0], memory[0],
                               atol=1e-5)
    no_meta = np.asarray(inference_model(model).predict_on_batch({**x, "meta": np.zeros_like(x["meta"])}))
    assert np.abs(no_meta - memory).max() > 1e-6          # the metadata branch really reaches the output


def test_metadata_model_cams_use_the_image_rows_of_the_kernel(meta_run):
    import keras

    from dermo.model.cam import class_activation_maps
    from dermo.predict import Predictor

    run_dir, _, _ = meta_run
    p = Predictor.from_run(run_dir)
    x, _, samples = _val_inputs(run_dir, p.meta)
    model = p.model
    dense = model.get_layer("classifier")
    kernel, bias = dense.kernel.numpy().astype(np.float64), dense.bias.numpy().astype(np.float64)
    features = np.asarray(keras.Model(model.inputs, model.get_layer("top_activation").output)(x), np.float64)
    meta_part = np.asarray(keras.Model(model.inputs, model.get_layer("meta_dense").output)(x), np.float64)
    c = features.shape[-1]
    assert kernel.shape[0] == c + meta_part.shape[1]
    want = np.einsum("bhwc,ck->bhwk", features, kernel[:c])                   # (B,h,w,K)
    out = p.predict([s.path for s in samples], meta=[s.meta_values() for s in samples])
    np.testing.assert_allclose(out.cams, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(np.asarray(class_activation_maps(features, kernel)), want, rtol=1e-4,
                               atol=1e-4 * np.abs(want).max())
    logits = want.mean(axis=(1, 2)) + meta_part @ kernel[c:] + bias          # mean CAM + (meta part + bias)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(out.probs, probs / probs.sum(1, keepdims=True), atol=1e-5)
    blank = p.predict(samples[0].path)                              # a new image without metadata: all missing
    missing = p.meta.encode([{}])
    np.testing.assert_array_equal(missing, [[0, 1, 0, 0, 1]])
    ref = np.asarray(model.predict_on_batch({"image": out.images[:1].astype(np.float32), "meta": missing}))
    np.testing.assert_allclose(blank.probs, ref, atol=1e-5)


def test_export_refuses_a_metadata_model_in_one_line(meta_run, capsys):
    from dermo.export.cli import main

    run_dir, _, _ = meta_run
    msg = one_line_error(capsys, main, ["--run", run_dir, "--format", "savedmodel"], "dermo export")
    assert str(run_dir) in msg and "age_approx, sex" in msg


def test_evaluate_data_csv_without_a_metadata_column_is_one_line(meta_run, tmp_path, capsys):
    from dermo.evaluation import cli as evaluate

    run_dir, _, csv = meta_run
    held = pd.read_csv(csv, dtype=str).drop(columns="sex")
    held.to_csv(tmp_path / "held.csv", index=False)
    msg = one_line_error(capsys, evaluate.main, ["--run", run_dir, "--data", tmp_path / "held.csv", "--split",
                                                 "train", "--out", tmp_path / "ev"], "dermo evaluate")
    assert str(tmp_path / "held.csv") in msg and "'sex'" in msg


def test_cv_with_an_absent_metadata_column_is_one_line_naming_the_csv(tmp_path, capsys):
    from dermo.experiments.cv import main

    csv = _meta_csv(tmp_path, n=8)
    msg = one_line_error(capsys, main, ["--folds", "2", "--data", csv, "--task", "binary", "--image-size", "64",
                                        "--weights", "none", "--meta-columns", "age_approx,site",
                                        "--out", tmp_path / "cv"], "dermo cv")
    assert str(csv) in msg and "'site'" in msg
    assert not (tmp_path / "cv").exists()                  # refused before any fold was written
