"""python -m dermo.cv: stratified (group) folds, fold runs, out-of-fold predictions exactly once, the table, reuse
of finished folds, and the fold models as one ensemble (2 folds, B0 at 64 px, 1 epoch from scratch)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import one_line_error

from dermo.evaluation import ensemble
from dermo.evaluation import cli as evaluate
from dermo.data.datasets import Sample
from dermo.data.groups import stratified_folds
from dermo.data.manifest import DataError
from dermo.data.synthetic import write_dataset
from dermo.experiments import cv
from dermo.run.folder import FOLDS_CSV
from dermo.training import trainer


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished 2-fold CV of a CSV manifest with a metadata column, and a separate held-out set."""
    root = tmp_path_factory.mktemp("cv")
    data = write_dataset(root / "data", "binary", n=24, size=64, seed=2, workers=1)
    images = sorted(p for p in data.rglob("*.jpg"))
    csv = root / "manifest.csv"
    pd.DataFrame({"image": [str(p) for p in images], "label": [p.parent.name for p in images],
                  "age": np.arange(len(images)) % 7 * 10}).to_csv(csv, index=False)
    held_out = write_dataset(root / "held", "binary", n=8, size=64, seed=9, workers=1)
    out = root / "cv"
    rc = cv.main(["--folds", "2", "--data", str(csv), "--task", "binary", "--image-size", "64", "--batch-size", "8",
                  "--epochs", "1", "--weights", "none", "--workers", "1", "--out", str(out)])
    assert rc == 0
    return SimpleNamespace(out=out, csv=csv, images=images, held_out=held_out)


def test_folds_are_stratified_seeded_and_keep_groups_apart():
    samples = [Sample(f"/x/{i:02d}.jpg", i % 2, None, f"g{i // 3}") for i in range(24)]   # 8 groups of 3
    folds = stratified_folds(samples, 4, seed=0, source="x", column="id")
    assert set(folds) == {0, 1, 2, 3}
    for g in {s.group for s in samples}:                            # a group lies in one fold
        assert len({f for s, f in zip(samples, folds) if s.group == g}) == 1
    np.testing.assert_array_equal(folds, stratified_folds(samples, 4, seed=0, source="x", column="id"))
    plain = stratified_folds(samples, 3, seed=1, source="x")
    for k in range(3):                                              # 12 + 12 images: 4 of each class per fold
        assert np.bincount([s.label for s, f in zip(samples, plain) if f == k]).tolist() == [4, 4]
    with pytest.raises(DataError, match="fewer than the 13 folds"):
        stratified_folds(samples, 13, seed=0, source="x")


@pytest.mark.slow
def test_every_image_is_predicted_out_of_fold_exactly_once(done):
    folds = pd.read_csv(done.out / FOLDS_CSV)
    oof = pd.read_csv(done.out / cv.OOF_CSV)
    assert sorted(oof["path"]) == sorted(str(p) for p in done.images) == sorted(folds["path"])
    merged = oof.merge(folds[["path", "fold"]], on="path", suffixes=("", "_assigned"))
    assert (merged["fold"] == merged["fold_assigned"]).all()
    for k in (0, 1):       # fold k's run trained and selected its epoch on the other fold only (inner split)
        split = pd.read_csv(done.out / f"fold-{k}" / "split.csv")
        others = set(folds.loc[folds["fold"] != k, "path"])
        assert set(split["path"]) == others and not set(split["path"]) & set(folds.loc[folds["fold"] == k, "path"])
        inner_val = split.loc[split["split"] == "val", "label"]
        assert 0 < len(inner_val) <= len(others) // 4 and set(inner_val) == {"nevus", "others"}  # 1 of 5 strata
        oof_k = pd.read_csv(done.out / f"fold-{k}" / cv.OOF_DIR / "predictions.csv")
        assert set(oof_k["path"]) == set(folds.loc[folds["fold"] == k, "path"])
    manifest = pd.read_csv(done.out / "manifests" / "fold-0.csv")
    assert "age" in manifest.columns                                # metadata columns travel with the folds


@pytest.mark.slow
def test_table_rows_equal_each_folds_metrics_and_their_mean(done):
    table = pd.read_csv(done.out / cv.CV_CSV).set_index("fold")
    per_fold = [json.loads((done.out / f"fold-{k}" / cv.OOF_DIR / "metrics.json").read_text()) for k in (0, 1)]
    for k, m in enumerate(per_fold):
        assert table.loc[str(k), "accuracy"] == pytest.approx(m["accuracy"])
        assert table.loc[str(k), "auc"] == pytest.approx(m["auc"])
    assert table.loc["mean", "accuracy"] == pytest.approx((per_fold[0]["accuracy"] + per_fold[1]["accuracy"]) / 2)
    oof = pd.read_csv(done.out / cv.OOF_CSV)
    correct = (oof["predicted"] == oof["label"]).mean()             # pooled accuracy over all 24 images
    assert table.loc["out-of-fold", "accuracy"] == pytest.approx(correct)
    assert "| out-of-fold |" in (done.out / cv.CV_MD).read_text()


@pytest.mark.slow
def test_rerun_reuses_finished_folds(done, monkeypatch):
    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("a finished fold was trained again"))
    assert cv.main(["--folds", "2", "--data", str(done.csv), "--task", "binary", "--image-size", "64",
                    "--batch-size", "8", "--epochs", "1", "--weights", "none", "--workers", "1",
                    "--out", str(done.out)]) == 0


@pytest.mark.slow
def test_other_folds_in_the_same_folder_are_refused(done, capsys):
    err = one_line_error(capsys, cv.main, ["--folds", "3", "--data", done.csv, "--task", "binary", "--weights",
                                           "none", "--image-size", "64", "--out", done.out], "dermo cv")
    assert "made from other data or options" in err


@pytest.mark.slow
def test_fold_models_score_a_held_out_set_as_one_ensemble(done, tmp_path, capsys):
    assert ensemble.main(["--models", str(done.out), "--data", str(done.held_out), "--out",
                          str(tmp_path / "ens")]) == 0
    m = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert [mem["model"] for mem in m["members"]] == [str(done.out / "fold-0"), str(done.out / "fold-1")]
    assert evaluate.main(["--run", str(done.out), "--data", str(done.held_out), "--out",
                          str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["accuracy"] == pytest.approx(m["accuracy"])
    capsys.readouterr()
    err = one_line_error(capsys, ensemble.main, ["--models", done.out], "dermo ensemble")
    assert "none is held out" in err and "--data" in err
