"""ensemble.py on tiny generated data: soft vote == mean of the members' own evaluations."""
from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import fake_run, random_classifier
from sklearn.metrics import accuracy_score, roc_auc_score

from dermo.evaluation import ensemble
from dermo.evaluation import cli as evaluate
from dermo.data.synthetic import write_dataset

BIN = ["nevus", "others"]
MULTI = ["bcc", "mel", "scc"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    binary = write_dataset(root / "binary", "binary", n=24, size=64)
    multi = write_dataset(root / "multi", "multiclass", n=18, size=64)
    random_classifier(2, 64, 0, binary).save(root / "a.keras")
    random_classifier(2, 80, 1, binary).save(root / "b.h5")                      # another input size
    fake_run(root / "run-b", keras.models.load_model(root / "b.h5", compile=False), binary, "binary", BIN)
    fake_run(root / "run-multi", random_classifier(3, 64, 2, multi), multi, "multiclass", MULTI)
    random_classifier(3, 72, 3, multi).save(root / "c.keras")
    return {"root": root, "binary": binary, "multi": multi}


def single(kit, name, model, task, data) -> pd.DataFrame:
    out = kit["root"] / f"single-{name}"
    if not out.exists():
        argv = ["--model", str(model), "--task", task, "--data", str(data), "--out", str(out)]
        assert evaluate.main(argv) == 0
    return pd.read_csv(out / "predictions.csv")


def run(capsys, *argv):
    rc = ensemble.main([str(a) for a in argv])
    return rc, capsys.readouterr()


def binary_pair(kit, capsys, name, *extra):
    """The single evaluations of a.keras and run-b, and their ensemble's (predictions, out folder)."""
    root = kit["root"]
    a = single(kit, "a", root / "a.keras", "binary", kit["binary"])
    b = single(kit, "b", root / "b.h5", "binary", kit["binary"])
    out = root / name
    rc, cap = run(capsys, "--models", root / "a.keras", root / "run-b", "--data", kit["binary"],
                  "--task", "binary", "--out", out, *extra)
    assert rc == 0, cap.err
    return a, b, pd.read_csv(out / "predictions.csv"), out


def test_soft_vote_is_the_mean_of_single_model_predictions(kit, capsys):
    a, b, df, out = binary_pair(kit, capsys, "ens")
    assert list(df["path"]) == list(a["path"]) == list(b["path"])
    expected = (a[BIN].to_numpy() + b[BIN].to_numpy()) / 2
    np.testing.assert_allclose(df[BIN].to_numpy(), expected, atol=1e-6)
    m = json.loads((out / "metrics.json").read_text())
    y = df["label"].map(BIN.index).to_numpy()
    assert m["accuracy"] == pytest.approx(accuracy_score(y, expected.argmax(1)))
    assert m["auc"] == pytest.approx(roc_auc_score(y, expected[:, 1]), abs=1e-6)
    assert m["n"] == len(df) == 6 and m["n_dropped"] == 0
    assert [mem["accuracy"] for mem in m["members"]] == pytest.approx(
        [accuracy_score(y, a[BIN].to_numpy().argmax(1)), accuracy_score(y, b[BIN].to_numpy().argmax(1))])
    for name in ("report.txt", "confusion_matrix.png", "roc.png", "reliability.png"):
        assert (out / name).stat().st_size > 0


def test_weighted_multiclass_ensemble(kit, capsys):
    root = kit["root"]
    r = single(kit, "run-multi", root / "run-multi" / "model.keras", "multiclass", kit["multi"])
    c = single(kit, "c", root / "c.keras", "multiclass", kit["multi"])
    out = root / "ens-multi"
    rc, cap = run(capsys, "--models", root / "run-multi", root / "c.keras", "--data", kit["multi"],
                  "--out", out, "--weights", 1, 3)
    assert rc == 0, cap.err
    df = pd.read_csv(out / "predictions.csv")
    assert list(df["path"]) == list(r["path"]) == list(c["path"])
    expected = (r[MULTI].to_numpy() + 3 * c[MULTI].to_numpy()) / 4
    np.testing.assert_allclose(df[MULTI].to_numpy(), expected, atol=1e-6)
    m = json.loads((out / "metrics.json").read_text())
    y = df["label"].map(MULTI.index).to_numpy()
    assert m["accuracy"] == pytest.approx(accuracy_score(y, df[MULTI].to_numpy().argmax(1)))
    assert sorted(set(y)) == [0, 1, 2]
    assert m["auc"] == pytest.approx(roc_auc_score(y, df[MULTI].to_numpy(), multi_class="ovr"), abs=1e-6)


def test_rank_average_reports_scores_auc_and_no_probability_numbers(kit, capsys):
    from dermo.metrics.ensemble import rank_average

    a, b, df, out = binary_pair(kit, capsys, "ens-rank", "--method", "rank")
    expected = rank_average([a[BIN].to_numpy(), b[BIN].to_numpy()])
    np.testing.assert_allclose(df[BIN].to_numpy(), expected, atol=1e-9)
    m = json.loads((out / "metrics.json").read_text())
    y = df["label"].map(BIN.index).to_numpy()
    assert m["method"] == "rank" and m["outputs"] == "scores"
    assert m["auc"] == pytest.approx(roc_auc_score(y, expected[:, 1]))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, expected.argmax(1)))
    assert m["log_loss"] is None and m["ece"] is None and m["brier"] is None
    assert not (out / "reliability.png").exists() and "not probabilities" in (out / "report.txt").read_text()


def test_mismatched_classes_are_refused(kit, capsys):
    root = kit["root"]
    for argv in (["--models", root / "a.keras", root / "run-multi", "--data", kit["binary"],
                  "--task", "binary"],
                 ["--models", root / "run-b", root / "run-multi", "--data", kit["binary"]]):
        rc, cap = run(capsys, *argv, "--out", root / "refused")
        assert rc == 2 and cap.err.strip().count("\n") == 0, cap.err
        assert "disagree" in cap.err and "bcc, mel, scc" in cap.err and "nevus, others" in cap.err
    rc, cap = run(capsys, "--models", root / "c.keras", root / "run-multi", "--data", kit["binary"],
                  "--out", root / "refused")
    assert rc == 2 and "differ" in cap.err                        # models agree, the data does not
    assert not (root / "refused").exists()


def test_a_sample_skipped_by_preprocessing_is_dropped_and_reported(kit, capsys):
    root = kit["root"]
    data = root / "with-bad"
    shutil.copytree(kit["binary"], data)
    (data / "val" / "nevus" / "broken.jpg").write_bytes(b"not a jpeg")
    out = root / "ens-bad"
    rc, cap = run(capsys, "--models", root / "a.keras", "--task", "binary", "--data", data,
                  "--on-bad-image", "skip", "--out", out)
    assert rc == 0, cap.err
    m = json.loads((out / "metrics.json").read_text())
    df = pd.read_csv(out / "predictions.csv")
    assert m["n_dropped"] == 1 and m["n"] == len(df) == 6
    assert "broken.jpg" in cap.out and "dropped 1 image" in cap.out
    assert not df["path"].str.contains("broken").any()


def test_align_drops_a_sample_missing_from_any_member():
    from dermo.data.datasets import Sample

    samples = [Sample(f"/d/{i}.jpg", i % 2) for i in range(5)]
    per_model = [{s.path: i for i, s in enumerate(samples) if i != 1},
                 {s.path: i for i, s in enumerate(samples) if i != 3}]
    kept, dropped = ensemble.align(samples, per_model)
    assert [s.path for s in kept] == ["/d/0.jpg", "/d/2.jpg", "/d/4.jpg"] and dropped == 2
