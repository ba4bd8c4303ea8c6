"""Writing the exported graph in each format; every format is produced from a SavedModel.

    FORMATS                       savedmodel, tflite, onnx
    ARTEFACTS                     the file (or folder) name of each format
    write(graph, fmts, work)      the artefacts, written inside the scratch folder `work`
    place(artefact, path)         moved to its final path (after cli.py has checked it)

SavedModel: keras' `model.export(format="tf_saved_model")` (serving signature "serve", named outputs).
TFLite: TensorFlow's TFLiteConverter on that SavedModel, float32, no quantisation or other optimisation; with
`representative` images, full-integer quantisation instead (int8 weights and activations, every op an int8 builtin,
the input and output kept float32: the same feeds as the float file), written as model_int8.tflite.
ONNX: tf2onnx on that SavedModel (opset 17). Keras 3.12's own `model.export(format="onnx")` converts the traced
function instead, where the EfficientNet input Normalization layer's mean and variance are captured tensors,
not variables: the file then asks for them as two extra required inputs and onnxruntime refuses to run it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from dermo.console import library_chatter_held
from dermo.errors import DermoError

FORMATS = ("savedmodel", "tflite", "onnx")
ARTEFACTS = {"savedmodel": "savedmodel", "tflite": "model.tflite", "onnx": "model.onnx"}
INT8_TFLITE = "model_int8.tflite"
QUANTIZE = ("none", "int8")
ONNX_OPSET = 17
NEEDS = {"onnx": ("tf2onnx", "onnx"), "tflite": (), "savedmodel": ()}


class ExportError(DermoError, ValueError):
    """A model or option that cannot be exported; one line naming it and the fix."""


def check_tools(fmt: str) -> None:
    """One line naming the missing packages of `fmt` (before any work is done)."""
    import importlib.util

    missing = [m for m in NEEDS[fmt] if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"--format {fmt} needs the Python packages {', '.join(missing)}, which are not "
                          f"installed: python3 -m pip install -r requirements.txt")


def _saved_model(graph, path: Path) -> Path:
    graph.export(str(path), format="tf_saved_model", verbose=False)
    return path


def artefact_name(fmt: str, quantize: str = "none") -> str:
    return INT8_TFLITE if fmt == "tflite" and quantize == "int8" else ARTEFACTS[fmt]


def _tflite(saved: Path, path: Path, representative=None) -> None:
    import numpy as np
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if representative is not None:                 # (N,S,S,3) float32 0..255: the activation ranges
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([np.asarray(x[None], np.float32)] for x in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path.write_bytes(converter.convert())


def _onnx(saved: Path, path: Path) -> None:
    import tensorflow as tf
    from tf2onnx import convert, tf_loader

    with tf.device("/cpu:0"):
        graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
            str(saved), None, None, return_tensors_to_rename=True)
        convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs, opset=ONNX_OPSET,
                               tensors_to_rename=renames, output_path=str(path))


def write(graph, fmts, work, representative=None) -> dict[str, Path]:
    """Export `graph` in each of `fmts` inside the empty scratch folder `work` (one SavedModel, which TFLite and
    ONNX are converted from); returns {format: artefact path}. `representative` images: the TFLite file is
    quantised to int8 with them (INT8_TFLITE)."""
    unknown = [f for f in fmts if f not in FORMATS]
    if unknown:
        raise ExportError(f"--format {unknown[0]}: use one of {', '.join(FORMATS)}")
    for fmt in fmts:
        check_tools(fmt)
    work = Path(work)
    with library_chatter_held():          # the converters' log lines, shown only when a conversion fails
        saved = _saved_model(graph, work / ARTEFACTS["savedmodel"])
        out = {"savedmodel": saved}
        if "tflite" in fmts:
            out["tflite"] = work / artefact_name("tflite", "none" if representative is None else "int8")
            _tflite(saved, out["tflite"], representative)
        if "onnx" in fmts:
            _onnx(saved, work / ARTEFACTS["onnx"])
            out["onnx"] = work / ARTEFACTS["onnx"]
    return {fmt: out[fmt] for fmt in fmts}


def place(artefact: Path, path) -> Path:
    """Move a checked artefact (file or folder) to `path`, replacing an earlier export there."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    os.replace(artefact, path)
    return path
