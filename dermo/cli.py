"""The `dermo` command: one entry point, a subcommand per job, each the same parser as its module's own main.

    dermo train | evaluate | ensemble | cv | ablation | ml | export | view | preprocess | synthetic  [options]
    dermo COMMAND --help          every option of COMMAND, with its meaning and default
    python -m dermo COMMAND ...   the same, without the installed script

A command's module is imported only when it is run, so `dermo --help` and a mistyped option answer at once.
"""
from __future__ import annotations

import importlib
import sys

# name -> (module whose main(argv, prog) runs it, what it does)
COMMANDS = {
    "train": ("dermo.training.cli", "train a classifier (--demo: on generated data; --resume: continue a run)"),
    "evaluate": ("dermo.evaluation.cli", "score a run or model file: report, metrics, figures; --images predicts"),
    "ensemble": ("dermo.evaluation.ensemble", "soft-vote several models or a cross-validation folder"),
    "cv": ("dermo.experiments.cv", "k-fold cross-validation with honest out-of-fold predictions"),
    "ablation": ("dermo.experiments.ablation", "the loss-term grid, over seeds and test sets"),
    "ml": ("dermo.experiments.ml", "classical-ML baseline: colour/texture/shape features + SVM/RF/GB"),
    "export": ("dermo.export.cli", "a run's classifier as SavedModel / TFLite / ONNX, checked against Keras"),
    "view": ("dermo.viewer.cli", "look at cases in the browser: images, CAMs, probabilities"),
    "preprocess": ("dermo.preprocessing.cli", "write preprocessed images and generated lesion masks"),
    "synthetic": ("dermo.data.synthetic", "generate dermoscopy-like demo data (and the shortcut-check sets)"),
}


def usage() -> str:
    from dermo import __version__

    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items())
    return (f"usage: dermo COMMAND [options]   (dermo {__version__}: CAM-regularised EfficientNet lesion "
            f"classifiers)\n\ncommands:\n{rows}\n\n`dermo COMMAND --help` lists every option of COMMAND with its "
            "default; docs/method.md explains the method.")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from dermo import __version__

        print(f"dermo {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dermo: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)} (`dermo --help` says "
              "what each does)", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest, prog=f"dermo {name}")


if __name__ == "__main__":
    sys.exit(main())
