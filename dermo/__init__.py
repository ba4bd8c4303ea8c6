"""dermo: CAM-regularised EfficientNet classifiers for dermoscopic images.

One subpackage per stage; imports only go down this list (tests/test_layout.py checks it):

    cli.py          the `dermo` command: a subcommand per job, each run by its stage's own main
    viewer/         the browser viewer: uploads and eval rows -> probabilities, CAMs      (dermo view)
    experiments/    cross-validation, ablation grid over seeds and test sets, classical-ML baseline
                                                                        (dermo cv, ablation, ml)
    training/       one training run: options, setup, callbacks, checkpoints, the end  (dermo train)
    export/         a run's classifier as SavedModel / TFLite / ONNX + sidecar          (dermo export)
    evaluation/     what to evaluate, scoring, ensembles, report writing, figures      (dermo evaluate, ensemble)
    predict/        a saved model applied to images: loading, TTA, CAMs, prediction
    pipeline/       samples -> cached preprocessing -> augmented batches
    model/ run/ preprocessing/
                    the classifier graph and CAMModel; a run's options and folder; per-image preprocessing
                                                                        (dermo preprocess)
    data/ losses/ metrics/
                    images, datasets, demo and shortcut-check data (dermo synthetic); loss terms; numbers
    errors.py, console.py
                    the one user-facing error type; help format and quiet library logs

dermo train, dermo evaluate and dermo ensemble beside the package are `dermo train|evaluate|ensemble`. The method
(formulas, schedule, metrics, run folder, CLI) is in docs/method.md.
"""
from dermo.console import quiet_backend_logs

quiet_backend_logs()        # before anything imports TensorFlow: no C++ start-up lines from `import dermo.x`

__version__ = "0.2.0"
