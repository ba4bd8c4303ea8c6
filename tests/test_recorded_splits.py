"""evaluate.py and ensemble.py on a run's recorded split (split.csv), the refusal to score a model on images it
trained on, and the commands as the README writes them: `python evaluate.py` (the newest run) and
`python ensemble.py --models runs/a/model.keras runs/b/model.keras` (no --data). Fake run folders around one
random 64 px classifier; split.csv written here as train.py writes it."""
from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest
from conftest import fake_run, one_line_error, random_classifier

from dermo.evaluation import ensemble
from dermo.evaluation import cli as evaluate
from dermo.data.datasets import load_dataset
from dermo.data.synthetic import write_dataset
from dermo.run import splits

SIZE = 64
BIN = ["nevus", "others"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """runs/a and runs/b: the same model and data, a's split.csv = the data's folders; b's moves two of the
    val images into train (as a member trained on another split would); runs/c: other data; held/: a second
    dataset no run has seen; bare.keras: a model file outside any run folder."""
    root = tmp_path_factory.mktemp("recorded")
    data = write_dataset(root / "data", "binary", n=24, size=SIZE, workers=1)
    held = write_dataset(root / "held", "binary", n=16, size=SIZE, seed=5, workers=1)
    model = random_classifier(2, SIZE, 0, data)
    (root / "runs").mkdir()
    ds = load_dataset(data, "binary")
    a = fake_run(root / "runs" / "a", model, data, "binary", BIN)
    splits.write_split(a, ds)
    b = fake_run(root / "runs" / "b", model, data, "binary", BIN)
    moved = {ds.val[0].path, ds.val[-1].path}
    df = splits.split_frame(ds)
    df.loc[df["path"].isin(moved), "split"] = "train"
    df.to_csv(b / splits.SPLIT_CSV, index=False)
    c = fake_run(root / "runs" / "c", model, held, "binary", BIN)
    model.save(root / "bare.keras")
    return {"root": root, "data": data, "held": held, "ds": ds, "a": a, "b": b, "c": c, "moved": moved}


def run(capsys, main, *argv):
    rc = main([str(x) for x in argv])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return cap.out


def test_evaluate_run_scores_exactly_the_split_csv_rows(kit, tmp_path, capsys):
    subset = tmp_path / "subset"
    shutil.copytree(kit["a"], subset)
    df = pd.read_csv(subset / splits.SPLIT_CSV, keep_default_na=False)
    keep = df[df["split"] == "train"].index.tolist() + df[df["split"] == "val"].index[:3].tolist()
    df.loc[keep].to_csv(subset / splits.SPLIT_CSV, index=False)
    run(capsys, evaluate.main, "--run", subset)
    m = json.loads((subset / "eval-val" / "metrics.json").read_text())
    preds = pd.read_csv(subset / "eval-val" / "predictions.csv")
    assert m["n"] == 3 and list(preds["path"]) == list(df.loc[df["split"] == "val", "path"][:3])
    assert m["data"] == str(subset / splits.SPLIT_CSV) and m["mask_source"] == "given"
    # a run from before split.csv: its split is rebuilt from config.json, with a note
    (subset / splits.SPLIT_CSV).unlink()
    out = run(capsys, evaluate.main, "--run", subset, "--out", tmp_path / "old")
    assert "has no split.csv" in out and json.loads((tmp_path / "old" / "metrics.json").read_text())["n"] == 6


def test_evaluate_refuses_other_data_the_run_trained_on(kit, tmp_path, capsys):
    err = one_line_error(capsys, evaluate.main, ["--run", kit["b"], "--data", kit["data"]], "dermo evaluate")
    assert err == (f"{kit['data']}: 2 of the 6 val images were used in training ({kit['b']}: 2; same path, same "
                   "content or same group); evaluate on held-out images, or pass --split train to score training "
                   "images on purpose, or pass --drop-training-images to score the rest")
    run(capsys, evaluate.main, "--run", kit["b"], "--data", kit["held"], "--out", tmp_path / "held")
    assert json.loads((tmp_path / "held" / "metrics.json").read_text())["n"] == 4
    assert not (kit["b"] / "eval-val").exists()


def test_evaluate_without_options_takes_the_newest_run(kit, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = one_line_error(capsys, evaluate.main, [], "dermo evaluate")
    assert err.startswith(f"no finished run under {tmp_path / 'runs'}") and "--run RUN" in err
    for name, stamp in (("old", 1_000_000), ("new", 2_000_000)):
        shutil.copytree(kit["a"], tmp_path / "runs" / name)
        os.utime(tmp_path / "runs" / name / "config.json", (stamp, stamp))
    out = run(capsys, evaluate.main)
    assert "evaluating the most recent run runs/new" in out
    assert (tmp_path / "runs" / "new" / "eval-val" / "metrics.json").exists()
    assert not (tmp_path / "runs" / "old" / "eval-val").exists()


def test_ensemble_of_model_files_in_run_folders_needs_no_data(kit, tmp_path, capsys):
    pair = tmp_path / "pair"
    shutil.copytree(kit["a"], pair)
    out = tmp_path / "ens"
    run(capsys, ensemble.main, "--models", kit["a"] / "model.keras", pair / "model.keras", "--out", out)
    m = json.loads((out / "metrics.json").read_text())
    preds = pd.read_csv(out / "predictions.csv")
    assert m["n"] == 6 and m["data"] == str(kit["a"] / splits.SPLIT_CSV)
    assert list(preds["path"]) == [s.path for s in kit["ds"].val]


def test_ensemble_refuses_members_scored_on_their_training_images(kit, tmp_path, capsys):
    err = one_line_error(capsys, ensemble.main, ["--models", kit["a"], kit["b"] / "model.keras"], "dermo ensemble")
    assert err.startswith(f"{kit['a'] / splits.SPLIT_CSV}: 2 of the 6 val images were used in training "
                          f"({kit['b'] / 'model.keras'}: 2; same path, same content or same group); members must be scored on "
                          "images none of them")
    err = one_line_error(capsys, ensemble.main, ["--models", kit["a"], kit["b"], "--data", kit["data"]],
                         "dermo ensemble")
    assert err.startswith(f"{kit['data']}: 2 of the 6 val images were used in training ({kit['b']}: 2;")
    out = tmp_path / "held"
    run(capsys, ensemble.main, "--models", kit["a"], kit["b"], "--data", kit["held"], "--out", out)
    assert json.loads((out / "metrics.json").read_text())["n"] == 4


def test_ensemble_without_data_one_line_errors(kit, capsys):
    err = one_line_error(capsys, ensemble.main, ["--models", kit["a"], kit["c"] / "model.keras"], "dermo ensemble")
    assert err.startswith("the models were trained on different data (") and "pass --data DIR|CSV" in err
    assert str(kit["data"]) in err and str(kit["held"]) in err
    err = one_line_error(capsys, ensemble.main, ["--models", kit["a"], kit["root"] / "bare.keras"],
                         "dermo ensemble")
    assert err == (f"{kit['root'] / 'bare.keras'}: not in a run folder (no config.json beside it), so there is "
                   "no data to take; pass --data DIR|CSV")


def test_model_file_inside_a_run_folder_is_that_runs_model(kit, tmp_path, capsys):
    """evaluate.py --model RUN/model.keras scores the run's recorded split (no --data needed) and refuses the
    run's training images in --data, exactly as --run RUN does."""
    run(capsys, evaluate.main, "--run", kit["b"], "--out", tmp_path / "as-run")
    out = run(capsys, evaluate.main, "--model", kit["b"] / "model.keras", "--out", tmp_path / "as-model")
    assert f"scoring the run's 4 val images ({kit['b'] / splits.SPLIT_CSV})" in out
    assert (pd.read_csv(tmp_path / "as-model" / "predictions.csv")
            .equals(pd.read_csv(tmp_path / "as-run" / "predictions.csv")))
    err = one_line_error(capsys, evaluate.main, ["--model", kit["b"] / "model.keras", "--data", kit["data"]],
                         "dermo evaluate")
    assert err.startswith(f"{kit['data']}: 2 of the 6 val images were used in training ({kit['b']}: 2;")
    err = one_line_error(capsys, evaluate.main, ["--model", kit["root"] / "bare.keras", "--task", "binary"],
                         "dermo evaluate")
    assert err.startswith(f"{kit['root'] / 'bare.keras'}: not inside a run folder")
    # a copy outside its run folder cannot know its training images: scored, with a note saying so
    out = run(capsys, evaluate.main, "--model", kit["root"] / "bare.keras", "--task", "binary", "--data",
              kit["data"], "--out", tmp_path / "bare")
    assert (f"note: {kit['root'] / 'bare.keras'} is not in a run folder; its training images are unknown, so whether "
            "it trained on these images is not checked") in out


@pytest.fixture(scope="module")
def grouped_run(kit):
    """runs/g: run a's split with a lesion id per image (--group-column lesion); scoring.csv (no split column):
    a training image's bytes under a new name, a held-out image of a training lesion, two fresh held-out ones.
    The ids look like numbers with leading zeros ("007"): read as numbers, the lesion mate would go unseen."""
    root, ds = kit["root"], kit["ds"]
    g = shutil.copytree(kit["a"], root / "runs" / "g")
    cfg = json.loads((g / "config.json").read_text())
    (g / "config.json").write_text(json.dumps({**cfg, "group_column": "lesion"}))
    df = pd.read_csv(g / splits.SPLIT_CSV, keep_default_na=False)
    df["group"] = [f"{i:03d}" for i in range(len(df))]
    df.to_csv(g / splits.SPLIT_CSV, index=False)
    trained = df[df["split"] == "train"].iloc[0]
    copy = root / "copy.jpg"
    copy.write_bytes(open(trained["path"], "rb").read())
    held = load_dataset(kit["held"], "binary").val[:3]
    rows = [(copy, trained["label"], "9000"), (held[0].path, BIN[held[0].label], trained["group"])]
    rows += [(s.path, BIN[s.label], f"9{i:03d}") for i, s in enumerate(held[1:], 1)]
    pd.DataFrame(rows, columns=["image", "label", "lesion"]).to_csv(root / "scoring.csv", index=False)
    return g, root / "scoring.csv"


def test_copies_and_lesion_mates_of_training_images_are_refused_or_dropped(grouped_run, capsys):
    """A data set without a split is scored whole (4 images, not a 20 % draw); a copy of a training image under
    another name and another photo of a training lesion are refused in one line, or dropped and counted."""
    g, csv = grouped_run
    err = one_line_error(capsys, evaluate.main, ["--run", g, "--data", csv], "dermo evaluate")
    assert err.startswith(f"{csv}: 2 of the 4 images were used in training ({g}: 2; same path, same content or "
                          "same group)") and err.endswith("--drop-training-images to score the rest")
    out = run(capsys, evaluate.main, "--run", g, "--data", csv, "--drop-training-images")
    assert f"dropped 2 of the 4 images that were used in training ({g}: 2;" in out
    assert f"scoring 2 images of {csv} (whole: it has no train/val split)" in out
    m = json.loads((g / "eval-scoring" / "metrics.json").read_text())
    assert m["n"] == 2 and m["split"] == "all"
    assert not (g / "eval-val").exists()                          # the run's own evaluation is not touched
    out = run(capsys, evaluate.main, "--run", g, "--data", csv, "--drop-training-images")
    assert f"writing {g / 'eval-scoring-2'}" in out and (g / "eval-scoring-2" / "metrics.json").exists()
    err = one_line_error(capsys, ensemble.main, ["--models", g, kit_pair(g), "--data", csv], "dermo ensemble")
    assert err.startswith(f"{csv}: 2 of the 4 images were used in training ({g}: 2, ")


def kit_pair(g):
    """A second member: a copy of run g."""
    pair = g.parent / "g2"
    if not pair.exists():
        shutil.copytree(g, pair)
    return pair
