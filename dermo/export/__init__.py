"""A trained classifier that leaves Python: SavedModel, TFLite or ONNX files plus a JSON sidecar
(docs/method.md §10).

    dermo export --run runs/NAME --format savedmodel|tflite|onnx [--with-cams] [--out DIR]

graph.py builds the exported Keras graph (image -> calibrated probabilities [, CAMs]); formats.py writes each
format (TFLite and ONNX are converted from the SavedModel) and says in one line when a converter is missing;
runtime.py loads an exported file with its own runtime (tf.saved_model, the TFLite interpreter, onnxruntime)
and runs it; cli.py exports, checks the file against the Keras model and writes the sidecar.

May import dermo.evaluation, dermo.predict, dermo.model (layer names), dermo.run, dermo.metrics and below.
"""
