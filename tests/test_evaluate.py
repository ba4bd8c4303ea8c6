"""evaluate.py / dermo.evaluation on tiny generated data (64 px, B0, random weights).

Models are built once per module; their classifier kernel is rescaled so that predictions differ between
images (a random-init B0 has tiny features, which would leave every probability at 0.5)."""
from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import fake_run, random_classifier

from dermo.evaluation import cli as evaluate
from dermo.evaluation import scoring
from dermo.data.datasets import load_dataset
from dermo.data.synthetic import write_dataset
from dermo.evaluation.sources import resolve_source
from dermo.pipeline.batches import LesionBatches
from dermo.pipeline.prepare import prepare, settings_for
from dermo.predict.tta import TTA_NAMES, tta_forward, tta_inverse

SIZE = 64


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    data = write_dataset(root / "binary", "binary", n=24, size=SIZE)
    model = random_classifier(2, SIZE, 0, data)
    model.save(root / "m.keras")
    model.save(root / "m.h5")
    return {"root": root, "data": data, "model": model, "keras": root / "m.keras", "h5": root / "m.h5"}


def run_eval(capsys, *argv):
    rc = evaluate.main([str(a) for a in argv])
    return rc, capsys.readouterr()


def read_eval(out):
    return json.loads((out / "metrics.json").read_text()), pd.read_csv(out / "predictions.csv")


@pytest.fixture(scope="module")
def keras_eval(kit):
    out = kit["root"] / "eval-keras"
    assert evaluate.main(["--model", str(kit["keras"]), "--task", "binary", "--data", str(kit["data"]),
                          "--out", str(out)]) == 0
    return out


def test_metrics_equal_numpy_recomputation_from_predictions(kit, keras_eval):
    m, df = read_eval(keras_eval)
    for name in ("metrics.json", "predictions.csv", "report.txt", "confusion_matrix.png", "roc.png",
                 "cams.png"):
        assert (keras_eval / name).stat().st_size > 0
    classes = ["nevus", "others"]
    y = df["label"].map(classes.index).to_numpy()
    p = df[classes].to_numpy()
    pred = p.argmax(1)
    assert len(df) == m["n"] == 6 and set(pred) == {0, 1}          # predictions really vary
    assert (df["predicted"].map(classes.index).to_numpy() == pred).all()
    # independent numpy recomputation from predictions.csv (not the sklearn calls of dermo.metrics)
    cm = np.zeros((2, 2), int)
    np.add.at(cm, (y, pred), 1)                                     # rows = true, columns = predicted
    n = cm.sum()
    assert m["confusion_matrix"] == cm.tolist()
    assert m["accuracy"] == pytest.approx(np.trace(cm) / n)
    assert set(y) == {0, 1}                                         # both classes present: all defined
    assert m["balanced_accuracy"] == pytest.approx(np.mean(np.diag(cm) / cm.sum(1)))   # mean recall
    p_o, p_e = np.trace(cm) / n, (cm.sum(1) @ cm.sum(0)) / n**2     # Cohen: (p_o − p_e) / (1 − p_e)
    assert m["kappa"] == pytest.approx((p_o - p_e) / (1 - p_e))
    pos, neg = p[y == 1, 1], p[y == 0, 1]                           # Mann–Whitney: P(pos > neg) + ½P(tie)
    pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    assert m["auc"] == pytest.approx(pairs.mean(), abs=1e-6)
    assert m["lesion_focus"] == pytest.approx(df["lesion_focus"].mean())
    assert m["cam_mask_pearson"] == pytest.approx(df["cam_mask_pearson"].dropna().mean())
    assert 0 <= m["lesion_focus"] <= 1 and m["max_abs_cam"] > 0
    assert m["mask_source"] == "given" and m["split"] == "val" and m["image_size"] == SIZE
    assert "accuracy" in (keras_eval / "report.txt").read_text()


def test_tta_1_is_no_tta_and_cam_scores_match_a_direct_computation(kit, keras_eval):
    """--tta 1 (the default) == the model on the pipeline's batches; CAM scores == metrics on
    explain's CAMs."""
    from dermo import metrics
    from dermo.predict.cams import predict_with_cams, predicted_class_cams

    ds = load_dataset(kit["data"], "binary")
    items, _ = prepare(ds.val, settings_for(SIZE))
    x, (_, masks) = LesionBatches(items, 2, SIZE, batch_size=len(items))[0]
    probs, cams = predict_with_cams(kit["model"], x)
    m, df = read_eval(keras_eval)
    assert m["tta"] == 1 and list(df["path"]) == [s.path for s in ds.val]
    np.testing.assert_allclose(df[["nevus", "others"]].to_numpy(), probs, atol=1e-5)
    top = predicted_class_cams(probs, cams)
    assert m["lesion_focus"] == pytest.approx(metrics.lesion_focus(top, masks[..., 0]), rel=1e-4)
    assert m["cam_mask_pearson"] == pytest.approx(metrics.cam_mask_pearson(top, masks[..., 0]), rel=1e-3)
    assert m["max_abs_cam"] == pytest.approx(metrics.max_abs_cam(cams), rel=1e-4)


def test_grey_outside_scores_the_lesion_alone_as_numpy_greying_does(kit, capsys):
    # reference: the pipeline's images with numpy's m*x + (1-m)*127.5, predicted by the model itself
    ds = load_dataset(kit["data"], "binary")
    items, _ = prepare(ds.val, settings_for(SIZE))
    x, (y, masks) = LesionBatches(items, 2, SIZE, batch_size=len(items))[0]
    greyed = masks * x + (1 - masks) * 127.5
    before, after = (kit["model"].predict(a, verbose=0) for a in (x, greyed))
    assert np.abs(after - before).max() > 1e-3                      # the outside matters to this model
    labels = y.argmax(1)
    out = kit["root"] / "eval-greyed"
    rc, cap = run_eval(capsys, "--model", kit["keras"], "--task", "binary", "--data", kit["data"],
                       "--grey-outside", "--out", out)
    assert rc == 0 and "outside the lesion greyed (given masks): accuracy" in cap.out
    g = read_eval(out)[0]["outside_greyed"]
    assert g["accuracy"] == pytest.approx(np.mean(after.argmax(1) == labels))
    assert g["accuracy_change"] == pytest.approx(np.mean(after.argmax(1) == labels) -
                                                 np.mean(before.argmax(1) == labels))
    assert g["unchanged"] == pytest.approx(np.mean(after.argmax(1) == before.argmax(1)))
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--model", str(kit["keras"]), "--task", "binary", "--images", str(kit["data"]),
                       "--grey-outside"])
    assert exit_.value.code == 2 and "--grey-outside scores labelled images" in capsys.readouterr().err


def test_h5_and_keras_give_the_same_predictions(kit, keras_eval, capsys):
    out = kit["root"] / "eval-h5"
    rc = run_eval(capsys, "--model", kit["h5"], "--task", "binary", "--data", kit["data"], "--out", out)[0]
    assert rc == 0
    a, b = read_eval(keras_eval)[1], read_eval(out)[1]
    assert list(a["path"]) == list(b["path"])
    np.testing.assert_allclose(a[["nevus", "others"]], b[["nevus", "others"]], atol=1e-6)


def test_tta_is_the_mean_over_flipped_inputs(kit, keras_eval, capsys):
    ds = load_dataset(kit["data"], "binary")
    items, _ = prepare(ds.val, settings_for(SIZE))
    x = LesionBatches(items, 2, SIZE, batch_size=len(items))[0][0]
    out4 = kit["root"] / "tta4"
    assert run_eval(capsys, "--model", kit["keras"], "--task", "binary", "--data", kit["data"],
                    "--tta", 4, "--out", out4)[0] == 0
    m4, df4 = read_eval(out4)
    p4 = df4[["nevus", "others"]].to_numpy()
    expected = np.mean([kit["model"](np.ascontiguousarray(tta_forward(x, t)), training=False)
                        for t in range(4)], axis=0)
    np.testing.assert_allclose(p4, expected, atol=1e-5)
    assert np.allclose(p4.sum(1), 1, atol=1e-5) and ((p4 >= 0) & (p4 <= 1)).all()
    assert m4["tta"] == 4 and m4["lesion_focus"] is not None


@pytest.mark.parametrize("t", range(len(TTA_NAMES)))
def test_tta_maps_cams_back_to_the_original_orientation(t):
    rng = np.random.default_rng(t)
    x = rng.normal(size=(2, 8, 8, 3))
    np.testing.assert_array_equal(tta_inverse(tta_forward(x, t), t), x)

    def cam(img):                       # a spatially equivariant "CAM": 2x2 average pooling, (B,4,4,3)
        return img.reshape(len(img), 4, 2, 4, 2, 3).mean(axis=(2, 4))

    np.testing.assert_allclose(tta_inverse(cam(tta_forward(x, t)), t), cam(x))
    if t > 0:
        assert not np.allclose(tta_forward(x, t), x)


def test_tta_out_of_range_is_one_line(kit, capsys):
    rc, cap = run_eval(capsys, "--model", kit["keras"], "--task", "binary", "--data", kit["data"],
                       "--tta", 9, "--out", kit["root"] / "tta9")
    assert rc == 2 and cap.err.strip().count("\n") == 0 and "--tta 9" in cap.err


def test_unlabelled_folder_writes_predictions_only(kit, keras_eval, capsys):
    out = kit["root"] / "predict"
    rc, cap = run_eval(capsys, "--model", kit["keras"], "--task", "binary", "--images", kit["data"] / "val",
                       "--out", out)
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["cams.png", "predictions.csv"]
    df = pd.read_csv(out / "predictions.csv")
    assert list(df.columns) == ["path", "predicted", "nevus", "others"]
    labelled = read_eval(keras_eval)[1].set_index("path")
    np.testing.assert_allclose(df[["nevus", "others"]].to_numpy(),
                               labelled.loc[df["path"], ["nevus", "others"]].to_numpy(), atol=1e-6)


def test_lambda_layer_is_refused(kit, capsys):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(x)))
    for suffix in (".keras", ".h5"):
        path = kit["root"] / f"lambda{suffix}"
        model.save(path)
        rc, cap = run_eval(capsys, "--model", path, "--task", "binary", "--data", kit["data"],
                           "--out", kit["root"] / "lambda-out")
        assert rc == 2, cap.err
        assert cap.err.strip().count("\n") == 0
        assert f"refusing to load {path}: it contains Python code (Lambda layer)" in cap.err
    assert not (kit["root"] / "lambda-out").exists()


def test_missing_inputs_are_one_line(kit, capsys, tmp_path):
    (tmp_path / "notarun").mkdir()
    for argv in (["--run", tmp_path / "notarun"], ["--run", tmp_path / "missing-run"],
                 ["--model", tmp_path / "missing.keras", "--task", "binary", "--data", kit["data"]]):
        rc, cap = run_eval(capsys, *argv)
        assert rc == 2 and cap.err.strip().count("\n") == 0, cap.err
        assert str(argv[1]) in cap.err and "Traceback" not in cap.err
    assert "config.json" in run_eval(capsys, "--run", tmp_path / "notarun")[1].err
    assert list(tmp_path.iterdir()) == [tmp_path / "notarun"]


def test_run_folder_defaults_and_data_override(kit, keras_eval, capsys):
    run = fake_run(kit["root"] / "run", kit["model"], kit["data"], "binary", ["nevus", "others"])
    rc, cap = run_eval(capsys, "--run", run)
    assert rc == 0, cap.err
    m, df = read_eval(run / "eval-val")
    np.testing.assert_allclose(df[["nevus", "others"]], read_eval(keras_eval)[1][["nevus", "others"]],
                               atol=1e-6)
    assert "balanced accuracy" in cap.out and "Confusion matrix" in cap.out
    assert sorted(p.name for p in run.iterdir()) == ["classes.json", "config.json", "eval-val", "model.keras"]
    source = resolve_source(run)
    args = evaluate.parse_args(["--run", str(run), "--images", "x"])
    assert scoring.default_out(args, source) == run / "predict-x"
    args = evaluate.parse_args(["--model", str(kit["h5"]), "--task", "binary", "--data", "d/held.csv",
                                "--split", "train"])
    h5 = resolve_source(kit["h5"], "binary")
    assert scoring.default_out(args, h5) == kit["root"] / "eval-held-train"
    assert scoring.default_out(args, h5, whole=True) == kit["root"] / "eval-held"
    # never another evaluation's folder: the run's eval-val exists now, so the next default is eval-val-2
    notes = []
    assert scoring.default_out(evaluate.parse_args(["--run", str(run)]), source, log=notes.append) == \
        run / "eval-val-2"
    assert notes == [f"note: {run / 'eval-val'} exists; writing {run / 'eval-val-2'} (name a folder with --out "
                     "to replace it)"]
    other = write_dataset(kit["root"] / "multi", "multiclass", n=6, size=SIZE)
    rc, cap = run_eval(capsys, "--run", run, "--data", other)
    assert rc == 2 and cap.err.strip().count("\n") == 0
    assert "bcc, mel, scc" in cap.err and "nevus, others" in cap.err


def test_an_evaluation_of_an_earlier_model_version_is_called_stale(kit, tmp_path, capsys):
    """evaluate records the model file's digest; after the model changes (here: other weights saved over it, as a
    resumed or calibrated run does), a new evaluate and the viewer's --eval table say the old evaluation is stale."""
    from dermo.viewer.evalset import EvalSet

    run = fake_run(tmp_path / "run", kit["model"], kit["data"], "binary", ["nevus", "others"])
    rc, cap = run_eval(capsys, "--run", run)
    assert rc == 0 and "stale" not in cap.out and "earlier version" not in cap.out
    first = run / "eval-val"
    assert json.loads((first / "metrics.json").read_text())["model_digest"]
    ev = EvalSet.load(first).check(["nevus", "others"])
    ev.note_stale([run / "model.keras"], log=lambda line: None)
    assert ev.stale is None and ev.table()["stale"] is None
    changed = random_classifier(2, SIZE, 1, kit["data"])
    changed.save(run / "model.keras")
    rc, cap = run_eval(capsys, "--run", run)
    assert rc == 0
    assert (f"note: {first} scored an earlier version of {run / 'model.keras'} (the model file changed since"
            in cap.out) and (run / "eval-val-2").is_dir()
    lines = []
    ev.note_stale([run / "model.keras"], log=lines.append)
    assert lines and ev.table()["stale"].startswith(f"{first} scored an earlier version")
