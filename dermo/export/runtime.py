"""Running an exported file with its own runtime, as a user outside dermo would.

    load(path, fmt) -> run(x) -> {"probs": (B,K)[, "cams": (B,h,w,K)]}, numpy float32

x: the preprocessed images (B,S,S,3) float32 0..255, or {input name: array} for a model with several inputs.
SavedModel: tf.saved_model.load(...).serve; TFLite: the LiteRT interpreter (ai_edge_litert when installed, else
tf.lite.Interpreter) through its "serving_default" signature; ONNX: onnxruntime on the CPU.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from dermo.export.formats import ExportError


def _feed(x, names: list[str]) -> dict:
    if isinstance(x, dict):
        return {k: np.asarray(v, np.float32) for k, v in x.items()}
    return {names[0]: np.asarray(x, np.float32)}


def _savedmodel(path: Path):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))           # keep the object: its variables live as long as it does

    def run(x):
        out = loaded.serve(**x) if isinstance(x, dict) else loaded.serve(np.asarray(x, np.float32))
        return {k: np.asarray(v) for k, v in out.items()}

    return run


def _interpreter(path: Path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                # tf.lite.Interpreter's deprecation notice
        return Interpreter(model_path=str(path))


def _tflite(path: Path):
    runner = _interpreter(path).get_signature_runner("serving_default")
    names = list(runner.get_input_details())

    def run(x):
        return {k: np.asarray(v) for k, v in runner(**_feed(x, names)).items()}

    return run


def _onnx(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]

    def run(x):
        return dict(zip(outputs, session.run(outputs, _feed(x, names))))

    return run


def load(path, fmt: str):
    """A function x -> {"probs", ["cams"]} running the exported artefact at `path`."""
    loaders = {"savedmodel": _savedmodel, "tflite": _tflite, "onnx": _onnx}
    if fmt not in loaders:
        raise ExportError(f"{path}: unknown export format {fmt!r}")
    return loaders[fmt](Path(path))
