"""Clear errors for user mistakes: train.py, evaluate.py and ensemble.py answer each with exit status 2 and
one line on stderr ("<prog>: error: ...") that names the fix — no traceback, nothing trained, and for
mistakes in the options no run folder left behind."""
from __future__ import annotations

import json

import pytest
from conftest import one_line_error

from dermo.evaluation import ensemble
from dermo.evaluation import cli as evaluate
from dermo.training import cli as train
from dermo.data.synthetic import write_dataset
from dermo.run import folder as runs
from dermo.run.config import TrainConfig

SIZE = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("user-errors") / "binary", "binary", n=12, size=SIZE,
                         workers=1)


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory, data):
    """A folder of 3 classes (a, b, c), 4 images each, made of the binary set's images."""
    root = tmp_path_factory.mktemp("three") / "abc"
    images = sorted(data.rglob("syn*.jpg"))
    for i, cls in enumerate("abc"):
        (root / cls).mkdir(parents=True)
        for img in images[4 * i:4 * i + 4]:
            (root / cls / img.name).write_bytes(img.read_bytes())
    return root


def tiny(data, out, *extra):
    return ["--data", data, "--task", "binary", "--image-size", SIZE, "--batch-size", 8, "--epochs", 1,
            "--weights", "none", "--workers", 1, "--out", out, *extra]


# ---------------------------------------------------------------- train.py: options, refused up front

@pytest.mark.parametrize("extra, expected", [
    (["--backbone", "B9"], "unknown backbone 'B9'; choose one of B0, B1"),
    (["--backbone", "resnet50"], "unknown backbone 'resnet50'"),
    (["--image-size", "16"], "--image-size 16 is below the minimum 32 for EfficientNet B0"),
    (["--weights", "{tmp}/gone.h5"], "weights file {tmp}/gone.h5 not found; use imagenet, noisy-student"),
    (["--epochs", "0"], "--epochs 0: train for at least 1 epoch"),
    (["--batch-size", "0"], "--batch-size 0: use at least 1"),
    (["--workers", "0"], "--workers 0: use at least 1"),
    (["--val-fraction", "1.5"], "--val-fraction 1.5: use a share between 0 and 1"),
    (["--learning-rate", "-1"], "--learning-rate -1.0: must be positive"),
    (["--lambda-cskl", "-0.1"], "--lambda-cskl -0.1: loss weights must be 0 (off) or more"),
    (["--lambda-outside", "-1"], "--lambda-outside -1.0: loss weights must be 0 (off) or more"),
    (["--lambda-rrr", "-1"], "--lambda-rrr -1.0: loss weights must be 0 (off) or more"),
    (["--lambda-rrr", "0.001", "--mixed-precision"], "--lambda-rrr 0.001 with --mixed-precision: RRR's input "
                                                     "gradients are not loss-scaled"),
    (["--epochs", "3", "--warmup-epochs", "1"], "--warmup-epochs 1 needs --lr-schedule cosine"),
    (["--lr-schedule", "cosine", "--warmup-epochs", "1"], "--warmup-epochs 1: use 0 or more, fewer than --epochs 1"),
    (["--backbone", "lite0", "--weights", "noisy-student"], "--weights noisy-student exists for B0–B7 only; lite0 "
                                                            "takes imagenet, none or a weights file"),
])
def test_train_option_mistakes_are_refused_before_anything_is_written(data, tmp_path, capsys, extra,
                                                                        expected):
    extra = [e.format(tmp=tmp_path) for e in extra]
    out = tmp_path / "run"
    err = one_line_error(capsys, train.main, tiny(data, out, *extra), "dermo train")
    assert expected.format(tmp=tmp_path) in err
    assert not out.exists(), "a refused option left a run folder behind"


@pytest.mark.parametrize("extra, option", [(["--data", "{data}"], "--data"), (["--task", "multiclass"], "--task"),
                                           (["--label-column", "dx"], "--label-column")])
@pytest.mark.parametrize("demo", [["--demo"], ["--demo", "real"]])
def test_demo_refuses_the_options_it_decides_instead_of_ignoring_them(data, tmp_path, capsys, demo, extra, option):
    argv = [*demo, *[e.format(data=data) for e in extra], "--out", tmp_path / "run"]
    err = one_line_error(capsys, train.main, argv, "dermo train")
    assert f"--demo trains on its own data, so {option} " in err and f"drop {option}" in err
    assert not (tmp_path / "run").exists()


def test_demo_options_the_user_types_win_and_the_real_demo_is_lite0_kept_at_its_last_epoch(tmp_path):
    from dermo.training.cli import REAL_DEMO_DATA, parse_args, resolve_config

    cfg = resolve_config(parse_args(["--demo", "real", "--epochs", "3", "--out", str(tmp_path / "r")]))
    assert (cfg.demo, cfg.backbone, cfg.weights, cfg.monitor, cfg.epochs) == ("real", "lite0", "imagenet", "last", 3)
    assert cfg.data == str(REAL_DEMO_DATA) and cfg.label_column == "diagnosis" and REAL_DEMO_DATA.exists()
    assert len(list((REAL_DEMO_DATA.parent / "images").glob("*.jpg"))) == 439
    assert (REAL_DEMO_DATA.parent / "ATTRIBUTION.txt").exists()


def test_train_task_data_mismatch_names_the_classes_and_the_fix(three_classes, tmp_path, capsys):
    err = one_line_error(capsys, train.main, tiny(three_classes, tmp_path / "run"), "dermo train")
    assert "task binary expects classes nevus, others but the data has a, b, c" in err
    assert "--task auto" in err
    assert not (tmp_path / "run" / runs.CONFIG).exists()


def test_a_failed_training_leaves_no_run_folder_behind(data, tmp_path, capsys, monkeypatch):
    """Data that cannot train (one class) after the options passed: the folder this command made is removed,
    also the default runs/<task>-<backbone>-<time>/ one; a folder that was there before is left alone."""
    import pandas as pd

    csv = tmp_path / "one.csv"
    pd.DataFrame({"image": [str(p) for p in sorted(data.rglob("syn*.jpg"))[:4]], "label": "nevus"}).to_csv(csv)
    err = one_line_error(capsys, train.main, tiny(csv, tmp_path / "run"), "dermo train")
    assert "class" in err and not (tmp_path / "run").exists()
    monkeypatch.chdir(tmp_path)
    argv = [a for a in tiny(csv, "x") if a not in ("--out", "x")]
    one_line_error(capsys, train.main, argv, "dermo train")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    (tmp_path / "mine").mkdir()
    one_line_error(capsys, train.main, tiny(csv, tmp_path / "mine"), "dermo train")
    assert (tmp_path / "mine").is_dir()


def test_offline_imagenet_download_is_refused_before_any_preprocessing(data, tmp_path, capsys, monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    err = one_line_error(capsys, train.main, tiny(data, tmp_path / "run", "--weights", "imagenet", "--cache-dir",
                                                  tmp_path / "cache"), "dermo train")
    assert err.startswith("could not download the imagenet weights for B0. Offline: fetch")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()      # nothing preprocessed


def test_train_missing_data(tmp_path, capsys):
    err = one_line_error(capsys, train.main, ["--out", tmp_path / "run"], "dermo train")
    assert "--data is required (or --demo, or --resume --out RUN)" in err
    err = one_line_error(capsys, train.main, tiny(tmp_path / "nowhere", tmp_path / "run"), "dermo train")
    assert f"{tmp_path / 'nowhere'}: data path not found" in err


def test_train_resume_mistakes(data, tmp_path, capsys):
    err = one_line_error(capsys, train.main, ["--resume", "--data", data], "dermo train")
    assert "--resume needs the run folder to continue: --resume RUN (or --resume --out RUN)" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (empty, tmp_path / "missing"):
        err = one_line_error(capsys, train.main, ["--resume", "--out", out], "dermo train")
        assert f"{out}: nothing to resume" in err and "start without --resume" in err
    # a run that stopped before its first checkpoint
    started = tmp_path / "started"
    runs.write_json(started / runs.RESUME_CONFIG, {**json.loads(TrainConfig(data=str(data)).to_json()),
                                                   "image_size": SIZE, "weights": "none"})
    err = one_line_error(capsys, train.main, ["--resume", "--out", started], "dermo train")
    assert f"{started}: nothing to resume (no backup/ checkpoint); start without --resume" in err
    # a finished run without its last state: no ping-pong between "nothing to resume" and "already holds a run"
    (started / runs.CONFIG).write_text("{}")
    err = one_line_error(capsys, train.main, ["--resume", "--out", started], "dermo train")
    assert "finished without keeping its last state" in err and f"dermo evaluate --run {started}" in err
    assert "another --out" in err
    err = one_line_error(capsys, train.main, tiny(data, started), "dermo train")
    assert "already holds a run; pass --resume to continue it or choose another --out" in err
    assert sorted(p.name for p in started.iterdir()) == [runs.CONFIG, runs.RESUME_CONFIG]


@pytest.mark.slow
def test_resume_refuses_other_options_and_extends_a_finished_run(tiny_run, tmp_path, capsys):
    """`--resume --out R --epochs 3 --image-size 128` on (a copy of) the session's finished 2-epoch run:
    --image-size differs from the run's (refused in one line naming it, nothing trained); --epochs 3 alone trains
    the finished run one epoch longer, saying so; without it, one line says how to extend the run."""
    import shutil

    import pandas as pd

    out = shutil.copytree(tiny_run, tmp_path / "run")
    err = one_line_error(capsys, train.main, ["--resume", "--out", out, "--epochs", 3, "--image-size", 128],
                         "dermo train")
    assert err == (f"{out}: --resume continues the run as it was started, and --image-size 128 (the run's: 64) "
                   "differ from it; leave them out, or train anew with another --out")
    err = one_line_error(capsys, train.main, ["--resume", "--out", out], "dermo train")
    assert err.startswith(f"{out}: this run already finished (it trained all 2 epochs; pass --epochs N with N > 2)")
    assert train.main(["--resume", "--out", str(out), "--epochs", "3"]) == 0
    assert "extending the run: --epochs 2 -> 3" in capsys.readouterr().out
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [0, 1, 2]
    assert json.loads((out / runs.CONFIG).read_text())["epochs"] == 3


# ---------------------------------------------------------------- evaluate.py / ensemble.py

@pytest.fixture
def fake_model(tmp_path):
    """A file with a model name that is never loaded: these mistakes are found before loading."""
    p = tmp_path / "m.keras"
    p.write_bytes(b"not read")
    return p


def test_run_folder_without_config_json(data, tmp_path, capsys):
    notarun = tmp_path / "notarun"
    notarun.mkdir()
    (notarun / "model.keras").write_bytes(b"")
    for main, argv, prog in ((evaluate.main, ["--run", notarun], "dermo evaluate"),
                             (ensemble.main, ["--models", notarun, "--data", data], "dermo ensemble")):
        err = one_line_error(capsys, main, argv, prog)
        assert f"{notarun}: no config.json" in err and "train with dermo train" in err
    assert sorted(p.name for p in notarun.iterdir()) == ["model.keras"]


def test_missing_model_file_in_an_ensemble(data, tmp_path, fake_model, capsys):
    err = one_line_error(capsys, ensemble.main,
                         ["--models", fake_model, tmp_path / "gone.h5", "--data", data], "dermo ensemble")
    assert f"{tmp_path / 'gone.h5'}: model file not found" in err
    err = one_line_error(capsys, ensemble.main, ["--models", tmp_path / "notes.txt", "--data", data],
                         "dermo ensemble")
    assert "neither a run folder nor a .h5/.keras model file" in err


def test_task_data_mismatch_in_evaluate_and_ensemble(three_classes, fake_model, tmp_path, capsys):
    out = tmp_path / "out"
    err = one_line_error(capsys, evaluate.main, ["--model", fake_model, "--task", "binary", "--data",
                                                 three_classes, "--out", out], "dermo evaluate")
    assert "task binary expects classes nevus, others but the data has a, b, c" in err
    err = one_line_error(capsys, ensemble.main, ["--models", fake_model, "--task", "binary", "--data",
                                                 three_classes, "--out", out], "dermo ensemble")
    assert "classes a, b, c differ from the models' (nevus, others)" in err
    assert not out.exists()


def test_evaluate_source_mistakes(data, fake_model, tmp_path, capsys):
    err = one_line_error(capsys, evaluate.main, ["--model", fake_model, "--images", data / "val"],
                         "dermo evaluate")
    assert "--images with --model needs --task binary|multiclass" in err
    err = one_line_error(capsys, evaluate.main, ["--model", fake_model, "--task", "binary", "--data",
                                                 tmp_path / "nowhere"], "dermo evaluate")
    assert f"{tmp_path / 'nowhere'}: data path not found" in err
    err = one_line_error(capsys, evaluate.main, ["--model", fake_model, "--task", "binary", "--images",
                                                 tmp_path], "dermo evaluate")
    assert f"{tmp_path}: no images found" in err
    err = one_line_error(capsys, evaluate.main, ["--model", fake_model, "--task", "binary", "--images",
                                                 tmp_path / "nonexistent"], "dermo evaluate")
    assert err == f"{tmp_path / 'nonexistent'}: not found"
    err = one_line_error(capsys, evaluate.main, ["--model", tmp_path, "--task", "binary", "--data", data],
                         "dermo evaluate")
    assert "is a folder, not a model file (evaluate a run folder with --run)" in err
    err = one_line_error(capsys, evaluate.main, ["--run", fake_model], "dermo evaluate")
    assert err == f"{fake_model}: a model file, not a run folder; evaluate it with --model {fake_model}"


def test_resume_takes_the_run_folder_as_its_value_and_the_demo_knows_its_own(tmp_path, monkeypatch):
    from dermo.training.cli import parse_args, resolve_config

    run = tmp_path / "r"
    runs.write_json(run / runs.RESUME_CONFIG, json.loads(TrainConfig(data=str(tmp_path), image_size=SIZE).to_json()))
    cfg = resolve_config(parse_args(["--resume", str(run)]))
    assert cfg.resume is True and cfg.out == str(run) and cfg.image_size == SIZE
    with pytest.raises(Exception, match="name two run folders"):
        resolve_config(parse_args(["--resume", str(run), "--out", str(tmp_path / "other")]))
    monkeypatch.chdir(tmp_path)
    runs.write_json(tmp_path / "runs" / "demo" / runs.RESUME_CONFIG, json.loads(TrainConfig(data="d").to_json()))
    assert resolve_config(parse_args(["--demo", "--resume"])).out == "runs/demo"


def test_a_val_split_without_a_class_is_said_and_refused_for_monitors_that_need_every_class(data, tmp_path, capsys):
    """A CSV whose split column leaves no 'others' image in val: --monitor val_auc (undefined) and
    val_balanced_accuracy are refused in one line before anything is preprocessed; val_accuracy trains on, with a
    note. Labels 0/1 with an empty cell are read as the text classes '0' and '1' (not '0.0')."""
    import pandas as pd

    from dermo.training.inputs import load_data

    images = sorted(data.rglob("syn*.jpg"))
    labels = ["0" if "nevus" in p.parts else "1" for p in images]
    splits = ["val" if lab == "0" and i % 3 == 0 else "train" for i, lab in enumerate(labels)]
    frame = pd.DataFrame({"image": [str(p) for p in images], "label": labels, "split": splits})
    frame.loc[len(frame)] = [str(images[0]), None, "train"]                   # an unlabelled row
    csv = tmp_path / "m.csv"
    frame.to_csv(csv, index=False)
    for monitor in ("val_auc", "val_balanced_accuracy"):
        err = one_line_error(capsys, train.main, tiny(csv, tmp_path / monitor, "--task", "auto", "--monitor",
                                                      monitor), "dermo train")
        assert err == (f"{csv}: the val split has no image of class 1, so --monitor {monitor} is undefined; use "
                       "--monitor val_accuracy or val_kappa, or a split with every class in val")
    notes = []
    cfg = TrainConfig(data=str(csv), task="auto", image_size=SIZE, out=str(tmp_path / "ok"), workers=1)
    ds, _, _ = load_data(cfg, notes.append)
    assert ds.classes == ["0", "1"]
    assert f"note: {csv}: the val split has no image of class 1; its recall, the AUC and the balanced accuracy " \
           "are not measured" in notes
