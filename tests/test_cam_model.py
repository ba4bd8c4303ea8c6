"""CAMModel: CAMs inside the model, gradients of the combined loss, the segmentation head (eager, tiny)."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dermo.model.cam_model import CAMModel, LossConfig
from dermo.model.network import build_graph, inference_model, segmentation_model

SIZE = 64   # 2x2 feature maps: the smallest where spatial CAM terms are defined


def batch(n=4, k=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")
    y = np.eye(k, dtype="float32")[np.arange(n) % k]
    m = np.zeros((n, SIZE, SIZE, 1), "float32")
    m[:, :SIZE // 2, :SIZE // 2] = 1           # one quadrant: a non-constant 2x2 mask
    return x, y, m


@pytest.fixture(scope="module")
def model(cam_model64):
    return cam_model64


def grads_of(model, terms_weights, x, y, m):
    with tf.GradientTape() as tape:
        terms = model.loss_terms(y, m, model(x, training=True), training=True)
        total = sum(w * terms[name] for name, w in terms_weights.items())
    return dict(zip([v.path for v in model.trainable_variables],
                    tape.gradient(total, model.trainable_variables)))


def norm(g):
    return 0.0 if g is None else float(tf.norm(g))


def test_cams_in_model_equal_manual_einsum(model):
    x, _, _ = batch()
    out = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    probs, feats, pooled = out["probs"], out["features"], out["pooled"]
    kernel = model.get_layer("classifier").kernel.numpy()
    bias = model.get_layer("classifier").bias.numpy()
    cams = np.einsum("bhwc,ck->bhwk", feats, kernel)
    logits = cams.mean(axis=(1, 2)) + bias             # GAP commutes with the linear head
    np.testing.assert_allclose(logits, out["logits"], atol=1e-4)
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), probs, atol=1e-5)
    np.testing.assert_allclose(pooled, feats.mean(axis=(1, 2)), atol=1e-5)


@pytest.mark.parametrize("term", ["cls_loss", "center_loss", "cskl_loss", "mask_loss"])
def test_every_term_sends_gradients_into_the_backbone(model, term):
    x, y, m = batch()
    g = grads_of(model, {term: 1.0}, x, y, m)
    stem = next(k for k in g if "stem_conv" in k)
    assert norm(g[stem]) > 0, f"{term} does not reach the backbone"
    kernel = next(k for k in g if k.startswith("classifier") and "kernel" in k)
    if term != "center_loss":                          # the centre loss acts on pooled features only
        assert norm(g[kernel]) > 0, f"{term} does not reach the classifier"
    assert all(np.isfinite(np.asarray(v)).all() for v in g.values() if v is not None)


def test_terms_switched_off_are_zero():
    inputs, outputs = build_graph("B0", 3, SIZE, "none")
    m = CAMModel(inputs, outputs, LossConfig(classification="focal", lambda_center=0, lambda_cskl=0.1,
                                             cskl="off", lambda_mask=0))
    x, y, mask = batch(k=3)
    terms = m.loss_terms(y, mask, m(x, training=False))
    assert float(terms["center_loss"]) == float(terms["cskl_loss"]) == float(terms["mask_loss"]) == 0.0
    np.testing.assert_allclose(float(terms["loss"]), float(terms["cls_loss"]), rtol=1e-6)


def test_centres_accumulate_and_refresh_per_class(model):
    x, y, m = batch()
    model.compile(optimizer=keras.optimizers.Adadelta(1.0, rho=0.9))
    before = model.centers.numpy().copy()
    model.train_on_batch(x, (y, m))
    np.testing.assert_array_equal(model.center_count.numpy(), [2, 2])
    model.refresh_centers()
    assert not np.allclose(model.centers.numpy(), before)
    np.testing.assert_array_equal(model.center_count.numpy(), [0, 0])


def test_segmentation_head_outputs_and_trains():
    keras.utils.set_random_seed(0)
    inputs, outputs = build_graph("B0", 2, SIZE, "none", head="segmentation")
    assert outputs["mask"].shape[1:] == (SIZE, SIZE, 1)
    m = CAMModel(inputs, outputs, LossConfig())
    m.compile(optimizer=keras.optimizers.Adadelta(1.0, rho=0.9))
    x, y, mask = batch()
    logs = m.train_on_batch(x, (y, mask), return_dict=True)
    assert logs["seg_loss"] > 0 and 0 <= logs["seg_dice"] <= 1
    seg = segmentation_model(m)
    assert seg.output.shape[1:] == (SIZE, SIZE, 1)
    assert inference_model(m).output.shape[1:] == (2,)
    assert segmentation_model(inference_model(m)) is None


# ---------------------------------------------------------------- finer CAMs (--cam-stride 16), outside term
@pytest.fixture(scope="module")
def model16():
    keras.utils.set_random_seed(1)
    inputs, outputs = build_graph("B0", 2, SIZE, "none", cam_stride=16)
    m = CAMModel(inputs, outputs, LossConfig(lambda_outside=1.0, outside_form="contrast"))
    m.set_centers(np.random.default_rng(1).normal(size=tuple(m.centers.shape)).astype("float32"))
    return m


def test_stride16_cams_are_exact_class_evidence(model16):
    from dermo.predict.cams import feature_layer_name, feature_model

    x, _, _ = batch()
    out = {k: np.asarray(v) for k, v in model16(x, training=False).items()}
    assert out["features"].shape[1:3] == (SIZE // 16, SIZE // 16)          # twice the default grid
    assert feature_layer_name(model16) == "cam16_features"
    dense = model16.get_layer("classifier")
    cams = np.einsum("bhwc,ck->bhwk", out["features"], dense.kernel.numpy())
    np.testing.assert_allclose(cams.mean(axis=(1, 2)) + dense.bias.numpy(), out["logits"], atol=1e-4)
    with pytest.raises(ValueError, match="not the feature map"):
        feature_model(model16, "top_activation")          # the stride-32 map is not what "gap" pools
    # (saved, reloaded and evaluated stride-16 models: tests/test_replicates.py)


def test_outside_term_is_tracked_and_trains_backbone_and_stride16_branch(model16):
    x, y, m = batch()
    assert "outside_loss" in [t.name for t in model16.metrics]
    terms = model16.loss_terms(y, m, model16(x, training=False))
    assert 0 < float(terms["outside_loss"]) < 1
    g = grads_of(model16, {"outside_loss": 1.0}, x, y, m)
    for part in ("stem_conv", "cam16_skip", "cam16_top", "classifier"):
        assert norm(g[next(k for k in g if k.startswith(part) or f"/{part}" in k)]) > 0, part


@pytest.mark.parametrize("form", ["logit", "swap"])
def test_occlusion_form_runs_the_lesion_only_images_in_the_same_pass(form):
    from dermo.losses import occlude_outside, swap_outside

    occlude = swap_outside if form == "swap" else occlude_outside
    keras.utils.set_random_seed(2)
    inputs, outputs = build_graph("B0", 2, SIZE, "none")
    m = CAMModel(inputs, outputs, LossConfig(lambda_outside=1.0, outside_form=form))
    x, y, mask = batch(seed=4)
    out = m.forward(x, mask, training=False)        # inference mode: each half as if alone
    np.testing.assert_allclose(np.asarray(out["logits"]), np.asarray(m(x)["logits"]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["lesion_logits"]),
                               np.asarray(m(occlude(x, mask))["logits"]), atol=1e-5)
    assert out["features"].shape[0] == len(x)
    with tf.GradientTape() as tape:
        term = m.loss_terms(y, mask, m.forward(x, mask, training=True), training=True)["outside_loss"]
    grads = dict(zip([v.path for v in m.trainable_variables], tape.gradient(term, m.trainable_variables)))
    assert float(term) > 0 and norm(grads[next(k for k in grads if "stem_conv" in k)]) > 0


def test_weight_zero_rows_add_nothing_to_the_validation_numbers(model):
    """A multi-worker validation pass fills a replica's empty share of a last batch smaller than the replica
    count with a stand-in image of weight 0: it must not change the epoch's numbers."""
    x, y, m = batch()
    model.compile(optimizer=keras.optimizers.Adadelta(1.0, rho=0.9))
    model.reset_metrics()
    full = {k: float(v) for k, v in model.test_step((x, (y, m))).items()}
    after = model.test_step((x[:1], (y[:1], m[:1]), np.zeros(1, "float32")))
    for name in ("loss", "cls_loss", "center_loss", "cskl_loss", "mask_loss", "accuracy"):
        assert float(after[name]) == pytest.approx(full[name], rel=1e-6), name
