"""EfficientNet-Lite0/1/2 with Google's ImageNet weights from their packages (offline), checked against things the
code does not assume:

- photos nobody here made (scikit-image's cat and coffee cup) land in the ImageNet classes that show a cat
  (281–285) and an espresso (967), through the public constructor and dermo's eval resize — this catches a wrong
  reader (strides, layouts), not a wrong normalisation, epsilon or padding, hence:
- a numpy hand reference of the stem (TensorFlow's documented "same" padding rule, BatchNorm ε 1e-3, ReLU6) on an
  odd and an even input size;
- the stem BatchNorm's stored statistics fit real photos normalised (x − 127)/128 better than ImageNet mean/std;
- the reader takes data only: a pickle naming any other global is refused and nothing runs; strided tensors are
  read in their logical layout (a hand-made legacy file, written here without torch).
"""
from __future__ import annotations

import collections
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
from conftest import one_line_error

from dermo.data.augment import apply, eval_transform
from dermo.model import efficientnet_lite
from dermo.model.lite import VARIANTS, build_lite
from dermo.model.lite_weights import LiteWeightsError, converted, packaged_file
from dermo.model.torch_file import MAGIC_NUMBER, PROTOCOL_VERSION, TorchFileError, read_state_dict

skimage_data = pytest.importorskip("skimage.data")
CAT_CLASSES = range(281, 286)          # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def photo(name: str, size: int) -> np.ndarray:
    """A scikit-image photo through dermo's eval resize: (1,S,S,3) float32 0..255."""
    img = getattr(skimage_data, name)()
    resized, _ = apply(eval_transform(size), img, np.zeros(img.shape[:2], np.uint8))
    return resized[None].astype("float32")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_imagenet_classifier_sees_a_cat_and_an_espresso(name):
    model = efficientnet_lite(name, weights="imagenet", include_top=True)
    size = VARIANTS[name].resolution
    assert model.input_shape == (None, size, size, 3) and model.output_shape == (None, 1000)
    cat = np.asarray(model(photo("chelsea", size), training=False))[0]
    coffee = np.asarray(model(photo("coffee", size), training=False))[0]
    assert int(cat.argmax()) in CAT_CLASSES, np.argsort(-cat)[:5]
    assert int(coffee.argmax()) == ESPRESSO, np.argsort(-coffee)[:5]


def tf_same_conv(x: np.ndarray, w_oihw: np.ndarray, stride: int) -> np.ndarray:
    """(H,W,I) * torch-layout kernel (O,I,k,k) with TensorFlow's "same" padding: out = ⌈n/s⌉, total padding
    max((out − 1)·s + k − n, 0), the smaller half before (tf.nn.convolution docs)."""
    k = w_oihw.shape[2]
    pads = []
    for n in x.shape[:2]:
        total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
        pads.append((total // 2, total - total // 2))
    xp = np.pad(x, pads + [(0, 0)])
    oh, ow = math.ceil(x.shape[0] / stride), math.ceil(x.shape[1] / stride)
    out = np.zeros((oh, ow, w_oihw.shape[0]))
    for dy in range(k):
        for dx in range(k):
            out += xp[dy:dy + stride * oh:stride, dx:dx + stride * ow:stride] @ w_oihw[:, :, dy, dx].T
    return out


@pytest.fixture(scope="module")
def lite0_state():
    return read_state_dict(packaged_file(VARIANTS["lite0"]))


@pytest.mark.parametrize("size", [33, 32])
def test_stem_equals_a_numpy_hand_reference(lite0_state, size):
    import keras

    s = lite0_state
    x = np.random.default_rng(size).uniform(0, 255, (size, size, 3))
    conv = tf_same_conv((x - 127) / 128, s["_conv_stem.weight"], 2)
    bn = (conv - s["_bn0.running_mean"]) / np.sqrt(s["_bn0.running_var"] + 1e-3) * s["_bn0.weight"] + s["_bn0.bias"]
    want = np.clip(bn, 0, 6)
    model = efficientnet_lite("lite0", weights="imagenet", include_top=False, input_shape=(size, size, 3))
    stem = keras.Model(model.inputs, model.get_layer("stem_activation").output)
    got = np.asarray(stem(x[None].astype("float32"), training=False), np.float64)[0]
    assert got.shape == (math.ceil(size / 2), math.ceil(size / 2), 32)
    assert 0 < (want > 0).mean() < 1 and want.max() > 1        # the reference is not trivially 0 or clipped
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_stem_statistics_fit_the_lite_normalisation_better_than_imagenet_mean_std(lite0_state):
    s = lite0_state
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    photos = [photo(n, 224)[0].astype(np.float64) for n in ("chelsea", "coffee", "astronaut", "rocket")]
    stored_mean, stored_var = s["_bn0.running_mean"], s["_bn0.running_var"]
    live = stored_var > 1e-6

    def misfit(normalise) -> tuple[float, float]:
        out = np.concatenate([tf_same_conv(normalise(p), s["_conv_stem.weight"], 2).reshape(-1, 32) for p in photos])
        z = np.abs(out.mean(0) - stored_mean)[live] / np.sqrt(stored_var[live])
        log_ratio = np.abs(np.log(out.var(0)[live] / stored_var[live]))
        return float(z.mean()), float(log_ratio.mean())

    lite, imagenet = misfit(lambda x: (x - 127) / 128), misfit(lambda x: (x / 255 - mean) / std)
    assert lite[0] < imagenet[0] and lite[1] < imagenet[1], (lite, imagenet)


# ------------------------------------------------------------------ the reader: data only, strides honoured

def write_legacy_pth(path, obj, monkeypatch) -> None:
    """torch.save(obj, path, _use_new_zipfile_serialization=False) without torch: the header pickles, `obj`
    pickled with tensors as _rebuild_tensor_v2 + persistent storage ids, the storage keys, then each storage's
    int64 element count and raw float32 data. A plain dict {name: (storage array, offset, size, stride)} is
    written as a state dict of such tensors; any other object as it pickles."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    storage_type = type("FloatStorage", (), {"__module__": "torch"})
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2, torch._utils = storage_type, _rebuild_tensor_v2, utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    storages = {}

    class Ref:
        def __init__(self, key):
            self.key = key

    class Tensor:
        def __init__(self, data, offset, size, stride):
            self.ref = Ref(str(len(storages)))
            storages[self.ref.key] = np.asarray(data, "<f4").ravel()
            self.args = (offset, tuple(size), tuple(stride), False, collections.OrderedDict())

        def __reduce__(self):
            return _rebuild_tensor_v2, (self.ref, *self.args)

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, Ref):
                return ("storage", storage_type, o.key, "cpu", len(storages[o.key]))
            return None

    if type(obj) is dict:                  # {name: (storage, offset, size, stride)}: a state dict
        obj = collections.OrderedDict((k, Tensor(*v)) for k, v in obj.items())
    with open(path, "wb") as f:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        Pickler(f, protocol=2).dump(obj)
        pickle.dump(list(storages), f, protocol=2)
        for key, data in storages.items():
            f.write(np.int64(len(data)).tobytes() + data.tobytes())


def test_strided_views_are_read_in_their_logical_layout(tmp_path, monkeypatch):
    a = np.arange(6, dtype="float32").reshape(2, 3)            # a[i, j] = 3i + j
    path = tmp_path / "t.pth"
    # a stored column-major (a.T's buffer: a[i, j] at 2j + i), a slice at offset 1, and a contiguous tensor
    write_legacy_pth(path, {"t": (a.T.copy(), 0, (2, 3), (1, 2)), "v": (np.arange(5), 1, (2,), (2,)),
                            "c": (a, 0, (2, 3), (3, 1))}, monkeypatch)
    got = read_state_dict(path)
    np.testing.assert_array_equal(got["t"], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(got["v"], [1, 3])
    np.testing.assert_array_equal(got["c"], a)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_naming_another_global_is_refused_and_nothing_runs(tmp_path, monkeypatch, capsys):
    from dermo.training import cli as train

    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    write_legacy_pth(path, collections.OrderedDict(w=_Evil(marker)), monkeypatch)
    with pytest.raises(TorchFileError, match=r"evil.pth: .*names the global (posix|os)\.system"):
        read_state_dict(path)
    assert not marker.exists()
    msg = one_line_error(capsys, train.main, ["--demo", "--backbone", "lite0", "--weights", path, "--out",
                                              tmp_path / "run"], "dermo train")
    assert "evil.pth" in msg and "system" in msg and not marker.exists()
    assert not (tmp_path / "run").exists()


def test_a_file_of_another_lite_size_is_one_line(tmp_path):
    with pytest.raises(LiteWeightsError, match="lite2.*pth: .*another Lite size|has no place"):
        import keras

        model = build_lite(VARIANTS["lite0"], keras.Input((64, 64, 3)))
        from dermo.model.lite_weights import load_lite_weights

        load_lite_weights(model, VARIANTS["lite0"], packaged_file(VARIANTS["lite2"]))


def test_conversion_is_cached_by_the_files_sha256(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("DERMO_CACHE", str(tmp_path / "cache"))
    src = packaged_file(VARIANTS["lite0"])
    first = converted(src, VARIANTS["lite0"])
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    cached = tmp_path / "cache" / "weights" / f"lite0-{digest}.npz"
    assert cached.is_file()
    again = converted(src, VARIANTS["lite0"])
    assert sorted(first) == sorted(again)
    assert all(np.array_equal(a, b) for k in first for a, b in zip(first[k], again[k]))
    np.testing.assert_array_equal(again["stem_conv"][0], read_state_dict(src)["_conv_stem.weight"].transpose(2, 3, 1, 0))


def test_weights_file_as_the_package_pth_or_a_keras_weights_file_gives_the_imagenet_backbone(tmp_path):
    """--weights FILE for Lite: the package's .pth itself, or a Keras weights file saved from the backbone, build
    the same network as --weights imagenet."""
    import keras

    from dermo.model.network import build_graph

    x = photo("chelsea", 64)

    def features(weights):
        inputs, out = build_graph("lite0", 2, 64, weights)
        return np.asarray(keras.Model(inputs, out["features"])(x, training=False))

    want = features("imagenet")
    np.testing.assert_array_equal(features(str(packaged_file(VARIANTS["lite0"]))), want)
    base = efficientnet_lite("lite0", weights="imagenet", include_top=False, input_shape=(64, 64, 3))
    base.save_weights(tmp_path / "lite0.weights.h5")
    np.testing.assert_allclose(features(str(tmp_path / "lite0.weights.h5")), want, atol=1e-6)
    assert np.abs(want - features("none")).max() > 0.1                       # random weights differ
