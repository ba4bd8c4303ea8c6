"""Loading a saved classifier safely, and what its input/output shapes say.

    load_model_safely(path)   .h5/.keras -> keras.Model; refuses Python code (Lambda layers)
    model_image_size(model)   S of the (None, S, S, 3) input
    model_num_classes(model)  K of the (None, K) output
    model_meta_width(model)   M of a metadata model's (None, M) "meta" input, 0 for image-only models
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from dermo.errors import DermoError

MODEL_SUFFIXES = (".h5", ".keras")


class PredictError(DermoError, ValueError):
    """A model file, option or input that prediction cannot use; one line naming the file and the fix."""


def _code_in_config(config) -> str | None:
    """Name of the first code-carrying object in a Keras model config (JSON tree), else None."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name, module = node.get("class_name"), str(node.get("module") or "")
            if name in ("Lambda", "TFOpLambda"):
                return "Lambda layer"
            if name == "__lambda__" or (name == "function" and not module.startswith("keras")):
                return "Python function"
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _read_config(path: Path):
    """The model config stored in a .keras zip (config.json) or a legacy .h5 (attrs model_config)."""
    if path.suffix.lower() == ".keras":
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("config.json"))
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
    if raw is None:
        raise PredictError(f"{path}: holds weights only, no model (save the whole model with model.save)")
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def load_model_safely(path):
    """keras.models.load_model(path, compile=False, safe_mode=True) with one-line errors.

    The stored config is scanned first, so a file with Python code (a Lambda layer) is refused before
    any of it is deserialised; safe_mode is the second line of defence."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise PredictError(f"{path}: model file not found")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise PredictError(f"{path}: not a Keras model file (expected .h5 or .keras)")
    refusal = (f"refusing to load {path}: it contains Python code ({{}}); dermo models never do — "
               "re-export the plain image -> probabilities graph (dermo.model.network.inference_model)")
    try:
        code = _code_in_config(_read_config(path))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, PredictError):
            raise
        raise PredictError(f"{path}: not a readable Keras model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'corrupt'})") from None
    if code:
        raise PredictError(refusal.format(code))
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001 — any failure becomes one line naming the file
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "lambda" in text.lower() or "safe_mode" in text:
            raise PredictError(refusal.format("Lambda layer")) from None
        raise PredictError(f"{path}: cannot load the model ({type(e).__name__}: {text[:200]})") from None


def model_image_size(model) -> int:
    """Side S of the model's (None, S, S, 3) input."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise PredictError(f"model input must be (None, S, S, 3) with a fixed size S, got {shape}")
    return int(shape[1])


def model_num_classes(model) -> int:
    return int(model.outputs[0].shape[-1])                         # K of the (None, K) output


def model_meta_width(model) -> int:
    """Width M of the model's (None, M) metadata input "meta" (--meta-columns), 0 when it has none."""
    return next((int(t.shape[-1]) for t in model.inputs[1:] if t.name == "meta"), 0)
