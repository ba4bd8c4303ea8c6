"""dermo ml --meta-columns: patient metadata appended to the hand-crafted image features (the classical baseline
beside a metadata CNN): the appended columns equal a hand encoding fitted on the training split, a label carried
only by the metadata is learnt, and the saved model reproduces the predictions from features.csv."""
from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from dermo.experiments import features as F


@pytest.fixture(scope="module")
def meta_csv(tmp_path_factory):
    """40 synthetic images whose CSV label is the patient's sex (female -> nevus, male -> others), drawn
    independently of the image's own class, so the images say nothing about the label; age_approx numeric with
    gaps."""
    from dermo.data.datasets import list_images
    from dermo.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("ml-meta")
    data = write_dataset(root / "syn", "binary", n=40, size=64, seed=5, workers=1)
    rng = np.random.default_rng(5)
    rows = []
    for k, p in enumerate(list_images(data)):
        sex = ["female", "male"][k % 2]
        rows.append({"image": str(p), "label": "nevus" if sex == "female" else "others", "sex": sex,
                     "age_approx": "" if k % 7 == 3 else str(int(rng.integers(20, 80)))})
    csv = root / "meta.csv"
    pd.DataFrame(rows).sample(frac=1.0, random_state=0).to_csv(csv, index=False)
    return csv


def test_ml_with_metadata(meta_csv, tmp_path, capsys):
    from dermo.experiments.ml import main

    out = tmp_path / "run"
    assert main(["--task", "binary", "--data", str(meta_csv), "--image-size", "64", "--workers", "1", "--cv", "3",
                 "--meta-columns", "age_approx,sex", "--out", str(out)]) == 0
    capsys.readouterr()
    meta_names = ["meta:age_approx", "meta:age_approx=missing", "meta:sex=female", "meta:sex=male",
                  "meta:sex=missing"]
    feats = pd.read_csv(out / "features.csv")
    assert list(feats.columns[3:]) == list(F.FEATURE_NAMES) + meta_names

    # the appended columns, by hand: age standardised with the training rows' mean and (population) sd
    table = pd.read_csv(meta_csv, dtype=str, keep_default_na=False).set_index("image")
    rows = table.loc[feats["path"]]
    age = pd.to_numeric(rows["age_approx"].replace("", np.nan)).to_numpy()
    train = (feats["split"] == "train").to_numpy()
    known = ~np.isnan(age)
    mean, sd = age[train & known].mean(), age[train & known].std()
    np.testing.assert_allclose(feats["meta:age_approx"][known], (age[known] - mean) / sd, rtol=1e-5)
    assert (feats["meta:age_approx"][~known] == 0).all()
    np.testing.assert_array_equal(feats["meta:age_approx=missing"], (~known).astype(float))
    np.testing.assert_array_equal(feats["meta:sex=female"], (rows["sex"] == "female").astype(float))
    np.testing.assert_array_equal(feats["meta:sex=male"], (rows["sex"] == "male").astype(float))
    assert (feats["meta:sex=missing"] == 0).all()

    # the label lives only in the metadata: the baseline reads it
    m = json.loads((out / "metrics.json").read_text())
    pred = pd.read_csv(out / "predictions.csv")
    classes = ["nevus", "others"]
    y, p = pred["label"].map(classes.index).to_numpy(), pred[classes].to_numpy()
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p.argmax(1))) == 1.0
    assert m["meta_columns"] == ["age_approx", "sex"] and m["n_features"] == len(F.FEATURE_NAMES) + 5

    # the saved model and encoding reproduce the predictions from the saved features
    saved = joblib.load(out / "model.joblib")
    assert saved["feature_names"] == list(F.FEATURE_NAMES) + meta_names
    assert [c["name"] for c in saved["meta_encoding"]["columns"]] == ["age_approx", "sex"]
    val = feats[feats["split"] == "val"].set_index("path").loc[pred["path"]]
    np.testing.assert_allclose(saved["model"].predict_proba(val[saved["feature_names"]].to_numpy()), p,
                               rtol=1e-5, atol=1e-6)


def test_ml_metadata_errors_are_one_line(meta_csv, tmp_path, capsys):
    from dermo.experiments.ml import main

    base = ["--task", "binary", "--data", str(meta_csv), "--image-size", "64", "--workers", "1"]
    for columns, needle in ((" , ", "--meta-columns"), ("age_approx,site", "'site'")):
        assert main(base + ["--meta-columns", columns, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0], err
