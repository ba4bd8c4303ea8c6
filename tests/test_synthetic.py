"""Tests for dermo.synthetic: determinism, masks that match the lesions, dataset layout, CLI, learnability."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dermo.data import synthetic
from dermo.data.imageio import is_image_file, mask_path_for, read_image, read_mask
from dermo.data.synthetic import CLASSES, draw_lesion_image, ensure_demo_dataset, write_dataset

ALL = ["nevus", "others", "bcc", "mel", "scc"]
REPO = Path(__file__).resolve().parents[1]


def _draw(cls, seed, index=0, size=64):
    return draw_lesion_image(cls, np.random.default_rng([seed, index]), size)


def _contrast(img, mask, ring_px=3):
    """Largest per-channel |mean inside mask - mean in a ring just outside it|."""
    k = np.ones((2 * ring_px + 1, 2 * ring_px + 1), np.uint8)
    ring = (cv2.dilate(mask, k) > 0) & (mask == 0)
    f = img.astype(np.float64)
    return float(np.abs(f[mask > 0].mean(0) - f[ring].mean(0)).max())


@pytest.mark.parametrize("cls", ALL)
def test_deterministic_per_seed_and_shapes(cls):
    img, mask = _draw(cls, 3, 7, size=80)
    img2, mask2 = _draw(cls, 3, 7, size=80)
    other, other_mask = _draw(cls, 4, 7, size=80)
    assert img.shape == (80, 80, 3) and img.dtype == np.uint8
    assert mask.shape == (80, 80) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(mask, mask2)
    assert np.abs(img.astype(int) - other).mean() > 5 and not np.array_equal(mask, other_mask)


@pytest.mark.parametrize("size", [32, 45, 256])
def test_odd_and_large_sizes(size):
    img, mask = _draw("mel", 0, 1, size=size)
    assert img.shape == (size, size, 3) and mask.shape == (size, size)


def test_bad_class_and_size():
    with pytest.raises(ValueError, match="unknown class"):
        _draw("melanoma", 0)
    with pytest.raises(ValueError, match="at least 32"):
        _draw("nevus", 0, size=16)


@pytest.mark.parametrize("cls", ALL)
def test_mask_area_and_alignment(cls):
    areas, contrasts, aligned = [], [], 0
    for i in range(30):
        img, mask = _draw(cls, 11, i)
        areas.append(np.count_nonzero(mask) / mask.size)
        c = _contrast(img, mask)
        contrasts.append(c)
        # the true mask separates lesion from skin better than the same mask shifted sideways
        r = int(np.sqrt(np.count_nonzero(mask) / np.pi) * 0.5)
        shifted = np.roll(mask, r, axis=1)
        aligned += c > _contrast(img, shifted)
    assert 0.05 <= min(areas) and max(areas) <= 0.6
    assert min(contrasts) > 2 and np.median(contrasts) > 15
    assert aligned >= 27


def test_mask_is_one_region_inside_field_of_view():
    for i in range(20):
        img, mask = _draw("others", 2, i, size=96)
        n, _ = cv2.connectedComponents(mask)
        assert n - 1 <= 3  # the polygon, possibly cut into a few pieces by the vignette
        # inside the mask the image is never the black vignette
        assert np.percentile(img[mask > 0].max(1), 5) > 20


def _features(img, mask):
    """Colour statistics of the masked lesion (RGB and HSV) and its contrast to the skin."""
    out = []
    inside = mask > 0
    for arr in (img.astype(np.float32), cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)):
        px = arr[inside]
        out += [*px.mean(0), *px.std(0), *np.percentile(px, [10, 90], axis=0).ravel(),
                *(px.mean(0) - arr[~inside].mean(0))]
    return out


def _cv_score(x, y):
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return cross_val_score(clf, np.asarray(x), np.asarray(y), cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean()


@pytest.mark.parametrize("task,lesion_min,pixel_max", [("binary", 0.75, 0.68), ("multiclass", 0.65, 0.5)])
def test_learnable_but_no_single_pixel_tell(task, lesion_min, pixel_max):
    names = CLASSES[task]
    lesion, pixel, background, y = [], [], [], []
    for i in range(200):
        img, mask = _draw(names[i % len(names)], 0, i)
        lesion.append(_features(img, mask))
        r, c = np.random.default_rng([0, i, 7]).integers(0, 64, 2)
        pixel.append(img[r, c].astype(float))
        far = cv2.dilate(mask, np.ones((9, 9), np.uint8)) == 0
        background.append([*img[far].mean(0), *img[far].std(0)])
        y.append(i % len(names))
    assert _cv_score(lesion, y) > lesion_min
    assert _cv_score(pixel, y) < pixel_max
    assert _cv_score(background, y) < pixel_max


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())


def test_write_dataset_layout_balance_and_worker_independence(tmp_path):
    a = write_dataset(tmp_path / "a", task="multiclass", n=13, seed=5, size=48, workers=1)
    b = write_dataset(tmp_path / "b", task="multiclass", n=13, seed=5, size=48, workers=2)
    images = [p for p in a.rglob("*") if is_image_file(p)]
    assert len(images) == 13
    counts = {}
    for p in images:
        split, cls = p.parent.parent.name, p.parent.name
        counts[(split, cls)] = counts.get((split, cls), 0) + 1
        assert read_image(p).shape == (48, 48, 3)
        assert read_mask(mask_path_for(p), (48, 48)).any()
    per_class = [counts[("train", c)] + counts[("val", c)] for c in CLASSES["multiclass"]]
    assert sorted(per_class) == [4, 4, 5] and all(counts[("val", c)] >= 1 for c in CLASSES["multiclass"])
    assert "not real patient data" in (a / "README.txt").read_text()
    assert json.loads((a / ".complete").read_text())["n"] == 13
    assert _files(a) == _files(b)
    for rel in _files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_write_dataset_replaces_old_set_and_refuses_foreign_folder(tmp_path):
    out = write_dataset(tmp_path / "d", n=12, size=32)
    write_dataset(out, n=4, size=32)
    assert len([p for p in out.rglob("*.jpg")]) == 4
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a dermo demo dataset"):
        write_dataset(foreign, n=4, size=32)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="at least 6"):
        write_dataset(tmp_path / "e", task="multiclass", n=5)


def test_ensure_demo_dataset_writes_once(tmp_path):
    out = tmp_path / "demo"
    ensure_demo_dataset(out, "binary", 8, 1, 32)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    ensure_demo_dataset(out, "binary", 8, 1, 32)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamp
    ensure_demo_dataset(out, "binary", 10, 1, 32)  # other parameters: regenerated
    assert len(list(out.rglob("*.jpg"))) == 10
    (out / ".complete").unlink()  # interrupted run: no marker, so it is written again
    ensure_demo_dataset(out, "binary", 10, 1, 32)
    assert (out / ".complete").exists()


def test_cli_in_process(tmp_path, capsys):
    assert synthetic.main([str(tmp_path / "c"), "--task", "multiclass", "--n", "9", "--size", "40"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.count("\n") == 0 and "wrote 9 synthetic multiclass images" in line and "6 train / 3 val" in line
    assert synthetic.main([str(tmp_path / "x"), "--n", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("dermo synthetic: error:") and "at least 4" in err


def test_cli_module_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dermo", "synthetic", str(tmp_path / "m"), "--n", "4", "--size", "32",
                        "--seed", "3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "wrote 4 synthetic binary images" in r.stdout
    assert len(list((tmp_path / "m").rglob("*_mask.png"))) == 4
