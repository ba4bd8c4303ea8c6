"""evaluate.py --calibrate on a run around a random classifier (conftest.fake_run): the temperature fitted on
the val split is the NLL minimiser of the uncalibrated predictions, it is stored in config.json and inside
model.keras/model.h5, and evaluate.py, Predictor and ensemble.py then give softmax(log p / T) with the
same CAMs."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import fake_run, one_line_error, random_classifier

from dermo.evaluation import ensemble
from dermo.evaluation import cli as evaluate
from dermo import metrics
from dermo.data.datasets import load_dataset
from dermo.data.synthetic import write_dataset
from dermo.predict import Predictor
from dermo.run.contract import read_contract

BIN = ["nevus", "others"]


def _probs(folder) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    df = pd.read_csv(folder / "predictions.csv")
    return df, df[BIN].to_numpy(np.float64), df["label"].map(BIN.index).to_numpy()


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A fake run's val images predicted as they are (raw: Predictor, which test_predictor.py shows equal to
    evaluate.py), then evaluate.py --calibrate (RUN/eval-val/), then a plain evaluate.py (again/)."""
    root = tmp_path_factory.mktemp("calibration")
    data = write_dataset(root / "binary", "binary", n=24, size=64, workers=1)
    model = random_classifier(2, 64, 4, data)
    run = fake_run(root / "run", model, data, "binary", BIN)
    model.save(run / "model.h5")
    val = load_dataset(data).val
    raw = Predictor.from_run(run).predict([s.path for s in val])
    assert evaluate.main(["--run", str(run), "--calibrate"]) == 0
    assert evaluate.main(["--run", str(run), "--out", str(root / "again")]) == 0
    return {"root": root, "run": run, "data": data, "raw": (raw, raw.probs.astype(np.float64),
                                                              np.array([s.label for s in val])),
            "cal": _probs(run / "eval-val"), "again": _probs(root / "again")}


def test_the_stored_temperature_minimises_the_val_nll(calibrated):
    run = calibrated["run"]
    _, raw, y = calibrated["raw"]
    t = metrics.fit_temperature(y, raw)
    assert abs(np.log(t)) > 0.1                       # the random classifier is mis-calibrated: T moves
    record = json.loads((run / "config.json").read_text())["calibration"]
    assert record["temperature"] == pytest.approx(t, rel=1e-4)       # fitted on evaluate.py's own run
    assert read_contract(run / "model.keras")["temperature"] == record["temperature"]
    assert read_contract(run / "model.h5")["temperature"] == record["temperature"]
    assert record["n"] == len(y) and record["fitted_on"] == "val"
    after = metrics.apply_temperature(raw, record["temperature"])
    # the record holds its numbers rounded to 6 decimals (≤ 5e-7), recomputed here from the same probabilities
    assert record["before"] == pytest.approx(metrics.calibration_metrics(y, raw), abs=1e-5)
    assert record["after"] == pytest.approx(metrics.calibration_metrics(y, after), abs=1e-5)
    assert record["after"]["nll"] <= record["before"]["nll"]


def test_evaluate_reports_calibrated_probabilities_after_calibrate(calibrated):
    run = calibrated["run"]
    _, raw, y = calibrated["raw"]
    t = read_contract(run / "model.keras")["temperature"]
    expected = metrics.apply_temperature(raw, t)
    for key in ("cal", "again"):                       # the fitting evaluation and a later plain one
        df, probs, labels = calibrated[key]
        assert (labels == y).all()
        np.testing.assert_allclose(probs, expected, atol=1e-6)
        assert (df["predicted"] == [BIN[k] for k in raw.argmax(1)]).all()
    m = json.loads((calibrated["root"] / "again" / "metrics.json").read_text())
    assert m["temperature"] == t and m["ece_bins"] == 15
    assert m["ece"] == pytest.approx(metrics.expected_calibration_error(y, expected), abs=1e-6)
    assert m["brier"] == pytest.approx(metrics.brier_score(y, expected), abs=1e-6)
    assert m["log_loss"] == pytest.approx(metrics.calibration_metrics(y, expected)["nll"], abs=1e-6)
    report = (run / "eval-val" / "report.txt").read_text()
    assert f"T = {t:g}" in report and "ECE" in report
    fitted = json.loads((run / "eval-val" / "metrics.json").read_text())     # the --calibrate evaluation itself:
    for key, name in (("ece", "ece"), ("brier", "brier"), ("log_loss", "nll")):   # its numbers are the "after"
        assert fitted[key] == pytest.approx(fitted["calibration"]["after"][name], abs=1e-6), key
    assert (run / "eval-val" / "reliability.png").stat().st_size > 0


def test_predictor_and_ensemble_use_the_temperature_and_cams_do_not_change(calibrated):
    run = calibrated["run"]
    df, cal, _ = calibrated["cal"]
    plain = calibrated["raw"][0]
    assert list(df["path"]) == [str(p) for p in plain.sources]
    p = Predictor.from_run(run)
    assert p.temperature == read_contract(run / "model.keras")["temperature"]
    out = p.predict(list(df["path"][:3]))
    np.testing.assert_allclose(out.probs, cal[:3], atol=1e-5)
    np.testing.assert_array_equal(out.cams, plain.cams[:3])
    ens = calibrated["root"] / "ens"
    assert ensemble.main(["--models", str(run), "--out", str(ens)]) == 0
    np.testing.assert_allclose(_probs(ens)[1], cal, atol=1e-6)


@pytest.mark.parametrize("extra, fix", [(["--split", "train"], "--split train"),
                                        (["--data", "DATA"], "--data"),
                                        (["--images", "DATA"], "--images")])
def test_calibrate_refuses_anything_but_a_runs_val_split(calibrated, capsys, extra, fix):
    argv = ["--run", calibrated["run"], "--calibrate", "--out", calibrated["root"] / "refused"]
    msg = one_line_error(capsys, evaluate.main, argv + [calibrated["data"] if a == "DATA" else a for a in extra],
                         "dermo evaluate")
    assert "--calibrate" in msg and fix in msg
    assert not (calibrated["root"] / "refused").exists()


def test_calibrate_refuses_a_bare_model_file(calibrated, capsys):
    import shutil

    bare = shutil.copy(calibrated["run"] / "model.keras", calibrated["root"] / "bare.keras")   # in no run folder
    argv = ["--model", bare, "--task", "binary", "--images", calibrated["data"], "--calibrate"]
    assert "--run" in one_line_error(capsys, evaluate.main, argv, "dermo evaluate")


def test_calibrate_refuses_a_cross_validation_folder_with_the_recipe(tmp_path, capsys):
    (tmp_path / "folds.csv").write_text("path,label,mask,fold\n")         # what makes a folder a CV folder
    msg = one_line_error(capsys, evaluate.main, ["--run", tmp_path, "--calibrate"], "dermo evaluate")
    assert "oof.csv" in msg and "store_temperature" in msg and "fold-k" in msg
