"""Pretrained backbones against the reference libraries' own models (not against dermo's belief about the files).

Each weights file is generated in its real layout with random values (conftest.write_notop_weights), and on one
random image dermo's backbone output F ("top_activation") must equal:
  --weights imagenet  keras.applications.EfficientNetB0(include_top=False, weights="imagenet"), both served the
                      same file through a patched `get_file` (the download cannot be made here);
  --weights FILE      the same Keras file given as a path: the same reference (it is the imagenet download);
                      a Keras-layout file with other normalisation values: keras.applications(weights=FILE);
  --weights noisy-student  the `efficientnet` package's own model with weights="noisy-student" applied to its own
                      `preprocess_input`, both served one generated file in that package's layout;
  --weights FILE      the same file given as a path: that package's model loading the file.
Agreement: max |Δ| / max |reference| ≤ 1e-4.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import write_notop_weights
from keras.src.utils import file_utils

from dermo.model.network import build_graph

SIZE = 64
RTOL = 1e-4


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).uniform(0, 255, (1, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    return str(write_notop_weights(tmp_path_factory.mktemp("w") / "efficientnetb0_notop.h5", "keras"))


def dermo_features(weights: str, x: np.ndarray) -> np.ndarray:
    inputs, out = build_graph("B0", 2, SIZE, weights)
    return np.asarray(keras.Model(inputs, out["features"])(x), np.float64)


def assert_parity(got: np.ndarray, ref: np.ndarray) -> float:
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert ref.std() > 0 and rel <= RTOL, rel
    return rel


def serve(monkeypatch, path: str) -> list:
    """Both keras.utils.get_file (dermo) and keras.applications' file_utils.get_file return `path`."""
    asked = []

    def get_file(fname, origin=None, *a, **k):
        asked.append(fname)
        return path
    monkeypatch.setattr(keras.utils, "get_file", get_file)
    monkeypatch.setattr(file_utils, "get_file", get_file)
    return asked


def keras_imagenet_reference(x: np.ndarray) -> np.ndarray:
    ref = keras.applications.EfficientNetB0(include_top=False, weights="imagenet", input_shape=(SIZE, SIZE, 3))
    return np.asarray(ref(x), np.float64)


def test_imagenet_download_matches_keras_applications(monkeypatch, keras_file, image):
    asked = serve(monkeypatch, keras_file)
    ref = keras_imagenet_reference(image)
    assert asked == ["efficientnetb0_notop.h5"]
    assert_parity(dermo_features("imagenet", image), ref)
    assert asked == ["efficientnetb0_notop.h5"] * 2


def test_imagenet_file_given_as_path_matches_keras_applications(monkeypatch, keras_file, image):
    serve(monkeypatch, keras_file)
    ref = keras_imagenet_reference(image)
    monkeypatch.undo()                      # the path alone: nothing is downloaded
    assert_parity(dermo_features(keras_file, image), ref)


def test_other_keras_file_matches_keras_applications_with_that_file(tmp_path, image):
    path = str(write_notop_weights(tmp_path / "own.h5", "keras", normalization=((0.5, 0.4, 0.3), (0.04, 0.09, 0.01))))
    ref = keras.applications.EfficientNetB0(include_top=False, weights=path, input_shape=(SIZE, SIZE, 3))
    assert_parity(dermo_features(path, image), np.asarray(ref(image), np.float64))


@pytest.fixture(scope="module")
def efn_file(tmp_path_factory):
    pytest.importorskip("efficientnet.tfkeras")
    return str(write_notop_weights(tmp_path_factory.mktemp("w") / "efficientnet-b0_noisy-student_notop.h5",
                                   "efficientnet"))


def efn_reference(x: np.ndarray, weights: str) -> np.ndarray:
    import efficientnet.tfkeras as efn

    ref = efn.EfficientNetB0(include_top=False, weights=weights, input_shape=(SIZE, SIZE, 3))
    return np.asarray(ref(efn.preprocess_input(x.copy())), np.float64)


def test_noisy_student_download_matches_the_efficientnet_package(monkeypatch, efn_file, image):
    asked = serve(monkeypatch, efn_file)       # the package fetches through keras.utils.get_file (tf.keras)
    ref = efn_reference(image, "noisy-student")
    assert asked == ["efficientnet-b0_noisy-student_notop.h5"]
    assert_parity(dermo_features("noisy-student", image), ref)
    assert len(asked) == 2


def test_efficientnet_package_file_matches_its_own_model_and_preprocessing(efn_file, image):
    assert_parity(dermo_features(efn_file, image), efn_reference(image, efn_file))


# channels of the last conv activation of EfficientNet B0…B7 (Tan & Le 2019: round_filters(1280) for each width
# coefficient 1.0, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0 — the same numbers Keras' applications documentation lists)
PUBLISHED_TOP_CHANNELS = {"B0": 1280, "B1": 1280, "B2": 1408, "B3": 1536, "B4": 1792, "B5": 2048, "B6": 2304,
                          "B7": 2560}


@pytest.mark.parametrize("name", list(PUBLISHED_TOP_CHANNELS))
def test_every_registered_backbone_builds_with_its_cam_features(name):
    """The registry's B0…B7 build the flat graph (at 32 px: the smallest size allowed) with the CAM feature layer
    of each network's published width."""
    keras.backend.clear_session()
    inputs, out = build_graph(name, 3, 32, "none")
    assert tuple(out["features"].shape) == (None, 1, 1, PUBLISHED_TOP_CHANNELS[name])
    assert tuple(out["probs"].shape) == (None, 3)
