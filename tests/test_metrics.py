"""dermo.metrics against hand-computed answers on tiny hand-made arrays, and dermo.evaluation.plots
smoke-to-file."""
import json
import re

import numpy as np
import pandas as pd
import pytest

from dermo import metrics
from dermo.evaluation import plots


def _random_task(k, n=200, seed=0, skill=1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += skill                       # informative, not perfect
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


# ---- classification numbers, worked out by hand ------------------------------------------------------------

# Binary, imbalanced (4 negatives, 2 positives); prediction = argmax = [p1 > 0.5]:
#   y    0    0    0    0    1     1
#   p1   0.1  0.3  0.6  0.2  0.55  0.9
#   pred 0    0    1    0    1     1
# confusion matrix (rows = true) [[3, 1], [0, 2]]
BIN_Y = np.array([0, 0, 0, 0, 1, 1])
BIN_P1 = np.array([0.1, 0.3, 0.6, 0.2, 0.55, 0.9])
BIN_PROBS = np.stack([1 - BIN_P1, BIN_P1], 1)

# Three classes, imbalanced (3, 2, 2 images):
#   i  y  p(bcc, mel, scc)   pred
#   0  0  .7  .2  .1          0
#   1  0  .3  .5  .2          1
#   2  0  .6  .3  .1          0
#   3  1  .2  .6  .2          1
#   4  1  .1  .3  .6          2
#   5  2  .2  .1  .7          2
#   6  2  .3  .4  .3          1
# confusion matrix (rows = true) [[2, 1, 0], [0, 1, 1], [0, 1, 1]]; row sums (3, 2, 2), column sums (2, 3, 2)
TRI_Y = np.array([0, 0, 0, 1, 1, 2, 2])
TRI_PROBS = np.array([[.7, .2, .1], [.3, .5, .2], [.6, .3, .1], [.2, .6, .2], [.1, .3, .6], [.2, .1, .7],
                      [.3, .4, .3]])
TRI_NAMES = ["bcc", "mel", "scc"]


def test_binary_metrics_hand_computed():
    m = metrics.classification_metrics(BIN_Y, BIN_PROBS, ["nevus", "others"])
    assert m["n"] == 6
    assert m["confusion_matrix"] == [[3, 1], [0, 2]]
    assert m["accuracy"] == pytest.approx(5 / 6)                        # (3 + 2) / 6
    assert m["balanced_accuracy"] == pytest.approx(7 / 8)               # recalls 3/4, 2/2 -> (3/4 + 1) / 2
    # kappa = (p_o − p_e) / (1 − p_e): p_o = 5/6; p_e = Σ row sum·column sum / n² = (4·3 + 2·3) / 36 = 1/2
    #         -> (5/6 − 1/2) / (1 − 1/2) = 2/3
    assert m["kappa"] == pytest.approx(2 / 3)
    # AUC of p1, counting (positive, negative) pairs ordered right: 0.9 beats all 4 negatives, 0.55 beats
    # 0.1, 0.3, 0.2 but not 0.6 -> 7 of 8 pairs
    assert m["auc"] == pytest.approx(7 / 8)
    # nevus: precision 3/3, recall 3/4, F1 = 2·1·(3/4) / (1 + 3/4) = 6/7
    # others: precision 2/3, recall 2/2, F1 = 2·(2/3)·1 / (2/3 + 1) = 4/5;  macro (6/7 + 4/5) / 2 = 29/35
    assert m["f1_macro"] == pytest.approx(29 / 35)
    assert m["per_class"] == {
        "nevus": {"precision": pytest.approx(1.0), "recall": pytest.approx(3 / 4), "f1": pytest.approx(6 / 7),
                  "support": 4},
        "others": {"precision": pytest.approx(2 / 3), "recall": pytest.approx(1.0),
                   "f1": pytest.approx(4 / 5), "support": 2}}
    json.dumps(m, allow_nan=False)                          # strict-JSON ready


def test_three_class_metrics_hand_computed():
    m = metrics.classification_metrics(TRI_Y, TRI_PROBS, TRI_NAMES)
    assert m["n"] == 7
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 1, 1]]
    assert m["accuracy"] == pytest.approx(4 / 7)                        # (2 + 1 + 1) / 7
    assert m["balanced_accuracy"] == pytest.approx(5 / 9)               # (2/3 + 1/2 + 1/2) / 3
    # kappa: p_o = 4/7 = 28/49; p_e = (3·2 + 2·3 + 2·2) / 49 = 16/49
    #        -> (28/49 − 16/49) / (1 − 16/49) = 12/33 = 4/11
    assert m["kappa"] == pytest.approx(4 / 11)
    # one-vs-rest AUC per class by pair counting (a tie counts 1/2):
    #   bcc: positives .7 .3 .6 vs negatives .2 .1 .2 .3 -> 4 + 3.5 (.3 ties .3) + 4 = 11.5 of 12
    #   mel: positives .6 .3 vs negatives .2 .5 .3 .1 .4 -> 5 + 2.5 (beats .2 .1, ties .3) = 7.5 of 10
    #   scc: positives .7 .3 vs negatives .1 .2 .1 .2 .6 -> 5 + 4 = 9 of 10
    #   macro = (23/24 + 3/4 + 9/10) / 3 = (115 + 90 + 108) / 120 / 3 = 313/360
    assert m["auc"] == pytest.approx(313 / 360)
    # precision 2/2, 1/3, 1/2; recall 2/3, 1/2, 1/2
    # F1 = 2PR / (P + R): bcc 2·1·(2/3) / (5/3) = 4/5; mel 2·(1/3)·(1/2) / (5/6) = 2/5; scc 1/2
    # macro (4/5 + 2/5 + 1/2) / 3 = 17/30
    assert m["f1_macro"] == pytest.approx(17 / 30)
    expected = {"bcc": (1.0, 2 / 3, 4 / 5, 3), "mel": (1 / 3, 1 / 2, 2 / 5, 2),    # precision, recall, F1,
                "scc": (1 / 2, 1 / 2, 1 / 2, 2)}                                   # support
    for name, (precision, recall, f1, support) in expected.items():
        assert m["per_class"][name] == pytest.approx(
            {"precision": precision, "recall": recall, "f1": f1, "support": support}), name
        assert isinstance(m["per_class"][name]["support"], int)
    json.dumps(m, allow_nan=False)


def test_binary_auc_counts_pairs_and_half_ties():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])                   # 3 of 4 pos/neg pairs ordered right
    m = metrics.classification_metrics(y, np.stack([1 - p1, p1], 1), ["a", "b"])
    assert m["auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75)             # 0.35 -> class 0 (wrong)
    assert m["confusion_matrix"] == [[2, 0], [1, 1]]
    p1 = np.array([0.1, 0.4, 0.4, 0.8])                    # 0.8: 2 pairs; 0.4: beats 0.1, ties 0.4 -> 3.5 / 4
    assert metrics.auc_score(y, np.stack([1 - p1, p1], 1)) == pytest.approx(0.875)


def test_missing_class_gives_auc_none_and_full_confusion_matrix():
    y = np.array([0, 0, 1, 1, 0])                           # class 2 never occurs
    probs = np.array([[.8, .1, .1], [.2, .1, .7], [.1, .8, .1], [.3, .6, .1], [.5, .4, .1]])
    m = metrics.classification_metrics(y, probs, ["bcc", "mel", "scc"])
    assert m["auc"] is None
    assert m["confusion_matrix"] == [[2, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert m["per_class"]["scc"]["support"] == 0
    assert m["accuracy"] == pytest.approx(4 / 5)
    assert m["balanced_accuracy"] == pytest.approx(5 / 6)   # mean recall over present classes: (2/3 + 1) / 2
    # kappa over all 3 classes: p_o = 4/5; p_e = (3·2 + 2·2 + 0·1) / 25 = 2/5
    #                           -> (4/5 − 2/5) / (3/5) = 2/3
    assert m["kappa"] == pytest.approx(2 / 3)
    # F1 over the 3 classes: bcc P 1, R 2/3 -> 4/5; mel 1; scc (predicted once, never true) 0 -> 1.8 / 3
    assert m["f1_macro"] == pytest.approx(0.6)
    json.dumps(m, allow_nan=False)
    assert "auc: n/a" in metrics.report_text(y, probs, ["bcc", "mel", "scc"])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")   # sklearn's 0/0 in kappa
def test_single_class_labels_give_kappa_and_auc_none():
    # all true and predicted 0: p_o = p_e = 1, kappa = 0/0 -> None; AUC undefined -> None
    m = metrics.classification_metrics([0, 0], np.array([[.9, .1], [.8, .2]]), ["a", "b"])
    assert m["kappa"] is None and m["auc"] is None
    assert m["accuracy"] == 1.0 and m["confusion_matrix"] == [[2, 0], [0, 0]]
    json.dumps(m, allow_nan=False)


def test_bad_shapes_are_one_clear_error():
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        metrics.classification_metrics([0, 1], np.ones((2, 2)) / 2, ["a", "b", "c"])
    with pytest.raises(ValueError, match="labels must lie"):
        metrics.classification_metrics([0, 5], np.ones((2, 2)) / 2, ["a", "b"])


def test_report_text_contains_the_numbers():
    text = metrics.report_text(TRI_Y, TRI_PROBS, TRI_NAMES)
    # the hand-computed numbers of test_three_class_metrics_hand_computed: 4/7, 5/9, 4/11, 313/360
    for line in ("accuracy: 0.5714", "balanced accuracy: 0.5556", "kappa: 0.3636", "auc: 0.8694", "n: 7"):
        assert re.search(rf"^{line}$", text, re.M), line
    assert "precision" in text and "recall" in text and "macro avg" in text
    for name, row in zip(TRI_NAMES, [[2, 1, 0], [0, 1, 1], [0, 1, 1]]):     # confusion-matrix rows printed
        assert re.search(rf"^{name}\s+" + r"\s+".join(map(str, row)) + r"\s*$", text, re.M)


# ---- lesion focus -------------------------------------------------------------------------

def _half_mask(size=8):
    mask = np.zeros((size, size), np.uint8)
    mask[:, : size // 2] = 1
    return mask


def test_lesion_focus_known_answers():
    mask = _half_mask()
    inside = np.where(mask > 0, 3.0, 0.0)                   # all positive mass in the lesion
    outside = np.where(mask > 0, -2.0, 5.0)                 # all positive mass outside
    uniform = np.full((8, 8), 0.7)                          # half inside
    cams = np.stack([inside, outside, uniform])
    masks = np.stack([mask] * 3)
    np.testing.assert_allclose(metrics.per_image_lesion_focus(cams, masks), [1.0, 0.0, 0.5])
    assert metrics.lesion_focus(cams, masks) == pytest.approx(0.5)
    assert metrics.lesion_focus(cams, masks * 255) == pytest.approx(0.5)   # 0/255 masks too


def test_lesion_focus_ignores_negative_values():
    mask = _half_mask()
    cam = np.where(mask > 0, 1.0, -100.0)
    cam[0, -1] = 1.0                                        # 1 positive unit outside, 32 inside
    assert metrics.lesion_focus(cam[None], mask[None]) == pytest.approx(32 / 33)


def test_lesion_focus_upsamples_low_resolution_cam():
    mask = _half_mask(8)                                    # (8,8), left half lesion
    uniform = np.full((2, 2), 1.0)                          # stays uniform -> 0.5
    assert metrics.lesion_focus(uniform[None], mask[None]) == pytest.approx(0.5)
    cols = np.array([[1.0, 0.0], [1.0, 0.0]])              # (2,2) left column hot
    # bilinear (half-pixel centres) along a row: 1,1,.875,.625 | .375,.125,0,0 -> 3.5 / 4
    assert metrics.lesion_focus(cols[None], mask[None]) == pytest.approx(0.875)
    # masks of different sizes per image (lists)
    values = metrics.per_image_lesion_focus([cols, uniform], [mask, _half_mask(16)])
    np.testing.assert_allclose(values, [0.875, 0.5])


def test_lesion_focus_skips_undefined_images():
    mask = _half_mask()
    cams = np.stack([np.full((8, 8), -1.0), np.ones((8, 8)), np.ones((8, 8))])
    masks = np.stack([mask, np.zeros_like(mask), mask])    # no positive mass / empty mask / ok
    per = metrics.per_image_lesion_focus(cams, masks)
    assert np.isnan(per[0]) and np.isnan(per[1]) and per[2] == pytest.approx(0.5)
    assert metrics.lesion_focus(cams, masks) == pytest.approx(0.5)
    assert metrics.lesion_focus(cams[:2], masks[:2]) is None


def test_cam_mask_pearson():
    rng = np.random.default_rng(0)
    mask = _half_mask()
    assert metrics.cam_mask_pearson(mask[None].astype(float), mask[None]) == pytest.approx(1.0)
    assert metrics.cam_mask_pearson(-mask[None].astype(float), mask[None]) == pytest.approx(-1.0)
    cam = rng.normal(size=(8, 8))
    expected = np.corrcoef(cam.ravel(), mask.ravel())[0, 1]
    cams = np.stack([cam, np.ones((8, 8)), cam])            # zero-variance CAM skipped
    masks = np.stack([mask, mask, np.zeros_like(mask)])     # zero-variance mask skipped
    assert metrics.cam_mask_pearson(cams, masks) == pytest.approx(expected)
    assert metrics.cam_mask_pearson(cams[1:], masks[1:]) is None


def test_max_abs_cam():
    cams = np.array([[[-25.0, 3.0], [1.0, 0.0]], [[46.0, -1.0], [2.0, 2.0]]])
    assert metrics.max_abs_cam(cams) == 46.0
    assert metrics.max_abs_cam(-cams) == 46.0


def test_soft_vote():
    a, b, c = (_random_task(3, n=10, seed=s)[1] for s in (1, 2, 3))
    np.testing.assert_allclose(metrics.soft_vote([a, b, c]), (a + b + c) / 3)
    np.testing.assert_allclose(metrics.soft_vote([a, b], weights=[1, 3]), 0.25 * a + 0.75 * b)
    np.testing.assert_allclose(metrics.soft_vote([a, b, c]).sum(1), 1.0)
    with pytest.raises(ValueError, match="same shape"):
        metrics.soft_vote([a, a[:, :2]])
    with pytest.raises(ValueError, match="weights"):
        metrics.soft_vote([a, b], weights=[1])


# ---- plots --------------------------------------------------------------------------------

def _png_ok(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_plots_write_pngs(tmp_path):
    names = ["bcc", "mel", "scc"]
    y, probs = _random_task(3, n=60, seed=5)
    m = metrics.classification_metrics(y, probs, names)
    _png_ok(plots.plot_confusion_matrix(m["confusion_matrix"], names, tmp_path / "cm.png"))
    _png_ok(plots.plot_roc(y, probs, names, tmp_path / "roc.png"))
    yb, pb = _random_task(2, n=60, seed=6)
    _png_ok(plots.plot_roc(yb, pb, ["nevus", "others"], tmp_path / "roc_binary.png"))

    n, s = 5, 64
    yy, xx = np.mgrid[:s, :s]
    masks = ((yy - 32) ** 2 + (xx - 28) ** 2 < 18 ** 2).astype(np.uint8)[None].repeat(n, 0)
    images = np.zeros((n, s, s, 3), np.uint8)
    images[...] = (200, 160, 140)
    images[masks > 0] = (110, 70, 50)
    cams = np.random.default_rng(0).normal(size=(n, 8, 8))
    cams[:, 2:6, 1:5] += 4.0                                # hot spot on the lesion
    out = plots.plot_cams(images, cams, masks, [f"img{i} p=0.9" for i in range(n)],
                          tmp_path / "cams.png", max_images=4)
    _png_ok(out)
    _png_ok(plots.plot_cams(images, cams, None, None, tmp_path / "cams_nomask.png"))

    epochs = np.arange(1, 6)
    history = pd.DataFrame({"epoch": epochs, "loss": 1 / epochs, "val_loss": 1.2 / epochs,
                            "accuracy": 1 - 0.5 / epochs, "val_accuracy": 1 - 0.6 / epochs,
                            "cls_loss": 0.8 / epochs, "val_cls_loss": 0.9 / epochs,
                            "mask_loss": 0.5 / epochs, "learning_rate": [1, 1, .5, .5, .25]})
    _png_ok(plots.plot_history(history, tmp_path / "curves.png"))


def test_history_panels_count_epochs_from_one_and_leave_out_terms_that_were_off():
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [3.0, 2.0, 1.0], "val_loss": [3.5, 2.5, 1.5],
                            "outside_loss": [0.0, 0.0, 0.0], "val_outside_loss": [0.0, 0.0, 0.0],
                            "rrr_loss": [np.nan] * 3, "val_auc": [0.5, np.nan, 0.7], "mask_loss": [0.0, 0.1, 0.0]})
    x, names = plots.history_panels(history)
    np.testing.assert_array_equal(x, [1, 2, 3])                    # as the console's "epoch k/N" lines
    assert names == ["loss", "auc", "mask_loss"]                   # in column order


def test_cam_overlay_blends_jet_with_alpha():
    image = np.full((4, 4, 3), 100, np.uint8)
    cam = np.zeros((2, 2))
    cam[0, 0] = 1.0
    over = plots.cam_overlay(image, cam, alpha=0.4)
    assert over.shape == (4, 4, 3) and over.dtype == np.uint8
    # bottom-right is the CAM minimum -> jet(0) = dark blue (0, 0, 0.5)
    np.testing.assert_allclose(over[3, 3], 0.6 * 100 + 0.4 * np.array([0, 0, 127.5]), atol=1)


def test_outside_greyed_by_hand():
    # 4 images, labels 0 0 1 1; original predictions 0 0 1 0 (acc 3/4, balanced (1 + 1/2)/2 = 3/4);
    # greyed predictions 0 1 1 1 (acc 3/4, balanced (1/2 + 1)/2 = 3/4); 2 of 4 decisions unchanged
    from dermo.metrics import outside_greyed

    before = [[.9, .1], [.8, .2], [.3, .7], [.6, .4]]
    after = [[.9, .1], [.4, .6], [.3, .7], [.3, .7]]
    g = outside_greyed([0, 0, 1, 1], before, after)
    assert g == {"accuracy": 0.75, "accuracy_change": 0.0, "balanced_accuracy": 0.75,
                 "balanced_accuracy_change": 0.0, "unchanged": 0.5}
    g = outside_greyed([0, 0, 1, 1], before, [[.1, .9]] * 4)      # all "1": acc 1/2, balanced 1/2
    assert g["accuracy_change"] == -0.25 and g["balanced_accuracy"] == 0.5 and g["unchanged"] == 0.25
