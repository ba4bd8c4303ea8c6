"""dermo.data.datasets: folder and CSV layouts, class indices, masks, seeded stratified splits, one-line errors."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dermo.data.datasets import DataError, Dataset, load_dataset, loss_kind, unlabelled_samples
from dermo.data.imageio import BadInputError
from dermo.errors import DermoError

ISIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "isic-uda1"


def _img(path: Path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((12, 12, 3), value, np.uint8))
    return path


def _mask(image: Path):
    p = image.with_name(image.stem + "_mask.png")
    assert cv2.imwrite(str(p), np.full((12, 12), 255, np.uint8))
    return p


def _tree(root: Path, counts: dict[str, int], ext=".png"):
    """root/<class>/<class>_<i><ext> for each class; returns {class: [paths]}."""
    out = {}
    for cls, n in counts.items():
        out[cls] = [_img(root / cls / f"{cls}_{i:02d}{ext}") for i in range(n)]
    return out


def _one_line_error(exc_type, fn, *args, **kw) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and msg, msg
    assert isinstance(info.value, DermoError)
    return msg


def _names(samples):
    return [Path(s.path).name for s in samples]


def _labels(samples):
    return Counter(s.label for s in samples)


# --- folder layout ------------------------------------------------------------------------------------------

def test_girona_binary_train_val(tmp_path):
    tr = _tree(tmp_path / "train", {"nevus": 3, "others": 2})
    va = _tree(tmp_path / "val", {"nevus": 1, "others": 2}, ext=".jpg")
    m1 = _mask(tr["nevus"][1])
    m2 = _mask(va["others"][0])
    ds = load_dataset(tmp_path, task="binary")
    assert isinstance(ds, Dataset)
    assert ds.classes == ["nevus", "others"] and ds.num_classes == 2
    assert _names(ds.train) == ["nevus_00.png", "nevus_01.png", "nevus_02.png", "others_00.png", "others_01.png"]
    assert [s.label for s in ds.train] == [0, 0, 0, 1, 1]
    assert _names(ds.val) == ["nevus_00.jpg", "others_00.jpg", "others_01.jpg"]
    assert [s.label for s in ds.val] == [0, 1, 1]
    masks = {Path(s.path).name: s.mask for s in ds.train + ds.val}
    assert masks["nevus_01.png"] == str(m1.resolve())
    assert masks["others_00.jpg"] == str(m2.resolve())
    assert sum(m is not None for m in masks.values()) == 2
    assert all(Path(s.path).is_absolute() for s in ds.train + ds.val)
    assert ds.split("val") is ds.val and ds.skipped == []
    assert loss_kind(ds.num_classes) == "ce"


def test_girona_multiclass(tmp_path):
    _tree(tmp_path / "train", {"scc": 2, "mel": 2, "bcc": 3})
    _tree(tmp_path / "val", {"bcc": 1, "mel": 1, "scc": 1})
    ds = load_dataset(tmp_path, task="multiclass")
    assert ds.classes == ["bcc", "mel", "scc"]
    assert {n.split("_")[0]: s.label for n, s in zip(_names(ds.train), ds.train)} == {"bcc": 0, "mel": 1, "scc": 2}
    assert _labels(ds.train) == {0: 3, 1: 2, 2: 2} and _labels(ds.val) == {0: 1, 1: 1, 2: 1}
    assert loss_kind(ds.num_classes) == "focal"


def test_mask_files_are_not_images(tmp_path):
    imgs = _tree(tmp_path / "train", {"nevus": 2, "others": 2})
    _tree(tmp_path / "val", {"nevus": 1, "others": 1})
    for p in imgs["nevus"] + imgs["others"]:
        _mask(p)
    (tmp_path / "train" / "nevus" / "readme.txt").write_text("not an image")
    ds = load_dataset(tmp_path, task="binary")
    assert len(ds.train) == 4
    assert not any("_mask" in n for n in _names(ds.train + ds.val))
    assert all(s.mask and s.mask.endswith(Path(s.path).stem + "_mask.png") for s in ds.train)


@pytest.mark.parametrize("layout", ["class_only", "train_only"])
def test_folder_without_val_is_split_stratified_and_seeded(tmp_path, layout):
    _tree(tmp_path / "train" if layout == "train_only" else tmp_path, {"nevus": 20, "others": 10})
    a, b, other = (load_dataset(tmp_path, task="binary", seed=s) for s in (0, 0, 1))
    assert _names(a.val) == _names(b.val) and _names(a.train) == _names(b.train)
    assert _names(other.val) != _names(a.val)
    # 20 % of 30, class proportions 2:1 kept in both parts
    assert _labels(a.val) == {0: 4, 1: 2} and _labels(a.train) == {0: 16, 1: 8}
    assert _labels(other.val) == {0: 4, 1: 2}
    assert not set(_names(a.train)) & set(_names(a.val))
    assert len(a.train) + len(a.val) == 30
    half = load_dataset(tmp_path, task="binary", seed=0, val_fraction=0.5)
    assert _labels(half.val) == {0: 10, 1: 5}


def test_train_only_folder_with_val_missing_is_split(tmp_path):
    _tree(tmp_path / "train", {"nevus": 5, "others": 5})
    ds = load_dataset(tmp_path, task="binary")
    assert len(ds.train) == 8 and _labels(ds.val) == {0: 1, 1: 1}


def test_task_auto_other_class_names_sorted(tmp_path):
    _tree(tmp_path, {"zebra": 5, "apple": 6, "Mango": 5})
    ds = load_dataset(tmp_path, task="auto")
    assert ds.classes == ["Mango", "apple", "zebra"]
    by_name = {n.rsplit("_", 1)[0]: s.label for n, s in zip(_names(ds.train + ds.val), ds.train + ds.val)}
    assert by_name == {"Mango": 0, "apple": 1, "zebra": 2}
    (tmp_path / ".hidden").mkdir()
    assert load_dataset(tmp_path, task="auto").classes == ["Mango", "apple", "zebra"]


def test_error_three_classes_for_binary(tmp_path):
    _tree(tmp_path, {"nevus": 2, "others": 2, "extra": 2})
    msg = _one_line_error(DataError, load_dataset, tmp_path, task="binary")
    assert "binary" in msg and "extra" in msg and "--task auto" in msg


def test_error_binary_names_for_multiclass(tmp_path):
    _tree(tmp_path / "train", {"nevus": 2, "others": 2})
    msg = _one_line_error(DataError, load_dataset, tmp_path, task="multiclass")
    assert "bcc, mel, scc" in msg and "nevus, others" in msg


def test_error_empty_class_folder(tmp_path):
    _tree(tmp_path / "train", {"nevus": 2})
    _tree(tmp_path / "val", {"nevus": 1, "others": 1})
    (tmp_path / "train" / "others").mkdir()
    (tmp_path / "train" / "others" / "x_mask.png").write_bytes(b"")   # only a mask: still no images
    msg = _one_line_error(DataError, load_dataset, tmp_path, task="binary")
    assert str(tmp_path / "train" / "others") in msg and "no images" in msg


def test_error_missing_data_path(tmp_path):
    msg = _one_line_error(DataError, load_dataset, tmp_path / "nowhere")
    assert msg.startswith(str(tmp_path / "nowhere")) and "not found" in msg


def test_error_data_is_not_folder_or_csv(tmp_path):
    p = tmp_path / "data.txt"
    p.write_text("x")
    assert "folder or a .csv" in _one_line_error(DataError, load_dataset, p)


def test_error_unknown_task(tmp_path):
    _tree(tmp_path, {"a": 2, "b": 2})
    msg = _one_line_error(DataError, load_dataset, tmp_path, task="trinary")
    assert "'trinary'" in msg and "auto" in msg


def test_error_single_class(tmp_path):
    _tree(tmp_path, {"only": 3})
    assert "at least 2" in _one_line_error(DataError, load_dataset, tmp_path, task="auto")


def test_error_too_few_images_to_split(tmp_path):
    _tree(tmp_path, {"nevus": 5, "others": 1})
    msg = _one_line_error(DataError, load_dataset, tmp_path, task="binary")
    assert str(tmp_path) in msg and "at least 2" in msg


def test_error_split_smaller_than_class_count(tmp_path):
    """2+2 images at 20 % would give a 1-image validation set for 2 classes: a DataError, not sklearn's."""
    _tree(tmp_path, {"nevus": 2, "others": 2})
    msg = _one_line_error(DataError, load_dataset, tmp_path, task="binary")
    assert str(tmp_path) in msg and "split" in msg


def test_unlabelled_samples(tmp_path):
    a = _img(tmp_path / "x" / "a.jpg")
    _img(tmp_path / "b.png")
    _mask(a)
    s = unlabelled_samples(tmp_path)
    assert _names(s) == ["b.png", "a.jpg"]          # sorted by path: "b.png" < "x/a.jpg"
    assert all(x.label is None for x in s)
    assert {Path(x.path).name: x.mask is not None for x in s} == {"a.jpg": True, "b.png": False}
    (tmp_path / "empty").mkdir()
    assert "no images" in _one_line_error(DataError, unlabelled_samples, tmp_path / "empty")


# --- CSV manifests ------------------------------------------------------------------------------------------

def _csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.strip() + "\n")
    return path


def test_csv_paths_relative_to_csv_and_images_folder(tmp_path):
    _img(tmp_path / "images" / "i1.png")          # found through images/ beside the CSV
    _img(tmp_path / "images" / "i2.png")
    _img(tmp_path / "pics" / "i3.png")            # relative to the CSV's own folder
    _img(tmp_path / "i4.png")
    absolute = _img(tmp_path / "elsewhere" / "i5.png")
    csv = _csv(tmp_path / "m.csv", f"""
image,label,split
i1.png,cat,train
i2.png,dog,train
pics/i3.png,cat,val
i4.png,dog, VAL
{absolute},cat,Train
""")
    ds = load_dataset(csv)
    assert ds.classes == ["cat", "dog"] and ds.source == str(csv)
    assert [(Path(s.path).name, s.label) for s in ds.train] == [("i1.png", 0), ("i2.png", 1), ("i5.png", 0)]
    assert [(Path(s.path).name, s.label) for s in ds.val] == [("i3.png", 0), ("i4.png", 1)]
    assert ds.train[0].path == str((tmp_path / "images" / "i1.png").resolve())
    assert ds.val[0].path == str((tmp_path / "pics" / "i3.png").resolve())


def test_csv_label_column_and_masks(tmp_path):
    for i in range(4):
        _img(tmp_path / "images" / f"i{i}.png")
    _mask(tmp_path / "images" / "i2.png")                  # beside its image, not listed
    given = _img(tmp_path / "masks" / "m0.png")
    csv = _csv(tmp_path / "meta.csv", """
image,diagnosis,mask,split
i0.png,nevus,masks/m0.png,train
i1.png,melanoma,,train
i2.png,nevus,,val
i3.png,melanoma,,val
""")
    ds = load_dataset(csv, label_column="diagnosis")
    assert ds.classes == ["melanoma", "nevus"]
    assert [(Path(s.path).name, s.label) for s in ds.train] == [("i0.png", 1), ("i1.png", 0)]
    assert ds.train[0].mask == str(given.resolve()) and ds.train[1].mask is None
    assert ds.val[0].mask == str((tmp_path / "images" / "i2_mask.png").resolve())
    assert ds.val[1].mask is None


def test_csv_label_column_with_space(tmp_path):
    for i in range(10):
        _img(tmp_path / f"i{i}.png")
    rows = "\n".join(f"i{i}.png,{'a' if i % 2 else 'b'}" for i in range(10))
    csv = _csv(tmp_path / "m.csv", "image,lesion type\n" + rows)
    ds = load_dataset(csv, label_column="lesion type", seed=3)
    assert ds.classes == ["a", "b"] and _labels(ds.val) == {0: 1, 1: 1} and len(ds.train) == 8


def test_csv_without_split_is_stratified_and_seeded(tmp_path):
    rows = []
    for i in range(30):
        _img(tmp_path / "images" / f"i{i:02d}.jpg")
        rows.append(f"i{i:02d}.jpg,{'x' if i < 20 else 'y'}")
    csv = _csv(tmp_path / "m.csv", "image,label\n" + "\n".join(rows))
    a, b, c = (load_dataset(csv, seed=s) for s in (7, 7, 8))
    assert _names(a.val) == _names(b.val) and _names(a.val) != _names(c.val)
    assert _labels(a.val) == {0: 4, 1: 2} and _labels(a.train) == {0: 16, 1: 8}


def test_csv_task_binary_checks_names(tmp_path):
    _img(tmp_path / "a.png")
    csv = _csv(tmp_path / "m.csv", "image,label,split\na.png,nevus,train\na.png,melanoma,val")
    msg = _one_line_error(DataError, load_dataset, csv, task="binary")
    assert "melanoma" in msg


def test_csv_bad_split_value(tmp_path):
    _img(tmp_path / "a.png")
    csv = _csv(tmp_path / "m.csv", "image,label,split\na.png,x,train\na.png,y,test\na.png,y,val")
    msg = _one_line_error(DataError, load_dataset, csv)
    assert "'test'" in msg and "train or val" in msg


def test_csv_missing_column_lists_columns(tmp_path):
    _img(tmp_path / "a.png")
    csv = _csv(tmp_path / "m.csv", "image,diagnosis,age\na.png,nevus,40")
    msg = _one_line_error(DataError, load_dataset, csv)          # default label column "label"
    assert "label" in msg and "image, diagnosis, age" in msg and "--label-column" in msg
    csv2 = _csv(tmp_path / "n.csv", "file,label\na.png,x")
    assert "image" in _one_line_error(DataError, load_dataset, csv2)


def test_csv_unreadable(tmp_path):
    p = tmp_path / "m.csv"
    p.write_bytes(b"")
    assert "not a readable CSV" in _one_line_error(DataError, load_dataset, p)


def test_csv_missing_file_error_then_skip(tmp_path):
    rows = []
    for i in range(10):
        _img(tmp_path / f"i{i}.png")
        rows.append(f"i{i}.png,{'a' if i % 2 else 'b'}")
    rows.insert(3, "ghost.png,a")
    csv = _csv(tmp_path / "m.csv", "image,label\n" + "\n".join(rows))
    msg = _one_line_error(BadInputError, load_dataset, csv)
    assert "ghost.png" in msg and "m.csv" in msg and "not found" in msg
    ds = load_dataset(csv, on_bad="skip")
    assert len(ds.train) + len(ds.val) == 10
    assert len(ds.skipped) == 1 and "ghost.png" in ds.skipped[0] and "\n" not in ds.skipped[0]
    assert "ghost.png" not in _names(ds.train + ds.val)


def test_csv_missing_mask_error_then_skip(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    csv = _csv(tmp_path / "m.csv", "image,label,mask,split\na.png,x,,train\nb.png,y,gone_mask.png,val\n"
                                   "a.png,y,,train\nb.png,x,,val")
    assert "gone_mask.png" in _one_line_error(BadInputError, load_dataset, csv)
    ds = load_dataset(csv, on_bad="skip")
    assert len(ds.train) == 2 and len(ds.val) == 1 and "gone_mask.png" in ds.skipped[0]


def test_csv_all_rows_bad(tmp_path):
    csv = _csv(tmp_path / "m.csv", "image,label\nx.png,a\ny.png,b")
    assert "no usable rows" in _one_line_error(DataError, load_dataset, csv, on_bad="skip")


# --- the real ISIC manifest -----------------------------------------------------------------------------------

def test_isic_manifest():
    if not (ISIC / "metadata.csv").exists():
        pytest.skip("../shared/data/isic-uda1 not available")
    ds = load_dataset(ISIC / "metadata.csv", task="auto", label_column="diagnosis", seed=0)
    assert ds.classes == ["melanoma", "nevus"] and ds.skipped == []
    everything = ds.train + ds.val
    assert len(everything) == 439 and len({s.path for s in everything}) == 439
    assert all(Path(s.path).parent == (ISIC / "images").resolve() and Path(s.path).is_file() for s in everything)
    total, val = _labels(everything), _labels(ds.val)
    assert total == {0: 131, 1: 308}
    assert len(ds.val) == pytest.approx(0.2 * 439, abs=1)
    for c in (0, 1):   # stratified: each class's share of val matches its share of the whole
        assert val[c] / len(ds.val) == pytest.approx(total[c] / 439, abs=0.02)
    meta = pd.read_csv(ISIC / "metadata.csv")
    truth = dict(zip(meta["image"], meta["diagnosis"]))
    assert all(ds.classes[s.label] == truth[Path(s.path).name] for s in everything)
