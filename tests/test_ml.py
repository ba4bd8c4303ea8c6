"""Classical-ML baseline: hand-crafted features (dermo.experiments.features) and the grid-searched classifier (dermo.ml)."""
from __future__ import annotations

import colorsys
import json
from types import SimpleNamespace

import cv2
import joblib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import skew
from skimage.color import rgb2lab
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, cohen_kappa_score, confusion_matrix,
                             roc_auc_score)

from dermo.data.datasets import DataError
from dermo.data.imageio import write_png
from dermo.data.synthetic import draw_lesion_image, write_dataset
from dermo.experiments import features as F

S = 256                                     # = F.WORK_SIZE: no resizing inside the feature code


def disc(radius=60, size=S):
    return cv2.circle(np.zeros((size, size), np.uint8), (size // 2, size // 2), radius, 255, -1)


def star(size=S, scale=1.0):
    """An irregular 5-point star (tips and notches of different depths): no mirror axis."""
    ang = np.linspace(0, 2 * np.pi, 10, endpoint=False) + np.array([0, .1, -.05, .12, 0, -.1, .08, 0, -.07, .05])
    r = scale * np.array([100, 40, 70, 30, 92, 45, 60, 35, 85, 25])
    pts = np.stack([size / 2 + r * np.cos(ang), size / 2 + r * np.sin(ang)], 1).round().astype(np.int32)
    return cv2.fillPoly(np.zeros((size, size), np.uint8), [pts], 255)


def ellipse(size=S):
    return cv2.ellipse(np.zeros((size, size), np.uint8), (size // 2, size // 2), (110, 30), 30, 0, 360, 255, -1)


def two_tone(mask, lesion_rgb=(100, 50, 30), skin_rgb=(200, 150, 120)):
    img = np.empty(mask.shape + (3,), np.uint8)
    img[:] = skin_rgb
    img[mask > 0] = lesion_rgb
    return img


def shape_of(mask):
    return {k[len("shape_"):]: v for k, v in F.lesion_features(two_tone(mask), mask).items() if k.startswith("shape_")}


# ----------------------------------------------------------------------------- features

def test_feature_names_and_generated_images():
    names = F.FEATURE_NAMES
    assert len(names) == len(set(names)) == 72 + 8 + 28 + 9
    rng = np.random.default_rng(0)
    for cls in ("nevus", "others", "bcc", "mel", "scc"):
        img, mask = draw_lesion_image(cls, rng, size=160)
        feats = F.lesion_features(img, mask)
        assert list(feats) == list(names)
        vec = F.feature_vector(img, mask)
        assert vec.shape == (len(names),) and np.isfinite(vec).all()
        assert np.allclose(vec, list(feats.values()))
        assert feats["shape_area_fraction"] == pytest.approx((mask > 0).mean(), abs=0.02)
        assert feats["lab_l_diff_mean"] < 0            # every generated lesion is darker than its skin


@pytest.mark.parametrize("fill", [0, 255])
def test_empty_and_full_masks_are_finite_zeros(fill):
    img, _ = draw_lesion_image("mel", np.random.default_rng(1), size=128)
    feats = F.lesion_features(img, np.full((128, 128), fill, np.uint8))
    assert all(np.isfinite(v) for v in feats.values())
    gone = "lesion" if fill == 0 else "skin"
    zero = [k for k in feats if f"_{gone}_" in k or "_diff_" in k]
    if fill == 0:
        zero += [k for k in feats if k.startswith(("glcm_", "lbp_", "shape_"))]
    assert len(zero) > 30 and all(feats[k] == 0.0 for k in zero)
    assert any(feats[k] != 0 for k in feats if f"_{'skin' if fill == 0 else 'lesion'}_" in k)
    if fill == 255:
        assert feats["shape_area_fraction"] == 1.0 and feats["shape_asymmetry_major"] < 0.01


def test_colour_statistics_known_answers():
    mask = disc()
    feats = F.lesion_features(two_tone(mask), mask)
    for ch, les, skin in zip("rgb", (100, 50, 30), (200, 150, 120)):
        assert feats[f"rgb_{ch}_lesion_mean"] == pytest.approx(les)
        assert feats[f"rgb_{ch}_skin_mean"] == pytest.approx(skin)
        assert feats[f"rgb_{ch}_diff_mean"] == pytest.approx(les - skin)
        assert feats[f"rgb_{ch}_lesion_std"] == pytest.approx(0, abs=1e-6)
        assert feats[f"rgb_{ch}_lesion_skew"] == 0.0                       # constant: 0, not NaN
    lab = rgb2lab(np.array([[[100, 50, 30]]], np.uint8))[0, 0]
    for ch, ref in zip("lab", lab):
        assert feats[f"lab_{ch}_lesion_mean"] == pytest.approx(ref, abs=0.3)
    h, s, v = colorsys.rgb_to_hsv(100 / 255, 50 / 255, 30 / 255)
    assert feats["hsv_h_lesion_mean"] == pytest.approx((h * 360 + F.HUE_SHIFT) % 360, abs=0.5)
    assert feats["hsv_s_lesion_mean"] == pytest.approx(s, abs=1e-3)
    assert feats["hsv_v_lesion_mean"] == pytest.approx(v, abs=1e-3)


def test_channel_stats_match_numpy_and_scipy():
    rng = np.random.default_rng(2)
    mask = disc(80)
    img = two_tone(mask)
    noise = rng.gamma(2.0, 20.0, size=img.shape).clip(0, 150).astype(np.uint8)
    img = np.where(mask[..., None] > 0, noise + 40, img).astype(np.uint8)
    feats = F.lesion_features(img, mask)
    pix = img[mask > 0].astype(np.float64)
    for c, ch in enumerate("rgb"):
        assert feats[f"rgb_{ch}_lesion_mean"] == pytest.approx(pix[:, c].mean(), rel=1e-5)
        assert feats[f"rgb_{ch}_lesion_std"] == pytest.approx(pix[:, c].std(), rel=1e-4)
        assert feats[f"rgb_{ch}_lesion_skew"] == pytest.approx(skew(pix[:, c]), rel=1e-3)


def test_texture_counts_only_lesion_pixels():
    rng = np.random.default_rng(3)
    mask = disc(70)
    img = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    img[mask > 0] = 120                                   # flat lesion in noisy skin
    flat = F.lesion_features(img, mask)
    assert flat["glcm_contrast_d1"] == 0.0 and flat["glcm_contrast_d3"] == 0.0
    assert flat["glcm_homogeneity_d1"] == pytest.approx(1.0) and flat["glcm_energy_d1"] == pytest.approx(1.0)
    textured = F.lesion_features(rng.integers(0, 256, (S, S, 3), dtype=np.uint8), mask)
    assert textured["glcm_contrast_d1"] > 10 and textured["glcm_homogeneity_d1"] < 0.5
    for p, r in F.LBP_CONFIGS:
        bins = [f"lbp_p{p}_r{r:g}_bin{b}" for b in range(p + 2)]
        assert sum(textured[b] for b in bins) == pytest.approx(1.0)
        uniform = F.lesion_features(np.full((S, S, 3), 120, np.uint8), mask)
        assert uniform[f"lbp_p{p}_r{r:g}_bin{p}"] == pytest.approx(1.0)  # flat: every neighbour >= centre


def test_shape_features_respond_to_known_shapes():
    c, st, el = shape_of(disc()), shape_of(star()), shape_of(ellipse())
    assert c["area_fraction"] == pytest.approx(np.pi * 60 ** 2 / S ** 2, rel=0.03)
    assert c["compactness"] < 1.2 and c["compactness"] < el["compactness"] < st["compactness"]
    assert c["eccentricity"] < 0.2 < 0.9 < el["eccentricity"]
    assert max(c["asymmetry_major"], c["asymmetry_minor"]) < 0.03
    assert max(el["asymmetry_major"], el["asymmetry_minor"]) < 0.03     # an ellipse is mirror-symmetric
    assert st["asymmetry_major"] > 0.1 and st["asymmetry_minor"] > 0.1  # the irregular star is not
    assert c["solidity"] > 0.97 > 0.7 > st["solidity"]
    assert c["border_irregularity"] == pytest.approx(1.0, abs=0.03) and st["border_irregularity"] > 1.1
    assert c["radial_cv"] < 0.02 < 0.15 < st["radial_cv"]
    tri = cv2.fillPoly(np.zeros((S, S), np.uint8), [np.array([[30, 220], [230, 220], [40, 30]], np.int32)], 255)
    assert max(shape_of(tri)["asymmetry_major"], shape_of(tri)["asymmetry_minor"]) > 0.1


def test_shape_features_invariant_to_rotation_and_scale():
    base = shape_of(star())
    rot = cv2.warpAffine(star(), cv2.getRotationMatrix2D((S / 2, S / 2), 37, 1.0), (S, S), flags=cv2.INTER_NEAREST)
    big = star(size=2 * S, scale=2.0)        # features are computed at WORK_SIZE: same numbers
    for other in (shape_of(rot), {k[6:]: v for k, v in F.lesion_features(two_tone(big), big).items()
                                  if k.startswith("shape_")}):
        for key in ("compactness", "solidity", "asymmetry_major", "asymmetry_minor", "radial_cv"):
            assert other[key] == pytest.approx(base[key], rel=0.15, abs=0.02), key


def test_extract_features_parallel_keeps_order(tmp_path):
    rng = np.random.default_rng(4)
    items, expected = [], []
    for i in range(5):
        img, mask = draw_lesion_image("nevus" if i % 2 else "others", rng, size=96)
        write_png(tmp_path / f"{i}.png", img)
        write_png(tmp_path / f"{i}_mask.png", mask)
        items.append(SimpleNamespace(image=tmp_path / f"{i}.png", mask=tmp_path / f"{i}_mask.png"))
        expected.append(F.feature_vector(img, mask))
    X = F.extract_features(items, workers=2, progress=False)
    assert X.shape == (5, len(F.FEATURE_NAMES))
    np.testing.assert_allclose(X, np.stack(expected), rtol=1e-6, atol=1e-9)
    assert F.extract_features([], workers=2).shape == (0, len(F.FEATURE_NAMES))


# ----------------------------------------------------------------------------- classifier

def test_fit_baseline_on_separable_data_and_fold_count():
    from dermo.experiments.ml import fit_baseline, param_grid, predict_probs

    rng = np.random.default_rng(5)
    y = np.repeat([0, 1, 2], [20, 20, 3])
    X = rng.normal(size=(len(y), 6)) + 3.0 * np.eye(3)[y].repeat(2, axis=1)
    grid = [param_grid(0)[0], {**param_grid(0)[1], "clf__n_estimators": [30]}]
    model, summary = fit_baseline(X, y, seed=0, cv=5, n_jobs=1, grid=grid)
    assert summary["cv_folds"] == 3                      # smallest class has 3 images
    assert len(summary["candidates"]) == 4 + 2
    assert summary["model"]["name"] in ("BalancedSVC", "RandomForestClassifier")
    assert summary["cv_score"] == max(c["mean_score"] for c in summary["candidates"]) > 0.8
    probs = predict_probs(model, X, 4)                   # a 4th class never seen: probability 0
    assert probs.shape == (len(y), 4) and np.allclose(probs.sum(1), 1) and (probs[:, 3] == 0).all()
    with pytest.raises(DataError, match="only 1 training image"):
        fit_baseline(X[:41], y[:41], grid=grid, n_jobs=1)


def test_grouped_grid_search_does_not_score_memorised_lesions():
    """40 lesions photographed 3 times each (near-identical feature vectors), labels drawn per lesion with no
    relation to the features: a per-image CV scores the memorised copies (a random forest recognises the other
    photos of a lesion: well above chance), folds grouped by lesion score chance (balanced accuracy ~0.5)."""
    from sklearn.ensemble import RandomForestClassifier

    from dermo.experiments.ml import fit_baseline

    rng = np.random.default_rng(0)
    lesions = np.repeat(np.arange(40), 3)
    y = rng.permutation(np.repeat([0, 1], 20))[lesions]
    X = rng.normal(size=(40, 5))[lesions] + 0.01 * rng.normal(size=(len(lesions), 5))
    grid = [{"clf": [RandomForestClassifier(n_estimators=50, random_state=0)]}]
    _, per_image = fit_baseline(X, y, seed=0, cv=5, n_jobs=1, grid=grid)
    _, grouped = fit_baseline(X, y, seed=0, cv=5, n_jobs=1, grid=grid, groups=lesions)
    assert per_image["cv_score"] > 0.9 and not per_image["cv_grouped"]
    assert grouped["cv_score"] < 0.7 and grouped["cv_grouped"]


def test_balanced_svc_divides_out_training_priors():
    from sklearn.base import clone
    from sklearn.svm import SVC

    from dermo.experiments.ml import BalancedSVC

    rng = np.random.default_rng(6)
    y = np.repeat([0, 1], [160, 40])
    X = rng.normal(size=(200, 2)) + 1.2 * y[:, None]               # overlapping classes, 80 % / 20 %
    kw = dict(probability=True, class_weight="balanced", random_state=0)
    plain, balanced = SVC(**kw).fit(X, y), clone(BalancedSVC(**kw)).fit(X, y)
    ref = plain.predict_proba(X) / np.array([0.8, 0.2])
    np.testing.assert_allclose(balanced.predict_proba(X), ref / ref.sum(1, keepdims=True), rtol=1e-9)
    minority_recall = [(m.predict_proba(X).argmax(1)[y == 1] == 1).mean() for m in (plain, balanced)]
    assert minority_recall[1] > minority_recall[0] + 0.1


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml-demo") / "data"
    write_dataset(root, "binary", n=120, size=96, workers=1)
    bad = root / "train" / "nevus" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    return root, bad


def test_cli_on_demo_data(demo_set, tmp_path, capsys):
    from dermo.experiments.ml import main

    root, bad = demo_set
    args = ["--task", "binary", "--data", str(root), "--image-size", "96", "--workers", "2"]
    assert main(args + ["--out", str(tmp_path / "fail")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.jpg" in err[0] and "Traceback" not in err[0]

    out = tmp_path / "run"
    assert main(args + ["--out", str(out), "--on-bad-image", "skip"]) == 0
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "balanced accuracy" in captured.out
    for name in ("metrics.json", "predictions.csv", "report.txt", "confusion_matrix.png", "roc.png",
                 "features.csv", "cv_results.csv", "model.joblib"):
        assert (out / name).stat().st_size > 0, name

    m = json.loads((out / "metrics.json").read_text())
    pred = pd.read_csv(out / "predictions.csv")
    classes = ["nevus", "others"]
    assert list(pred.columns) == ["path", "label", "predicted"] + classes and len(pred) == m["n"] == 30
    y = pred["label"].map(classes.index).to_numpy()
    p = pred[classes].to_numpy()
    y_hat = p.argmax(1)
    assert (pred["predicted"] == [classes[k] for k in y_hat]).all()
    assert m["balanced_accuracy"] > 0.6
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, y_hat))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, y_hat))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, y_hat))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p[:, 1]))
    assert m["confusion_matrix"] == confusion_matrix(y, y_hat).tolist()
    assert m["model"]["name"] in ("BalancedSVC", "RandomForestClassifier", "HistGradientBoostingClassifier")
    assert 0 <= m["cv_score"] <= 1 and m["classes"] == classes and m["n_train"] == 90

    feats = pd.read_csv(out / "features.csv")
    assert len(feats) == 120 and list(feats.columns[:3]) == ["path", "split", "label"]
    assert list(feats.columns[3:]) == list(F.FEATURE_NAMES)
    saved = joblib.load(out / "model.joblib")
    val = feats[feats["split"] == "val"].set_index("path").loc[pred["path"]]
    np.testing.assert_allclose(saved["model"].predict_proba(val[list(F.FEATURE_NAMES)].to_numpy()), p,
                               rtol=1e-5, atol=1e-6)


def test_cli_bad_data_is_one_line(tmp_path, capsys):
    from dermo.experiments.ml import main

    assert main(["--task", "binary", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0] and "not found" in err[0]
