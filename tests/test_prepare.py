"""dermo.pipeline.prepare: every sample through the preprocessing cache (given masks, CSV manifests, bad files,
no recomputation). Data: the pipeline_set fixture (tests/conftest.py)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import PIPELINE_SIZE

from dermo.data.datasets import Sample, load_csv
from dermo.data.imageio import BadInputError, read_image, read_mask, write_png
from dermo.pipeline.batches import labels_of
from dermo.pipeline.prepare import prepare, settings_for
from dermo.preprocessing import cache as preprocess

SETTINGS = settings_for(PIPELINE_SIZE)


@pytest.fixture(scope="module")
def synth(pipeline_set):
    return pipeline_set.synth


@pytest.fixture(scope="module")
def dataset(pipeline_set):
    return pipeline_set.dataset


@pytest.fixture(scope="module")
def train_items(pipeline_set):
    return pipeline_set.train_items


def _given_mask_resized(mask_path: str, shape) -> list[np.ndarray]:
    """The given mask resized to `shape` with the nearest-neighbour variants preprocessing may use."""
    m = read_mask(mask_path)
    return [cv2.resize(m, (shape[1], shape[0]), interpolation=i) for i in (cv2.INTER_NEAREST,
                                                                           cv2.INTER_NEAREST_EXACT)]


def test_prepare_caches_every_sample_with_labels_and_given_masks(dataset, train_items):
    samples = dataset.train
    assert len(samples) == 18 and all(s.mask for s in samples)
    assert len(train_items) == len(samples)
    cache = Path(os.environ["DERMO_CACHE"]).resolve()
    for s, it in zip(samples, train_items):
        assert it.source == s.path and it.label == s.label
        img_p, mask_p = Path(it.image), Path(it.mask)
        assert img_p.is_file() and mask_p.is_file() and cache in img_p.resolve().parents
        img, mask = read_image(img_p), read_mask(mask_p)
        assert min(img.shape[:2]) == SETTINGS.size and mask.shape == img.shape[:2]
        assert set(np.unique(mask)) <= {0, 255}
        # the given (exact) mask, resized -- not an unsupervised segmentation, which is never pixel-exact
        assert any(np.array_equal(mask, ref) for ref in _given_mask_resized(s.mask, mask.shape))
    assert sorted(set(labels_of(train_items))) == [0, 1]


def test_prepare_uses_a_given_mask_that_segmentation_would_never_produce(synth, tmp_path):
    """A corner square as the 'expert' mask of a centred lesion: it must come through unchanged."""
    src = next((synth / "train" / "nevus").glob("*[0-9].jpg"))
    img = tmp_path / "lesion.jpg"
    img.write_bytes(src.read_bytes())
    square = np.zeros((80, 80), np.uint8)
    square[:20, 60:] = 255
    write_png(tmp_path / "corner.png", square)
    (it,), _ = prepare([Sample(str(img), 1, str(tmp_path / "corner.png"))], SETTINGS, workers=1)
    mask = read_mask(it.mask)
    assert any(np.array_equal(mask, ref) for ref in _given_mask_resized(str(tmp_path / "corner.png"), mask.shape))
    assert it.label == 1


def test_prepare_from_a_csv_manifest_with_a_mask_column(synth, tmp_path):
    """CSV rows: image paths relative to images/ beside the CSV, masks in another folder named in `mask`."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rows = []
    for i, f in enumerate(sorted(synth.glob("*/*/*[0-9].jpg"), key=lambda f: f.name)[:6]):
        (tmp_path / "images" / f"im{i}.jpg").write_bytes(f.read_bytes())
        given = read_mask(f.with_name(f.stem + "_mask.png"))
        write_png(tmp_path / "masks" / f"m{i}.png", given)
        rows.append({"image": f"im{i}.jpg", "label": f.parent.name, "mask": f"masks/m{i}.png",
                     "split": "val" if i % 3 == 0 else "train"})
    pd.DataFrame(rows).to_csv(tmp_path / "meta.csv", index=False)
    ds = load_csv(tmp_path / "meta.csv", task="binary")
    samples = ds.train + ds.val
    items, skipped = prepare(samples, SETTINGS, workers=1)
    assert skipped == [] and len(items) == 6
    for s, it in zip(samples, items):
        assert Path(s.mask).parent.name == "masks" and it.label == s.label
        assert it.label == ["nevus", "others"].index(rows[int(Path(s.path).stem[2:])]["label"])
        mask = read_mask(it.mask)
        assert any(np.array_equal(mask, ref) for ref in _given_mask_resized(s.mask, mask.shape))


@pytest.fixture()
def with_bad_files(dataset, tmp_path):
    zero = tmp_path / "zero.jpg"
    zero.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("this is not a JPEG\n")
    good = dataset.val
    samples = good[:3] + [Sample(str(zero), 0), Sample(str(text), 1)] + good[3:]
    return samples, good, zero, text


def test_bad_files_raise_one_line_naming_the_file(with_bad_files):
    samples, _, zero, _ = with_bad_files
    with pytest.raises(BadInputError) as info:
        prepare(samples, SETTINGS, on_bad="error", workers=1)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{zero}: ") and "empty" in msg


def test_bad_files_are_skipped_and_reported(with_bad_files):
    samples, good, zero, text = with_bad_files
    items, skipped = prepare(samples, SETTINGS, on_bad="skip", workers=1)
    assert [it.source for it in items] == [s.path for s in good]
    assert [it.label for it in items] == [s.label for s in good]
    assert len(skipped) == 2 and all("\n" not in line for line in skipped)
    assert skipped[0].startswith(f"{zero}: ") and "empty" in skipped[0]
    assert skipped[1].startswith(f"{text}: ") and "not a readable image" in skipped[1]


def test_second_prepare_does_no_preprocessing(dataset, train_items, monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("preprocess_image called for a cached image")

    monkeypatch.setattr(preprocess, "preprocess_image", refuse)
    again, skipped = prepare(dataset.train, SETTINGS)              # default workers: no pool for cached items
    assert again == train_items and skipped == []
    stats = {}
    preprocess.preprocess_many([(s.path, s.mask) for s in dataset.train], SETTINGS, workers=1, stats=stats)
    assert stats == {"computed": 0, "cached": 18, "skipped": 0}
    # the patch is on the real code path: an image not in the cache does reach it
    fresh = tmp_path / "fresh.jpg"
    fresh.write_bytes(Path(dataset.train[0].path).read_bytes())
    with pytest.raises(AssertionError, match="cached image"):
        prepare([Sample(str(fresh), 0)], SETTINGS, workers=1)
