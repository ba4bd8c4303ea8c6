"""Splits users can trust: stratified group splits (--group-column), exact duplicates across train and val
(--allow-duplicates), and the run's split.csv — on tiny files, without training."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import one_line_error

from dermo.training import cli as train
from dermo.data import duplicates
from dermo.data.datasets import DataError, load_dataset
from dermo.data.synthetic import write_dataset
from dermo.run import splits
from dermo.run.folder import RunError

SIZE = 64


def _img(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))
    return path


@pytest.fixture
def grouped(tmp_path):
    """60 images of 26 lesions (1-4 images each, one class per lesion; 2:1 classes by lesion) and 6 images
    without a lesion id; manifest columns image, label, lesion."""
    rows, i = [], 0
    for g in range(26):
        for _ in range(1 + g % 4):
            rows.append({"image": f"i{i:03d}.png", "label": "a" if g % 3 else "b", "lesion": f"L{g:02d}"})
            i += 1
    for k in range(6):
        rows.append({"image": f"i{i:03d}.png", "label": "ab"[k % 2], "lesion": ""})
        i += 1
    for n, row in enumerate(rows):
        _img(tmp_path / "images" / row["image"], n)
    pd.DataFrame(rows).to_csv(tmp_path / "meta.csv", index=False)
    return tmp_path / "meta.csv"


def _groups(samples) -> set[str]:
    return {s.group for s in samples if s.group is not None}


def test_group_split_keeps_lesions_apart_stratified_and_seeded(grouped):
    total = len(pd.read_csv(grouped))
    by_seed = {}
    for seed in (0, 0, 1, 2):
        ds = load_dataset(grouped, seed=seed, group_column="lesion")
        assert not _groups(ds.train) & _groups(ds.val)
        assert len(ds.train) + len(ds.val) == total and len({s.path for s in ds.train + ds.val}) == total
        assert 0.15 <= len(ds.val) / total <= 0.25                          # round(1/0.2) = 5 folds
        share = Counter(s.label for s in ds.val)[1] / len(ds.val)          # class "b"
        overall = Counter(s.label for s in ds.train + ds.val)[1] / total
        assert share == pytest.approx(overall, abs=0.06), (seed, share, overall)
        key = [s.path for s in ds.val]
        if seed in by_seed:
            assert key == by_seed[seed]                                     # same seed, same split
        by_seed[seed] = key
    assert len({tuple(v) for v in by_seed.values()}) == 3                  # other seeds, other splits
    ungrouped = [s for s in ds.train + ds.val if s.group is None]
    assert len(ungrouped) == 6                                              # each its own group
    assert 0.3 <= len(load_dataset(grouped, val_fraction=0.34, group_column="lesion").val) / total <= 0.37


def test_group_column_mistakes_are_one_line(grouped, tmp_path):
    df = pd.read_csv(grouped, dtype=str, keep_default_na=False)
    df["split"] = ["val" if i % 5 == 0 else "train" for i in range(len(df))]   # lesions straddle
    df.to_csv(tmp_path / "split.csv", index=False)
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "split.csv", group_column="lesion")
    msg = str(e.value)
    assert "\n" not in msg and "group(s) of column 'lesion' have images in both train and val" in msg
    both = sorted(set(df.loc[df.split == "train", "lesion"]) & set(df.loc[df.split == "val", "lesion"]) - {""})
    assert msg.startswith(f"{tmp_path / 'split.csv'}: {len(both)} group(s)") and f"({', '.join(both[:3])}, …)" in msg
    df["split"] = df["lesion"].map(lambda g: "val" if g in ("L01", "L02") else "train")
    df.to_csv(tmp_path / "split.csv", index=False)
    ds = load_dataset(tmp_path / "split.csv", group_column="lesion")           # a given split that is clean
    assert _groups(ds.val) == {"L01", "L02"}
    with pytest.raises(DataError, match="no 'patient' column; columns are image, label, lesion.*--group-column"):
        load_dataset(grouped, group_column="patient")
    with pytest.raises(DataError, match="--group-column lesion: groups need a CSV manifest"):
        load_dataset(tmp_path / "images", group_column="lesion")


def test_cross_duplicates_hash_only_same_size_files(tmp_path, monkeypatch):
    a1, a2, a3 = (_img(tmp_path / "a" / f"{n}.png", v) for n, v in (("x", 1), ("y", 2), ("z", 3)))
    b1 = tmp_path / "b" / "copy.png"
    b1.parent.mkdir()
    b1.write_bytes(a2.read_bytes())
    b2 = tmp_path / "b" / "other.png"
    b2.write_bytes(a3.read_bytes()[:-1] + b"\0")                             # same size, other bytes
    b3 = tmp_path / "b" / "long.png"
    b3.write_bytes(a1.read_bytes() + b"tail")                                # a size nobody else has
    hashed = []
    real = duplicates.file_digest
    monkeypatch.setattr(duplicates, "file_digest", lambda p: hashed.append(Path(p).name) or real(p))
    pairs = duplicates.cross_duplicates([str(a1), str(a2), str(a3)], [str(b1), str(b2), str(b3)])
    assert pairs == [(str(a2), str(b1))]
    assert "long.png" not in hashed
    assert duplicates.cross_duplicates([str(a1)], [str(a1)]) == [(str(a1), str(a1))]   # listed on both sides


def test_duplicates_across_train_and_val_stop_training_before_preprocessing(tmp_path, capsys, monkeypatch):
    data = write_dataset(tmp_path / "data", "binary", n=12, size=SIZE, workers=1)
    src = sorted((data / "train" / "nevus").glob("syn*.jpg"))[0]
    (data / "val" / "others" / "again.jpg").write_bytes(src.read_bytes())
    argv = ["--data", data, "--task", "binary", "--image-size", SIZE, "--weights", "none", "--epochs", 1,
            "--cache-dir", tmp_path / "cache", "--out", tmp_path / "run"]
    err = one_line_error(capsys, train.main, argv, "dermo train")
    assert err == (f"{data}: 1 exact duplicate image pair(s) across train and val (same bytes; train = val: "
                   f"train/nevus/{src.name} = val/others/again.jpg); remove the copies or keep each on one side "
                   "(--group-column), or pass --allow-duplicates")
    assert not (tmp_path / "cache").exists()                                 # nothing preprocessed
    ds = load_dataset(data, "binary")
    assert duplicates.check_duplicates(ds, allow=True) == [(str(src.resolve()),
                                                            str((data / "val" / "others" / "again.jpg").resolve()))]
    # allowed: the run goes on to preprocessing, and its split.csv was written first, as for any interrupted run
    # (here: interrupted as preprocessing starts; a run that fails with an error instead removes its folder)
    import dermo.training.inputs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dermo.training.inputs, "prepare", interrupted)
    assert train.main([str(a) for a in argv + ["--allow-duplicates"]]) == 130
    written = pd.read_csv(tmp_path / "run" / splits.SPLIT_CSV, keep_default_na=False)
    assert list(written.columns) == ["path", "label", "split", "mask", "digest"]
    ds = load_dataset(data, "binary")
    assert list(written["path"]) == [s.path for s in ds.train + ds.val]
    assert list(written["split"]) == ["train"] * len(ds.train) + ["val"] * len(ds.val)
    assert list(written["label"]) == [ds.classes[s.label] for s in ds.train + ds.val]
    assert list(written["mask"]) == [s.mask or "" for s in ds.train + ds.val]
    import hashlib                                   # the digest column: BLAKE2b-160 of each file's bytes
    assert list(written["digest"]) == [hashlib.blake2b(Path(s.path).read_bytes(), digest_size=20).hexdigest()
                                       for s in ds.train + ds.val]


def test_group_column_on_a_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    _img(tmp_path / "data" / "a" / "x.png", 1)
    err = one_line_error(capsys, train.main, ["--data", tmp_path / "data", "--group-column", "lesion",
                                              "--out", tmp_path / "run"], "dermo train")
    assert err.startswith("--group-column lesion: groups need a CSV manifest") and str(tmp_path / "data") in err
    assert not (tmp_path / "run").exists()


def test_split_csv_round_trip_groups_and_resume_check(grouped, tmp_path):
    ds = load_dataset(grouped, seed=3, group_column="lesion")
    run = tmp_path / "run"
    run.mkdir()
    splits.record_split(run, ds)
    df = splits.read_split(run)
    assert list(df.columns) == ["path", "label", "split", "mask", "digest", "group"]
    assert set(df.loc[df["group"] == "", "path"]) == {s.path for s in ds.train + ds.val if s.group is None}
    for name in ("train", "val"):
        assert splits.split_samples(run, ds.classes, name) == ds.split(name)
    assert splits.training_paths(run) == {str(Path(s.path).resolve()) for s in ds.train}
    splits.record_split(run, ds, resume=True)                                 # same split: fine
    other = load_dataset(grouped, seed=4, group_column="lesion")
    with pytest.raises(RunError, match=r"split.csv: the data's train/val split changed since this run started \("):
        splits.record_split(run, other, resume=True)
    assert splits.read_split(tmp_path) is None and splits.split_samples(tmp_path, ds.classes, "val") is None


def test_a_repeating_lesion_id_column_split_per_image_gets_a_note(tmp_path):
    from dermo.data.groups import ungrouped_ids_note

    csv = tmp_path / "m.csv"
    pd.DataFrame({"image": ["a.jpg", "b.jpg", "c.jpg"], "label": ["x", "y", "x"],
                  "Lesion_ID": ["007", "007", "8"]}).to_csv(csv, index=False)
    note = ungrouped_ids_note(csv)
    assert note.startswith("note: m.csv has a column 'Lesion_ID' whose ids repeat (2 images share an id)")
    assert note.endswith("pass --group-column Lesion_ID to keep each on one side")
    pd.read_csv(csv).assign(Lesion_ID=["1", "2", "3"]).to_csv(csv, index=False)
    assert ungrouped_ids_note(csv) is None                                   # no repeats: nothing to say
    pd.read_csv(csv, dtype=str).assign(Lesion_ID="7", split=["train", "val", "train"]).to_csv(csv, index=False)
    assert ungrouped_ids_note(csv) is None                                   # the user's own split
    assert ungrouped_ids_note(tmp_path) is None                              # a folder


def test_a_split_too_fine_for_a_small_class_names_val_fraction_not_folds(tmp_path):
    """The train/val split (also a cross-validation's inner split) is one fold of round(1 / --val-fraction): a class
    with fewer images than that is answered with the option that sets it."""
    from dermo.data.datasets import Sample
    from dermo.data.groups import group_split, stratified_folds

    samples = [Sample(f"{i}.jpg", int(i >= 20)) for i in range(23)]          # class 1: 3 images
    with pytest.raises(DataError, match=r"fewer than the 5 folds; use a larger --val-fraction \(now 0.2: 1 in 5 "
                                        r"images is held out\)$"):
        group_split(samples, 0.2, 0, "m.csv", None)
    with pytest.raises(DataError, match="fewer than the 5 folds; use fewer folds$"):
        stratified_folds(samples, 5, 0, "m.csv")
    train, val = group_split(samples, 0.34, 0, "m.csv", None)                 # 3 folds: fine
    assert len(train) + len(val) == 23
