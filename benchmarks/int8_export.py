"""What `dermo export --format tflite --quantize int8` costs: balanced accuracy of the int8 file against the float
Keras model on labelled images that chose nothing for the run, and the file sizes.

    python3 benchmarks/int8_export.py RUN --data CSV [--label-column label] [--split val|train|all]

Exports RUN's float TFLite and int8 TFLite (into RUN/export/, unless there), preprocesses the CSV's images with the
run's preprocessing (dermo's Predictor), runs the Keras model and the int8 file (the TFLite interpreter) on them
and prints: images, balanced accuracy float / int8 / change, decisions that agree, sizes float / int8 / ratio.
Use rows no choice was made on (e.g. benchmarks/isic2018.py's report fold, meta-binary-report.csv).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--label-column", default="label")
    p.add_argument("--split", choices=["val", "train", "all"], default="all",
                   help="rows of the CSV's split column to score (all: every row)")
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args(argv)
    import numpy as np
    import pandas as pd
    from sklearn.metrics import balanced_accuracy_score

    from dermo.export import cli as export
    from dermo.export import runtime
    from dermo.predict import Predictor

    out = args.run / "export"
    for quantize, name in (("none", "model.tflite"), ("int8", "model_int8.tflite")):
        if not (out / name).exists():
            assert export.main(["--run", str(args.run), "--format", "tflite", "--quantize", quantize]) == 0
    frame = pd.read_csv(args.data, dtype=str)
    if args.split != "all":
        frame = frame[frame["split"] == args.split]
    predictor = Predictor.from_run(args.run)
    index = {c: i for i, c in enumerate(predictor.classes)}
    labels = frame[args.label_column].map(index).to_numpy(int)
    int8 = runtime.load(out / "model_int8.tflite", "tflite")
    keras_probs, int8_probs = [], []
    paths = list(frame["image"])
    for start in range(0, len(paths), args.batch):
        x = predictor.preprocess(paths[start:start + args.batch])[0]             # (b,S,S,3) float32 0..255
        keras_probs.append(np.asarray(predictor.model.predict_on_batch(x)))
        int8_probs.append(np.concatenate([int8(x[i:i + 1])["probs"] for i in range(len(x))]))
    f, q = np.concatenate(keras_probs).argmax(1), np.concatenate(int8_probs).argmax(1)
    ba_f, ba_q = balanced_accuracy_score(labels, f), balanced_accuracy_score(labels, q)
    size_f, size_q = (out / "model.tflite").stat().st_size, (out / "model_int8.tflite").stat().st_size
    result = {"run": str(args.run), "data": str(args.data), "images": int(len(labels)),
              "balanced_accuracy_float": round(float(ba_f), 4), "balanced_accuracy_int8": round(float(ba_q), 4),
              "change": round(float(ba_q - ba_f), 4), "decisions_agree": round(float(np.mean(f == q)), 4),
              "size_float_mb": round(size_f / 1e6, 2), "size_int8_mb": round(size_q / 1e6, 2),
              "size_ratio": round(size_f / size_q, 2)}
    print(json.dumps(result, indent=2))
    (out / "int8-benchmark.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
