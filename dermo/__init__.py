"""dermo: CAM-regularised EfficientNet classifiers for dermoscopic images.

One subpackage per stage; imports only go down this list (tests/test_layout.py checks it):

    viewer/         the browser viewer: uploads and eval rows -> probabilities, CAMs  (python -m dermo.viewer)
    experiments/    ablation grid, classical-ML baseline            (python -m dermo.ablation, dermo.ml)
    training/       one training run: setup, callbacks, checkpoints  (train.py)
    export/         a run's classifier as SavedModel / TFLite / ONNX + sidecar  (python -m dermo.export)
    evaluation/     what to evaluate, report writing, figures        (evaluate.py, ensemble.py)
    predict/        a saved model applied to images: loading, TTA, CAMs, prediction
    pipeline/       samples -> cached preprocessing -> augmented batches
    model/ run/ preprocessing/
                    the classifier graph and CAMModel; a run's options and folder; per-image preprocessing
    data/ losses/ metrics/
                    images, datasets and demo data; loss terms; evaluation numbers
    errors.py       the one user-facing error type

The top-level modules preprocess.py, synthetic.py, ablation.py and ml.py only forward `python -m dermo.X`
to their stage. The method (formulas, schedule, metrics, run folder, CLI) is in docs/method.md.
"""

__version__ = "0.1.0"
