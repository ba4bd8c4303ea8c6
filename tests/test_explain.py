"""dermo.predict.cams on a tiny functional model with the project's layer names."""
import keras
import numpy as np
import pytest

from dermo.predict import cams as explain


def _tiny_model(k=3, size=16, channels=5, seed=0):
    """image (B,16,16,3) -> Conv2D 'top_activation' (B,8,8,C) -> gap -> dropout -> classifier."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(image)
    x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", activation="swish",
                            name="top_activation")(x)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    g = keras.layers.Dropout(0.5)(g)
    probs = keras.layers.Dense(k, activation="softmax", name="classifier")(g)
    model = keras.Model(image, probs)
    dense = model.get_layer("classifier")                   # non-trivial bias
    dense.bias.assign(np.linspace(-0.5, 0.5, k).astype("float32"))
    return model


def _images(n, size=16, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


@pytest.mark.parametrize("k", [2, 3])
def test_predict_with_cams_matches_model_and_numpy(k):
    model = _tiny_model(k)
    images = _images(7)
    probs, cams = explain.predict_with_cams(model, images, batch_size=3)   # 3 batches, last short
    assert probs.shape == (7, k) and cams.shape == (7, 8, 8, k)
    np.testing.assert_allclose(probs, model.predict(images.astype("float32"), verbose=0),
                               rtol=1e-5, atol=1e-6)

    conv = keras.Model(model.inputs, model.get_layer("top_activation").output)
    features = conv.predict(images.astype("float32"), verbose=0)          # (7,8,8,C)
    kernel = model.get_layer("classifier").kernel.numpy()   # (C,k)
    bias = model.get_layer("classifier").bias.numpy()
    manual = (features[..., :, None] * kernel[None, None, None]).sum(axis=3)    # (7,8,8,k)
    np.testing.assert_allclose(cams, manual, rtol=1e-4, atol=1e-5)

    logits = cams.mean(axis=(1, 2)) + bias                 # GAP is linear: mean CAM = logit - b
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, probs, rtol=1e-4, atol=1e-6)


def test_feature_model_outputs():
    model = _tiny_model(2)
    fm = explain.feature_model(model)
    features, probs = fm.predict(_images(2).astype("float32"), verbose=0)
    assert features.shape == (2, 8, 8, 5) and probs.shape == (2, 2)


def test_predicted_class_cams():
    probs = np.array([[0.2, 0.8], [0.9, 0.1]])
    cams = np.arange(2 * 2 * 2 * 2, dtype=float).reshape(2, 2, 2, 2)
    out = explain.predicted_class_cams(probs, cams)
    np.testing.assert_array_equal(out[0], cams[0, :, :, 1])
    np.testing.assert_array_equal(out[1], cams[1, :, :, 0])


def test_model_without_cam_layers_is_a_clear_error():
    image = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(image)
    model = keras.Model(image, keras.layers.Dense(2, activation="softmax", name="classifier")(x))
    with pytest.raises(ValueError, match="model has no layer 'gap'"):
        explain.feature_model(model)
    with pytest.raises(ValueError, match="model has no layer 'gap'"):
        explain.predict_with_cams(model, np.zeros((1, 8, 8, 3)))
