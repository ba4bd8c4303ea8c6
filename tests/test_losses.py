"""Loss terms and CAMs (docs/method.md §4–5) against numpy references on tiny hand-made arrays."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from dermo.losses import (categorical_ce, center_loss, center_sums, cskl_loss, focal_loss, kl_penalty,
                          mask_loss, occlude_outside, outside_logit_loss, outside_loss, outside_swap_loss,
                          resize_masks, swap_outside, updated_centers)
from dermo.model.cam import class_activation_maps


def npv(x):
    return np.asarray(ops.convert_to_numpy(x))


def grad_of(fn, x):
    """(value, d value / d x) with tf.GradientTape; x numpy."""
    v = tf.Variable(np.asarray(x, np.float32))
    with tf.GradientTape() as tape:
        out = fn(v)
    return npv(out), npv(tape.gradient(out, v))


# ---------------------------------------------------------------- CAM
def test_cam_matches_manual_loop():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    w = rng.normal(size=(5, 3)).astype(np.float32)
    ref = np.zeros((2, 3, 4, 3), np.float32)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                for k in range(3):
                    ref[b, i, j, k] = sum(f[b, i, j, c] * w[c, k] for c in range(5))
    got = npv(class_activation_maps(f, w))
    assert got.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_cam_hand_value_and_gradient():
    f = np.array([[[[1.0, 2.0]]]], np.float32)  # (1,1,1,2)
    w = np.array([[3.0, -1.0], [0.5, 4.0]], np.float32)  # (2,2)
    np.testing.assert_allclose(npv(class_activation_maps(f, w))[0, 0, 0], [4.0, 7.0])
    _, g = grad_of(lambda v: ops.sum(class_activation_maps(v, w)), f)
    np.testing.assert_allclose(g[0, 0, 0], w.sum(axis=1))  # d/dF_c Σ_k F_c W_ck


# ---------------------------------------------------------------- classification
Y2 = np.array([[1, 0, 0], [0, 0, 1]], np.float32)
P2 = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]], np.float32)
Z2 = np.log(P2) + np.array([[1.5], [-2.0]], np.float32)     # logits: softmax(Z2) == P2 (row shifts cancel)


def test_ce_two_samples():
    want = -(np.log(0.7) + np.log(0.5)) / 2  # 0.5249
    assert float(npv(categorical_ce(Y2, Z2))) == pytest.approx(want, rel=1e-6)


def test_ce_with_sample_weights():
    want = -(2.0 * np.log(0.7) + 0.5 * np.log(0.5)) / 2     # mean_i w_i·CE_i
    assert float(npv(categorical_ce(Y2, Z2, np.array([2.0, 0.5], np.float32)))) == pytest.approx(want, rel=1e-6)


def test_focal_gamma0_is_ce_and_gamma2_hand_value():
    assert float(npv(focal_loss(Y2, Z2, gamma=0.0))) == pytest.approx(
        float(npv(categorical_ce(Y2, Z2))), rel=1e-6
    )
    want = -(0.3**2 * np.log(0.7) + 0.5**2 * np.log(0.5)) / 2  # 0.10269
    assert float(npv(focal_loss(Y2, Z2, gamma=2.0))) == pytest.approx(want, rel=1e-5)


def test_ce_gradient_wrt_logits_is_p_minus_y():
    _, g = grad_of(lambda v: categorical_ce(Y2, v), Z2)
    np.testing.assert_allclose(g, (P2 - Y2) / 2, atol=1e-6)            # mean over the 2 samples


@pytest.mark.parametrize("loss", ["ce", "focal"])
def test_confidently_wrong_sample_keeps_its_gradient(loss):
    """Logit gap 30 against the true class (p_true ≈ 9e-14): from clipped probabilities the gradient would be
    exactly 0; from logits it is p − y (focal: (1 − p_true)^γ → 1, so also p − y to 1e-6)."""
    y = np.array([[1, 0]], np.float32)
    z = np.array([[0.0, 30.0]], np.float32)
    fn = categorical_ce if loss == "ce" else (lambda a, b: focal_loss(a, b, 2.0))
    val, g = grad_of(lambda v: fn(y, v), z)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(g, p - y, atol=1e-6)
    assert float(val) == pytest.approx(30.0, rel=1e-6)          # −log p_true ≈ 30 (focal: ×(1−p_true)² ≈ 1)


def _focal_reference(y, z, gamma):
    """float64 numpy focal loss, the formula as written: mean_i Σ_k −y_ik (1 − p_ik)^γ log p_ik."""
    z = np.asarray(z, np.float64)
    logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    return float(np.mean(-(y * (1 - np.exp(logp)) ** gamma * logp).sum(1)))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_focal_gradient_matches_central_differences_of_the_formula(gamma):
    z = np.array([[1.0, -0.5, 0.3], [0.2, 0.4, -1.0]])
    _, g = grad_of(lambda v: focal_loss(Y2, v, gamma), z)
    h, num = 1e-6, np.zeros_like(z)
    for i, j in np.ndindex(*z.shape):
        d = np.zeros_like(z)
        d[i, j] = h
        num[i, j] = (_focal_reference(Y2, z + d, gamma) - _focal_reference(Y2, z - d, gamma)) / (2 * h)
    np.testing.assert_allclose(g, num, atol=1e-5)       # float32 gradient vs float64 differences (measured ~1e-7)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_focal_gradient_is_finite_for_a_confidently_right_sample(gamma):
    """logits [20, 0, 0], label 0: p_true rounds to 1 in float32; (1 − p)^γ must not give NaN for γ < 1.
    γ = 0 is CE exactly: gradient p − y (hand value: p_other = e^−20 / (1 + 2e^−20))."""
    y, z = np.array([[1.0, 0, 0]], np.float32), np.array([[20.0, 0.0, 0.0]], np.float32)
    val, g = grad_of(lambda v: focal_loss(y, v, gamma), z)
    assert np.isfinite(val) and np.all(np.isfinite(g)), g
    q = np.exp(-20.0) / (1 + 2 * np.exp(-20.0))
    if gamma == 0.0:
        np.testing.assert_allclose(g[0, 1:], [q, q], rtol=1e-5)
        assert abs(g[0, 0] + 2 * q) <= 1e-8             # float32: p_true rounds to 1, so −2q becomes 0
        np.testing.assert_array_equal(g, grad_of(lambda v: categorical_ce(y, v), z)[1])
    else:
        assert np.abs(g).max() <= 2 * q                  # (1 − p)^γ ≤ 1 only shrinks the CE gradient


# ---------------------------------------------------------------- center
def test_center_loss_hand_value_absent_class():
    pooled = np.array([[1.0, 2.0], [3.0, 0.0], [0.0, 0.0]], np.float32)
    labels = np.array([0, 0, 2])
    centers = np.array([[1.0, 1.0], [100.0, -100.0], [2.0, 2.0]], np.float32)  # class 1 absent
    # ||(0,1)||²=1, ||(2,-1)||²=5, ||(-2,-2)||²=8  -> (1+5+8)/3/2
    assert float(npv(center_loss(pooled, labels, centers))) == pytest.approx(14 / 6, rel=1e-6)
    _, g = grad_of(lambda v: center_loss(v, labels, centers), pooled)
    np.testing.assert_allclose(g, 2 * (pooled - centers[labels]) / 6, rtol=1e-6)


def test_center_sums_hand_values_zero_count_row():
    pooled = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    sums, counts = center_sums(pooled, np.array([0, 2, 0]), 3)
    # class 0: rows 0 and 2 -> (1+5, 2+6) = (6, 8), 2 images; class 1: none; class 2: row 1 -> (3, 4), 1 image
    np.testing.assert_array_equal(npv(sums), [[6, 8], [0, 0], [3, 4]])
    np.testing.assert_array_equal(npv(counts), [2, 0, 1])


# new_k = m·old_k + (1−m)·s_k/n_k if n_k > 0 else old_k  (docs/method.md §5), worked out by hand below
# for old = [(2,−4), (7,−7), (1,1)], s = [(6,8), (0,0), (12,−4)], n = [2, 0, 4] -> means (3,4), —, (3,−1)
CENTER_OLD = [[2.0, -4.0], [7.0, -7.0], [1.0, 1.0]]
CENTER_SUMS = [[6.0, 8.0], [0.0, 0.0], [12.0, -4.0]]
CENTER_COUNTS = [2.0, 0.0, 4.0]


@pytest.mark.parametrize("momentum,expected", [
    # m = 0.75: 0.75·(2,−4) + 0.25·(3,4) = (1.5+0.75, −3+1)
    #           0.75·(1,1) + 0.25·(3,−1) = (0.75+0.75, 0.75−0.25)
    (0.75, [[2.25, -2.0], [7.0, -7.0], [1.5, 0.5]]),
    # m = 0.5 (the default): halfway, (2+3)/2, (−4+4)/2;  (1+3)/2, (1−1)/2
    (0.5, [[2.5, 0.0], [7.0, -7.0], [2.0, 0.0]]),
    # m = 0: the epoch means replace the centres
    (0.0, [[3.0, 4.0], [7.0, -7.0], [3.0, -1.0]]),
    # m = 1: centres frozen
    (1.0, [[2.0, -4.0], [7.0, -7.0], [1.0, 1.0]]),
])
def test_updated_centers_momentum_formula_by_hand(momentum, expected):
    new = npv(updated_centers(np.array(CENTER_OLD, np.float32), np.array(CENTER_SUMS, np.float32),
                              np.array(CENTER_COUNTS, np.float32), momentum=momentum))
    assert new.shape == (3, 2) and new.dtype == np.float32
    assert np.isfinite(new).all()                           # class 1 (count 0): no 0/0
    np.testing.assert_allclose(new, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(new[1], [7.0, -7.0])      # unseen class keeps its old centre exactly


# ---------------------------------------------------------------- cskl
def np_cskl(cams, labels, mode, lambda_a=0.1, t=1.0):
    b, h, w, k = cams.shape
    x = cams.reshape(b, h * w, k).astype(np.float64) / t
    x = x - x.max(axis=1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    f = (lambda v: v) if mode == "original" else (lambda v: v / (lambda_a * v * v + 1))
    terms = []
    for i in range(b):
        y = labels[i]
        for kk in range(k):
            if kk == y:
                continue
            py, pk = np.exp(logp[i, :, y]), np.exp(logp[i, :, kk])
            a = np.sum(py * (logp[i, :, y] - logp[i, :, kk]))
            bb = np.sum(pk * (logp[i, :, kk] - logp[i, :, y]))
            terms.append(f(a) + f(bb))
    return -np.mean(terms) if terms else 0.0


@pytest.mark.parametrize("mode", ["original", "penalized"])
@pytest.mark.parametrize("t", [1.0, 2.0])
def test_cskl_matches_numpy(mode, t):
    rng = np.random.default_rng(1)
    cams = rng.normal(scale=2.0, size=(3, 2, 3, 4)).astype(np.float32)
    labels = np.array([0, 3, 1])
    got = float(npv(cskl_loss(cams, labels, mode=mode, temperature=t)))
    assert got == pytest.approx(np_cskl(cams, labels, mode, t=t), rel=1e-5, abs=1e-6)


def test_cskl_hand_value_two_positions():
    # P_y = softmax(0, ln 3) = (1/4, 3/4), P_k = (3/4, 1/4): KL both ways = ln 3 / 2
    cams = np.zeros((1, 1, 2, 2), np.float32)
    cams[0, 0, 1, 0] = np.log(3.0)
    cams[0, 0, 0, 1] = np.log(3.0)
    kl = np.log(3.0) / 2
    got = float(npv(cskl_loss(cams, np.array([0]), mode="original")))
    assert got == pytest.approx(-2 * kl, rel=1e-6)
    got = float(npv(cskl_loss(cams, np.array([0]), mode="penalized", lambda_a=0.1)))
    assert got == pytest.approx(-2 * kl / (0.1 * kl * kl + 1), rel=1e-6)


def test_cskl_sign_rewards_divergence_and_identical_is_zero():
    base = np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1)
    same = np.concatenate([base, base, base], axis=-1)
    for mode in ("original", "penalized"):
        assert abs(float(npv(cskl_loss(same, np.array([1]), mode=mode)))) < 1e-6
    slight = np.concatenate([base, base * 0.5, base], axis=-1)
    strong = np.concatenate([base, -base, base[..., ::-1] * 0], axis=-1)
    for mode in ("original", "penalized"):
        l_slight = float(npv(cskl_loss(slight, np.array([0]), mode=mode)))
        l_strong = float(npv(cskl_loss(strong, np.array([0]), mode=mode)))
        assert l_strong < l_slight < 0


def test_cskl_single_class_is_zero():
    cams = np.random.default_rng(2).normal(size=(2, 3, 3, 1)).astype(np.float32)
    val, g = grad_of(lambda v: cskl_loss(v, np.array([0, 0])), cams)
    assert float(val) == 0.0 and np.all(g == 0)


def test_kl_penalty_peaks_at_inverse_sqrt_lambda():
    lam = 0.1
    x = np.linspace(0.0, 20.0, 20001, dtype=np.float32)
    fx = npv(kl_penalty(x, lam))
    # f is flat at its peak: f(x0 ± d) ≈ f_max·(1 − λ d²/4), within one float32 ulp of f_max for |d| ≲ 1.7e-3, so
    # which grid point wins the argmax is round-off; the peak's place is checked at 5e-3 (3× that flat width) and
    # its height to float32 precision
    assert x[np.argmax(fx)] == pytest.approx(1 / np.sqrt(lam), abs=5e-3)
    assert fx.max() == pytest.approx(1 / (2 * np.sqrt(lam)), rel=1e-6)
    assert np.all(fx[np.abs(x - 1 / np.sqrt(lam)) > 0.5] < fx.max() * (1 - 0.1 * 0.25 ** 2 / 4))   # lower beside


def test_cskl_bad_mode():
    with pytest.raises(ValueError, match="cskl mode"):
        cskl_loss(np.zeros((1, 2, 2, 2), np.float32), np.array([0]), mode="off")


# ---------------------------------------------------------------- mask
def lesion(h=4, w=4):
    m = np.zeros((h, w), np.float32)
    m[1:3, 1:3] = 1.0
    return m


def test_mask_loss_perfect_and_inverted():
    m = lesion()
    cams = np.stack([m, 3 * m + 1], axis=-1)[None]  # (1,4,4,2): r = 1 for both classes
    assert float(npv(mask_loss(cams, m[None]))) == pytest.approx(0.0, abs=1e-5)
    assert float(npv(mask_loss(-cams, m[None, ..., None]))) == pytest.approx(2.0, abs=1e-5)


def test_mask_loss_area_resize_and_numpy_reference():
    rng = np.random.default_rng(3)
    big = np.zeros((2, 12, 12), np.float32)
    big[0, 2:7, 1:8] = 1.0
    big[1, 0:4, :] = 1.0
    small = big.reshape(2, 4, 3, 4, 3).mean(axis=(2, 4))  # area average to 4x4 (3x3 blocks)
    np.testing.assert_allclose(npv(resize_masks(big[..., None], (4, 4))), small, atol=1e-6)
    cams = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    ref = np.mean([
        1 - np.corrcoef(small[i].ravel(), cams[i, ..., k].ravel())[0, 1]
        for i in range(2) for k in range(3)
    ])
    assert float(npv(mask_loss(cams, big))) == pytest.approx(ref, rel=1e-4)


def test_mask_loss_excludes_empty_and_full_masks():
    m = lesion()
    cams = np.stack([m, -m], axis=-1)[None].repeat(3, axis=0)  # per image terms 0 and 2 -> 1
    masks = np.stack([m, np.zeros_like(m), np.ones_like(m)])
    assert float(npv(mask_loss(cams, masks))) == pytest.approx(1.0, abs=1e-5)
    only_empty = np.stack([np.zeros_like(m), np.ones_like(m), np.zeros_like(m)])
    val, g = grad_of(lambda v: mask_loss(v, only_empty), cams)
    assert float(val) == 0.0 and np.all(np.isfinite(g)) and np.all(g == 0)


def test_mask_loss_constant_cam_finite():
    m = lesion()
    cams = np.full((1, 4, 4, 2), 5.0, np.float32)
    val, g = grad_of(lambda v: mask_loss(v, m[None]), cams)
    assert float(val) == pytest.approx(1.0, abs=1e-6)  # r = 0
    assert np.all(np.isfinite(g))


# ---------------------------------------------------------------- outside evidence
def np_outside(cams, masks_small, form):
    """Reference: per image with a lesion, mean over classes of the evidence share outside the mask."""
    shares = []
    for c, m in zip(cams.astype(np.float64), masks_small.astype(np.float64)):
        if m.mean() <= 1e-6:
            continue
        e = np.abs(c - c.mean(-1, keepdims=True)) if form == "contrast" else np.maximum(c, 0)
        shares.append(np.mean([(e[..., k] * (1 - m)).sum() / (e[..., k].sum() + 1e-6) for k in range(c.shape[-1])]))
    return float(np.mean(shares)) if shares else 0.0


def test_outside_loss_hand_values():
    # lesion = the top-left cell of a 2x2 grid (from a 4x4 mask, area-averaged)
    cams = np.zeros((1, 2, 2, 2), np.float32)
    cams[0, ..., 0] = [[3, 1], [0, -2]]
    cams[0, ..., 1] = [[1, 1], [2, 0]]
    mask = np.zeros((1, 4, 4, 1), np.float32)
    mask[0, :2, :2] = 1
    # contrast: |CAM_0 - mean| = |CAM_1 - mean| = [[1, 0], [1, 1]] -> 2 of 3 outside
    assert float(npv(outside_loss(cams, mask))) == pytest.approx(2 / 3, rel=1e-6)
    # positive: relu(CAM_0) = [[3, 1], [0, 0]] -> 1/4 outside; relu(CAM_1) = [[1, 1], [2, 0]] -> 3/4
    assert float(npv(outside_loss(cams, mask, form="positive"))) == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("form", ["contrast", "positive"])
def test_outside_loss_numpy_reference_with_empty_and_full_masks(form):
    rng = np.random.default_rng(6)
    big = np.zeros((4, 12, 12), np.float32)
    big[0, 2:7, 1:8] = 1.0              # partial cells after the 3x3 area average
    big[2] = 1.0                        # full mask: nothing outside, share 0
    big[3, 5:12, 0:4] = 1.0             # (image 1 keeps an empty mask: left out of the mean)
    small = big.reshape(4, 4, 3, 4, 3).mean(axis=(2, 4))
    cams = rng.normal(size=(4, 4, 4, 3)).astype(np.float32)
    want = np_outside(cams, small, form)
    assert float(npv(outside_loss(cams, big[..., None], form=form))) == pytest.approx(want, rel=1e-5)
    assert float(npv(outside_loss(cams[2:3], big[2:3], form=form))) == 0.0


def test_outside_loss_contrast_ignores_what_softmax_ignores_positive_does_not():
    rng = np.random.default_rng(7)
    cams = rng.normal(size=(2, 3, 3, 2)).astype(np.float32)
    masks = np.zeros((2, 3, 3), np.float32)
    masks[:, :2, :2] = 1
    shift = rng.normal(size=(2, 3, 3, 1)).astype(np.float32) * 5    # the same map added to every class
    base = float(npv(outside_loss(cams, masks)))
    assert float(npv(outside_loss(cams + shift, masks))) == pytest.approx(base, rel=1e-5)
    assert float(npv(outside_loss(cams * 40, masks))) == pytest.approx(base, rel=1e-5)  # scale-free
    assert float(npv(outside_loss(cams + shift, masks, form="positive"))) != pytest.approx(
        float(npv(outside_loss(cams, masks, form="positive"))), rel=1e-3)


def test_outside_loss_negative_evidence_outside_counts_only_in_contrast_form():
    """An artefact that pushes the other class down outside the lesion: all positive mass is inside."""
    cams = np.zeros((1, 2, 2, 2), np.float32)
    cams[0, 0, 0] = [2.0, 2.0]          # lesion cell: both classes alike
    cams[0, 1, 1] = [0.0, -6.0]         # outside: class 1 pushed down -> decides for class 0
    mask = np.zeros((1, 2, 2), np.float32)
    mask[0, 0, 0] = 1
    assert float(npv(outside_loss(cams, mask, form="positive"))) == pytest.approx(0.0, abs=1e-6)
    assert float(npv(outside_loss(cams, mask))) == pytest.approx(1.0, abs=1e-6)


def test_outside_loss_finite_for_empty_full_and_zero_maps():
    cams = np.zeros((2, 3, 3, 2), np.float32)
    masks = np.stack([np.zeros((3, 3)), np.ones((3, 3))]).astype(np.float32)
    for form in ("contrast", "positive"):
        val, g = grad_of(lambda v: outside_loss(v, masks, form=form), cams)
        assert float(val) == 0.0 and np.all(np.isfinite(g))
    with pytest.raises(ValueError, match="outside-evidence form"):
        outside_loss(cams, masks, form="negative")


def test_occlude_outside_keeps_the_lesion_and_greys_the_rest_whatever_it_holds():
    x = np.zeros((3, 2, 2, 3), np.float32)
    x[:, 0, 0] = [200, 100, 50]                         # the lesion pixel (image 0)
    x[:, 0, 1], x[:, 1, 0], x[:, 1, 1] = [10, 20, 30], [40, 50, 60], [70, 80, 90]
    m = np.zeros((3, 2, 2), np.float32)
    m[0, 0, 0] = 1
    m[1] = 1                                            # full mask: unchanged; image 2: empty mask, all grey
    got = npv(occlude_outside(x, m))
    want0 = np.full((2, 2, 3), 127.5, np.float32)
    want0[0, 0] = [200, 100, 50]
    np.testing.assert_array_equal(got[0], want0)
    np.testing.assert_array_equal(got[1], x[1])
    np.testing.assert_array_equal(got[2], np.full((2, 2, 3), 127.5, np.float32))
    sticker = x.copy()
    sticker[0, 1, 1] = [0, 255, 0]                      # an artefact outside: no trace in the occluded image
    np.testing.assert_array_equal(npv(occlude_outside(sticker, m))[0], want0)


def test_outside_logit_loss_hand_values():
    masks = np.zeros((3, 4, 4, 1), np.float32)
    masks[:2, 1:3, 1:3] = 1                             # image 2: empty mask, left out
    logits = np.array([[2.0, 0.0], [1.0, 1.0], [9.0, -9.0]], np.float32)
    occluded = np.array([[1.0, 0.0], [6.0, 6.0], [0.0, 0.0]], np.float32)
    # image 0: change (1, 0) -> contrast (0.5, -0.5) -> 0.25; image 1: same change for every class -> 0
    assert float(npv(outside_logit_loss(logits, occluded, masks))) == pytest.approx(0.125, rel=1e-6)
    assert float(npv(outside_logit_loss(logits, logits + 3.0, masks))) == 0.0
    val, g = grad_of(lambda v: outside_logit_loss(v, occluded, masks), logits)
    np.testing.assert_allclose(g, [[0.25, -0.25], [0, 0], [0, 0]], atol=1e-6)   # d/dz of Σ_i mean_k Δ²/2


def test_swap_outside_takes_the_next_images_outside_with_its_lesion_greyed():
    x = np.arange(3 * 2 * 2 * 3, dtype=np.float32).reshape(3, 2, 2, 3)
    m = np.zeros((3, 2, 2), np.float32)
    m[0, 0, 0] = 1                                      # lesion of image 0: top left
    m[1, 1, 1] = 1                                      # lesion of image 1: bottom right; image 2: empty mask
    got = npv(swap_outside(x, m))
    want = np.empty_like(x)
    want[0] = x[1]
    want[0, 0, 0] = x[0, 0, 0]
    want[0, 1, 1] = 127.5                               # image 1's lesion, in image 0's outside: grey
    want[1] = x[2]                                      # image 2 has no lesion: its whole outside
    want[1, 1, 1] = x[1, 1, 1]
    want[2] = x[0]                                      # image 2 (empty mask) gets image 0's outside, wraps
    want[2, 0, 0] = 127.5
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(npv(swap_outside(x[:1], np.ones((1, 2, 2), np.float32))), x[:1])


def test_outside_swap_loss_hand_values():
    masks = np.zeros((3, 4, 4, 1), np.float32)
    masks[:2, 1:3, 1:3] = 1                             # image 2: empty mask, left out
    y = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
    logits = np.array([[1.0, 0.0], [0.0, 0.0], [9.0, -9.0]], np.float32)
    swapped = np.array([[0.0, 0.0], [0.0, 0.0], [-9.0, 9.0]], np.float32)
    # L_cls of the swapped images: log 2 each (image 2 left out); Δ²: image 0 0.25, image 1 0 -> mean 0.125
    assert float(npv(outside_swap_loss(y, logits, swapped, masks))) == pytest.approx(np.log(2) + 0.125, rel=1e-6)
    focal = float(npv(outside_swap_loss(y, logits, swapped, masks, classification="focal", gamma=2.0)))
    assert focal == pytest.approx(0.25 * np.log(2) + 0.125, rel=1e-6)
    empty = np.zeros_like(masks)
    assert float(npv(outside_swap_loss(y, logits, swapped, empty))) == 0.0
    val, g = grad_of(lambda v: outside_swap_loss(y, logits, v, masks), swapped)
    assert np.all(np.isfinite(g)) and np.all(g[2] == 0)


# ---------------------------------------------------------------- gradients, extreme values
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_all_cam_losses_have_finite_gradients(scale):
    rng = np.random.default_rng(4)
    cams = (np.sign(rng.normal(size=(3, 4, 4, 3))) * scale).astype(np.float32)  # ±scale
    cams[1] = scale  # constant CAMs for image 1
    labels = np.array([0, 1, 2])
    masks = np.stack([lesion(), np.zeros((4, 4)), np.ones((4, 4))]).astype(np.float32)
    fns = [
        lambda v: cskl_loss(v, labels, mode="original"),
        lambda v: cskl_loss(v, labels, mode="penalized"),
        lambda v: cskl_loss(v, labels, temperature=0.5),
        lambda v: mask_loss(v, masks),
        lambda v: outside_loss(v, masks),
        lambda v: outside_loss(v, masks, form="positive"),
    ]
    for fn in fns:
        val, g = grad_of(fn, cams)
        assert np.isfinite(val) and np.all(np.isfinite(g))
    feats = (rng.normal(size=(3, 4, 4, 5)) * scale).astype(np.float32)
    kernel = rng.normal(size=(5, 3)).astype(np.float32)
    val, g = grad_of(lambda v: mask_loss(class_activation_maps(v, kernel), masks)
                     + cskl_loss(class_activation_maps(v, kernel), labels)
                     + center_loss(ops.mean(v, axis=(1, 2)), labels, np.zeros((3, 5))), feats)
    assert np.isfinite(val) and np.all(np.isfinite(g)) and np.any(g != 0)


def test_losses_work_in_graph_mode_with_unknown_batch():
    spec = [tf.TensorSpec((None, 4, 4, 2), tf.float32), tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None, 8, 8, 1), tf.float32)]

    @tf.function(input_signature=spec)
    def total(cams, labels, masks):
        return cskl_loss(cams, labels) + mask_loss(cams, masks)

    rng = np.random.default_rng(5)
    cams = rng.normal(size=(2, 4, 4, 2)).astype(np.float32)
    labels = np.array([0, 1], np.int32)
    masks = np.zeros((2, 8, 8, 1), np.float32)
    masks[:, 2:6, 2:6] = 1.0
    want = float(npv(cskl_loss(cams, labels))) + float(npv(mask_loss(cams, masks)))
    assert float(total(cams, labels, masks)) == pytest.approx(want, rel=1e-5)
