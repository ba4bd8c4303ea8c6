"""Bad input end to end: one dataset holding every kind of broken file goes through train.py, evaluate.py
(labelled and --images) and ensemble.py. With --on-bad-image skip each broken file is skipped and listed
(and the odd-but-valid files — grayscale, RGBA, 16-bit, no mask — are used); without it the tool stops
before any work with one line naming the file and the problem. Also: model files carrying code or
garbage are refused, and paths from a CSV never make a tool write outside its output folder."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
from conftest import one_line_error

from dermo.evaluation import ensemble
from dermo.evaluation import cli as evaluate
from dermo.training import cli as train
from dermo.data.datasets import load_dataset
from dermo.data.imageio import write_png
from dermo.data.synthetic import write_dataset
from dermo.model.network import build_graph
from dermo.preprocessing import cli as preprocess
from dermo.run import folder as runs

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
# file name -> the problem its one line must state (the mask line names the mask file)
BROKEN = {"clip.png": "truncated image file", "cut.jpg": "truncated image file",
          "zero.jpg": "empty file (0 bytes)", "notes.jpg": "not a readable image",
          "huge.png": "image too large (10000x10000 pixels", "bomb.png": "image too large (over",
          "offmask_mask.png": "mask size 32x64 does not match its image (64x64)"}
CSV_ONLY = {"gone.jpg": "listed in manifest.csv but not found",
            "gone_mask.png": "mask listed in manifest.csv but not found"}
ACCEPTED = ("grey.png", "rgba.png", "deep.png", "nomask.jpg", "lostmask.jpg")
EVAL_FILES = ["cams.png", "confusion_matrix.png", "focus.png", "metrics.json", "predictions.csv", "reliability.png",
              "report.txt", "roc.png"]


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header (and end) claiming width x height pixels, with almost no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """data/{train,val}/{nevus,others}/ (24 generated images + every broken kind + odd valid ones) and
    lists/manifest.csv naming all of them as ../data/... (one by absolute path) plus two missing files."""
    root = tmp_path_factory.mktemp("bad-input")
    data = write_dataset(root / "data", "binary", n=24, size=SIZE, workers=1)
    src = sorted((data / "train" / "nevus").glob("syn*.jpg"))[0]
    rgb = cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2RGB)                         # (64,64,3) uint8
    jpg, png = src.read_bytes(), cv2.imencode(".png", rgb)[1].tobytes()
    tn, to, vn, vo = (data / s / c for s in ("train", "val") for c in ("nevus", "others"))
    (tn / "clip.png").write_bytes(png[:len(png) // 2])
    (tn / "cut.jpg").write_bytes(jpg[:len(jpg) // 2])
    (tn / "zero.jpg").write_bytes(b"")
    (to / "notes.jpg").write_text("patient notes, not a picture\n")
    (to / "huge.png").write_bytes(png_header_only(10_000, 10_000))                  # 100 Mpx > 80 Mpx
    (vn / "bomb.png").write_bytes(png_header_only(20_000, 20_000))                  # Pillow's own refusal
    (vo / "offmask.jpg").write_bytes(jpg)
    write_png(vo / "offmask_mask.png", np.full((64, 32), 255, np.uint8))            # other aspect ratio
    cv2.imwrite(str(tn / "grey.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    cv2.imwrite(str(to / "rgba.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))
    cv2.imwrite(str(vn / "deep.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    (tn / "nomask.jpg").write_bytes(jpg)                                             # mask generated
    (vo / "lostmask.jpg").write_bytes(jpg)
    lists = root / "lists"
    lists.mkdir()
    rows = []
    for img in sorted(p for p in data.rglob("*") if p.suffix in (".jpg", ".png") and "_mask" not in p.name):
        mask = img.with_name(img.stem + "_mask.png")
        rows.append({"image": f"../{img.relative_to(root)}", "label": img.parent.name,
                     "split": img.parent.parent.name,
                     "mask": f"../{mask.relative_to(root)}" if mask.exists() else ""})
    rows[-1]["image"] = str(root / rows[-1]["image"][3:])                        # one absolute path
    rows.append({"image": "../data/train/nevus/gone.jpg", "label": "nevus", "split": "train", "mask": ""})
    lost = next(r for r in rows if r["image"].endswith("lostmask.jpg"))
    lost["mask"] = "../data/val/others/gone_mask.png"
    pd.DataFrame(rows).to_csv(lists / "manifest.csv", index=False)
    return {"root": root, "data": data, "csv": lists / "manifest.csv"}


@pytest.fixture(scope="module")
def model_files(bad):
    """An untrained 64 px B0 classifier saved as .keras and .h5 (predictions are not the point here)."""
    keras.utils.set_random_seed(0)
    inputs, out = build_graph("B0", 2, SIZE, weights="none")
    model = keras.Model(inputs, out["probs"])
    paths = bad["root"] / "m.keras", bad["root"] / "m.h5"
    for p in paths:
        model.save(p)
    return paths


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def first_broken(samples) -> tuple[str, str]:
    """(path, problem) of the first broken sample in dataset order: where a tool must stop."""
    for s in samples:
        for path in (s.path, s.mask):
            if path and Path(path).name in BROKEN:
                return path, BROKEN[Path(path).name]
    raise AssertionError("no broken sample")


def assert_skipped(lines: list[str], expected: dict[str, str]) -> None:
    """Each expected file is skipped exactly once, with its problem; nothing else is."""
    named = {Path(line.split(": ")[0]).name: line for line in lines}
    assert len(named) == len(lines) == len(expected), lines
    for name, problem in expected.items():
        assert problem in named[name], named[name]
    assert not set(named) & set(ACCEPTED)


def skipped_in(out: str, prefix: str) -> list[str]:
    return [line.strip()[len(prefix):] for line in out.splitlines() if line.strip().startswith(prefix)]


# ---------------------------------------------------------------- train.py
# (the fixture's nomask/offmask/lostmask.jpg are byte copies of a training image on both sides of the split:
# training runs pass --allow-duplicates, which test_splits.py covers)

def test_train_stops_at_the_first_broken_file_with_one_line(bad, tmp_path, capsys):
    path, problem = first_broken(load_dataset(bad["data"], "binary").train)
    assert Path(path).name == "clip.png"
    out = tmp_path / "run"
    err = one_line_error(capsys, train.main, ["--data", bad["data"], "--task", "binary", "--image-size", SIZE,
                                              "--weights", "none", "--epochs", 1, "--allow-duplicates",
                                              "--out", out], "dermo train")
    assert err.startswith(f"{path}: {problem}") and err.endswith("; pass --on-bad-image skip to skip (and list) "
                                                                  "such files")
    assert not out.exists()                           # nothing trained: no half-made run folder left behind
    # a CSV row naming a missing file stops it the same way, before any preprocessing
    err = one_line_error(capsys, train.main, ["--data", bad["csv"], "--image-size", SIZE, "--weights", "none",
                                              "--out", tmp_path / "csv-run"], "dermo train")
    assert err == (f"{bad['data'] / 'val' / 'others' / 'gone_mask.png'}: {CSV_ONLY['gone_mask.png']}; pass "
                   "--on-bad-image skip to skip (and list) such files")


def test_train_as_a_command_prints_exactly_one_line(bad, tmp_path):
    """The one subprocess: what a user sees — no TensorFlow start-up chatter, no libpng/libjpeg warnings
    from the decoders, no traceback; exit status 2."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", str(bad["data"]),
                           "--task", "binary", "--image-size", str(SIZE), "--weights", "none",
                           "--allow-duplicates", "--out", str(tmp_path / "run")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    path, problem = first_broken(load_dataset(bad["data"], "binary").train)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"dermo train: error: {path}: {problem} (data ends early); pass "
                                        "--on-bad-image skip to skip (and list) such files"]


@pytest.mark.slow
def test_train_skips_and_lists_every_broken_file(bad, tmp_path, capsys):
    out = tmp_path / "run"
    rc = train.main(["--data", str(bad["csv"]), "--image-size", str(SIZE), "--batch-size", "8",
                     "--epochs", "1", "--weights", "none", "--workers", "1", "--bn-recalibration-batches", "1",
                     "--on-bad-image", "skip", "--allow-duplicates", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    expected = {**BROKEN, **CSV_ONLY}
    assert f"skipped {len(expected)} bad file(s):" in cap.out
    listed = [line.strip() for line in cap.out.split(f"skipped {len(expected)} bad file(s):")[1].splitlines()
              if line.startswith("  ")]
    assert_skipped(listed, expected)
    config = json.loads((out / runs.CONFIG).read_text())
    assert config["skipped"] == listed
    assert (out / runs.MODEL_KERAS).exists()


def test_skipped_files_that_empty_a_val_class_are_refused_with_a_monitor_that_needs_it(bad, tmp_path, capsys):
    """The class check runs again after --on-bad-image skip: the val images of class others are all broken here,
    so --monitor val_balanced_accuracy (mean recall over every class) is refused in one line, not NaN all run."""
    frame = pd.read_csv(bad["csv"], keep_default_na=False)
    frame["image"] = [str((bad["csv"].parent / p).resolve()) if not Path(p).is_absolute() else p
                      for p in frame["image"]]
    frame["mask"] = [str((bad["csv"].parent / p).resolve()) if p else "" for p in frame["mask"]]
    val_others = (frame["split"] == "val") & (frame["label"] == "others")
    broken = frame["image"].map(lambda p: Path(p).name in ("offmask.jpg", "lostmask.jpg"))
    kept = frame[~val_others | broken]
    assert ((kept["split"] == "val") & (kept["label"] == "others")).sum() == 2
    csv = tmp_path / "m.csv"
    kept.to_csv(csv, index=False)
    err = one_line_error(capsys, train.main, ["--data", csv, "--image-size", SIZE, "--weights", "none",
                                              "--on-bad-image", "skip", "--allow-duplicates", "--monitor",
                                              "val_balanced_accuracy", "--out", tmp_path / "run"], "dermo train")
    assert "the val split has no image of class others after skipping bad files, so --monitor " \
           "val_balanced_accuracy is undefined" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- evaluate.py

def test_evaluate_labelled_data_error_then_skip(bad, model_files, tmp_path, capsys):
    model = model_files[0]
    path, problem = first_broken(load_dataset(bad["data"], "binary").val)
    argv = ["--model", model, "--task", "binary", "--data", bad["data"], "--out", tmp_path / "eval"]
    assert one_line_error(capsys, evaluate.main, argv, "dermo evaluate").startswith(f"{path}: {problem}")
    assert not (tmp_path / "eval").exists()
    assert evaluate.main([str(a) for a in argv + ["--on-bad-image", "skip"]]) == 0
    cap = capsys.readouterr()
    want = {k: BROKEN[k] for k in ("bomb.png", "offmask_mask.png")}
    assert_skipped(skipped_in(cap.out, "skipped: "), want)
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["n_skipped"] == 2 and len(m["skipped"]) == 2
    names = {Path(p).name for p in pd.read_csv(tmp_path / "eval" / "predictions.csv")["path"]}
    assert {"deep.png", "lostmask.jpg"} <= names and not names & {"bomb.png", "offmask.jpg"}


def test_evaluate_csv_with_bad_rows_writes_only_its_own_files(bad, model_files, tmp_path, capsys):
    """CSV paths climb with '..' and one is absolute: outputs still are the fixed names in --out only."""
    before = files_under(bad["root"])
    out = tmp_path / "eval"
    rc = evaluate.main(["--model", str(model_files[1]), "--task", "binary", "--data", str(bad["csv"]),
                        "--on-bad-image", "skip", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    # the rows naming missing files are checked for the whole manifest (the train row gone.jpg too)
    assert_skipped(skipped_in(cap.out, "skipped: "),
                   {**CSV_ONLY, **{k: BROKEN[k] for k in ("bomb.png", "offmask_mask.png")}})
    assert sorted(p.name for p in out.iterdir()) == EVAL_FILES
    assert files_under(bad["root"]) == before


def test_predicting_a_folder_of_images_error_then_skip(bad, model_files, tmp_path, capsys):
    folder = bad["data"] / "train"
    argv = ["--model", model_files[0], "--task", "binary", "--images", folder, "--out", tmp_path / "pred"]
    err = one_line_error(capsys, evaluate.main, argv, "dermo evaluate")
    assert err.startswith(f"{folder / 'nevus' / 'clip.png'}: truncated image file")
    assert evaluate.main([str(a) for a in argv + ["--on-bad-image", "skip"]]) == 0
    cap = capsys.readouterr()
    in_train = {k: v for k, v in BROKEN.items() if any((folder / c / k).exists() for c in ("nevus", "others"))}
    assert set(in_train) == {"clip.png", "cut.jpg", "zero.jpg", "notes.jpg", "huge.png"}
    assert_skipped(skipped_in(cap.out, "skipped: "), in_train)
    df = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    assert {"grey.png", "rgba.png", "nomask.jpg"} <= {Path(p).name for p in df["path"]}
    assert np.allclose(df[["nevus", "others"]].sum(axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------- ensemble.py

def test_ensemble_error_then_skip(bad, model_files, tmp_path, capsys):
    path, problem = first_broken(load_dataset(bad["data"], "binary").val)
    argv = ["--models", *model_files, "--task", "binary", "--data", bad["data"], "--out", tmp_path / "ens"]
    assert one_line_error(capsys, ensemble.main, argv, "dermo ensemble").startswith(f"{path}: {problem}")
    assert not (tmp_path / "ens").exists()
    assert ensemble.main([str(a) for a in argv + ["--on-bad-image", "skip"]]) == 0
    cap = capsys.readouterr()
    want = {k: BROKEN[k] for k in ("bomb.png", "offmask_mask.png")}
    for model in model_files:
        assert_skipped(skipped_in(cap.out, f"skipped by {model}: "), want)
    m = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert m["n_dropped"] == 2
    assert_skipped(m["skipped"], want)
    assert sorted(p.name for p in (tmp_path / "ens").iterdir()) == sorted(set(EVAL_FILES) - {"cams.png", "focus.png"})   # no CAMs in an ensemble


# ---------------------------------------------------------------- model files that must not be loaded

def test_models_with_code_or_garbage_are_refused(bad, tmp_path, capsys):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    lam = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    out = tmp_path / "out"
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"lambda{suffix}"
        lam.save(path)
        err = one_line_error(capsys, ensemble.main, ["--models", path, "--task", "binary",
                                                     "--data", bad["data"], "--out", out], "dermo ensemble")
        assert err.startswith(f"refusing to load {path}: it contains Python code (Lambda layer)")
    for main, argv, prog in ((evaluate.main, ["--model", garbage, "--task", "binary"], "dermo evaluate"),
                             (ensemble.main, ["--models", garbage, "--task", "binary"], "dermo ensemble")):
        err = one_line_error(capsys, main, argv + ["--data", bad["data"], "--out", out], prog)
        assert err.startswith(f"{garbage}: not a readable Keras model")
    inputs = keras.Input((64, 64, 3))          # a readable first member: every member loads before any predicts
    good = tmp_path / "good.keras"
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(inputs))).save(good)
    rc = ensemble.main([str(a) for a in ["--models", good, garbage, "--task", "binary", "--data", bad["data"],
                                         "--on-bad-image", "skip", "--out", out]])
    cap = capsys.readouterr()
    assert rc == 2 and cap.err.startswith(f"dermo ensemble: error: {garbage}: not a readable Keras model")
    assert "images at" not in cap.out and "skipped by" not in cap.out       # the first member predicted nothing
    assert not out.exists()


# ---------------------------------------------------------------- python -m dermo.preprocess

def test_preprocess_csv_paths_cannot_write_outside_the_output_folder(bad, tmp_path, capsys):
    src = sorted((bad["data"] / "train" / "nevus").glob("syn*.jpg"))
    (tmp_path / "outside.jpg").write_bytes(src[0].read_bytes())
    (tmp_path / "lists" / "sub").mkdir(parents=True)
    (tmp_path / "lists" / "sub" / "inside.jpg").write_bytes(src[1].read_bytes())
    csv = tmp_path / "lists" / "manifest.csv"
    pd.DataFrame({"image": ["../outside.jpg", str(src[2]), "sub/inside.jpg", "sub/../../outside"]}
                 ).to_csv(csv, index=False)
    before = files_under(tmp_path)
    out = tmp_path / "lists" / "OUTPUT"
    rc = preprocess.main([str(csv), str(out), "--size", "40", "--workers", "1"])
    cap = capsys.readouterr()
    assert rc == 2 and cap.err.strip().count("\n") == 0        # two rows name the same output file
    assert "same output name" in cap.err and "outside" in cap.err
    assert files_under(tmp_path) == before
    csv.write_text(csv.read_text().replace("sub/../../outside\n", ""))
    assert preprocess.main([str(csv), str(out), "--size", "40", "--workers", "1"]) == 0
    new = files_under(tmp_path) - before
    assert all(out in p.parents for p in new), sorted(map(str, new))
    assert {p.relative_to(out).as_posix() for p in new} == {
        "outside.png", "outside_mask.png", f"{src[2].stem}.png", f"{src[2].stem}_mask.png",
        "sub/inside.png", "sub/inside_mask.png"}
    assert preprocess.output_rel("../../etc/passwd") == Path("passwd")
    assert preprocess.output_rel("/abs/x.jpg") == Path("x")
    assert preprocess.output_rel("a/b.c.jpg") == Path("a/b.c")
