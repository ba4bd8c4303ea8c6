"""Training throughput of the CAM-regularised step vs a plain Keras fit, and of the input pipeline, in one table.

    python3 benchmarks/throughput.py [--backend tensorflow|jax] [--backbone B0] [--size 224] [--batch 64]
                                     [--steps 20] [--precision fp32,mixed] [--jit on,off] [--workers N]
                                     [--pipeline-images 256] [--skip-pipeline]

For every precision (fp32; mixed = mixed_float16 with loss scaling under TensorFlow, mixed_bfloat16 under JAX)
and every jit setting (XLA on/off), two models are timed on the same in-memory batch stream, after one
untimed warm-up epoch (compilation):
  cam    dermo's CAMModel (build_model + compile_model: the CAM-regularised train_step, all four loss terms);
  plain  the same graph image -> probs compiled with Keras' categorical cross-entropy (Model.fit's own step).
Then the input pipeline: LesionBatches(training=True, workers=--workers, default all cores) through Keras'
PyDataset adapter, as model.fit reads it, over synthetic images preprocessed into a temporary cache at
the same size (setup untimed; benchmarks/pipeline.py). Prints one table, then
  cam / plain          per precision and jit (goal >= 0.9)
  pipeline / training  pipeline img/s ÷ the fastest cam img/s (goal >= 1.2: the pipeline is not the bottleneck)

Needs no TensorFlow with --backend jax (the GPU machines carry JAX, no TensorFlow): benchmarks/README.md has
the exact commands.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=["tensorflow", "jax"], default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    p.add_argument("--backbone", default="B0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed training steps per variant")
    p.add_argument("--precision", default="fp32,mixed", help="comma list of fp32, mixed")
    p.add_argument("--jit", default="on,off", help="comma list of on, off")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="pipeline worker processes")
    p.add_argument("--pipeline-images", type=int, default=256, help="synthetic images for the pipeline")
    p.add_argument("--skip-pipeline", action="store_true")
    return p.parse_args(argv)


def build(variant: str, args, precision: str, jit: bool):
    import keras

    from dermo.model.network import build_graph
    from dermo.run.config import TrainConfig
    from dermo.training.setup import build_model, compile_model, precision_policy

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(precision_policy() if precision == "mixed" else "float32")
    cfg = TrainConfig(backbone=args.backbone, image_size=args.size, weights="none",
                      mixed_precision=precision == "mixed")
    if variant == "cam":
        model = build_model(cfg, 2)
        compile_model(model, cfg, jit)
        return model
    inputs, outputs = build_graph(args.backbone, 2, args.size, "none")
    model = keras.Model(inputs, outputs["probs"])
    optimizer = keras.optimizers.Adadelta(1.0, rho=0.9)
    if precision == "mixed" and keras.backend.backend() == "tensorflow":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"], jit_compile=jit)
    return model


def time_training(variant: str, args, precision: str, jit: bool, data) -> float:
    """img/s of model.fit on in-memory batches, after an untimed warm-up epoch."""
    x, y, m = data
    model = build(variant, args, precision, jit)
    targets = (y, m) if variant == "cam" else y
    per_epoch = len(x) // args.batch
    warm = 2 * args.batch
    model.fit(x[:warm], (y[:warm], m[:warm]) if variant == "cam" else y[:warm], batch_size=args.batch, epochs=1,
              verbose=0, shuffle=False)
    epochs = max(1, math.ceil(args.steps / per_epoch))
    t0 = time.perf_counter()
    model.fit(x, targets, batch_size=args.batch, epochs=epochs, verbose=0, shuffle=False)
    seconds = time.perf_counter() - t0
    del model
    gc.collect()
    return epochs * per_epoch * args.batch / seconds


def time_input_pipeline(args) -> tuple[float, int]:
    from pipeline import make_cache, time_pipeline

    with tempfile.TemporaryDirectory(prefix="dermo-bench-throughput-") as tmp:
        items = make_cache(Path(tmp), args.pipeline_images, max(args.size + 64, int(args.size * 1.3)), args.size)
        time_pipeline(items[:2 * args.batch], args.size, min(args.batch, len(items) // 2), args.workers, 1)  # warm
        return time_pipeline(items, args.size, min(args.batch, len(items)), args.workers, 1), len(items)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from dermo.training.devices import backend_devices, device_lines

    precisions = [p for p in args.precision.split(",") if p]
    jits = [j == "on" for j in args.jit.split(",") if j]
    devices = backend_devices()
    for line in device_lines(devices):
        print(line)
    print(f"keras {keras.__version__} ({keras.backend.backend()}), EfficientNet{args.backbone}, {args.size} px, "
          f"batch {args.batch}, {args.steps} timed steps per variant; {os.cpu_count()} CPU cores", flush=True)
    from train_step import make_data                     # the synthetic batch train_step.py times

    data = make_data(args.batch * min(args.steps, 8), args.size)
    rows = []                                               # (precision, jit, variant, img/s)
    for precision in precisions:
        for jit in jits:
            for variant in ("plain", "cam"):
                rate = time_training(variant, args, precision, jit, data)
                rows.append((precision, jit, variant, rate))
                print(f"  measured {variant:5s} {precision:5s} jit {'on ' if jit else 'off'}: {rate:9.1f} img/s",
                      flush=True)
    pipeline, n_images = (None, 0) if args.skip_pipeline else time_input_pipeline(args)
    print()
    print(f"| step | precision | XLA jit | img/s | cam ÷ plain |")
    print("|---|---|---|---|---|")
    rates = {(p, j, v): r for p, j, v, r in rows}
    for p, j, v, r in rows:
        ratio = f"{r / rates[(p, j, 'plain')]:.2f}" if v == "cam" else ""
        print(f"| {v} | {p} | {'on' if j else 'off'} | {r:.1f} | {ratio} |")
    if pipeline is not None:
        print(f"| input pipeline ({args.workers} workers, {n_images} images) | | | {pipeline:.1f} | |")
        best = max(r for (_, _, v), r in rates.items() if v == "cam")
        print()
        print(f"pipeline / training: {pipeline / best:.2f} (pipeline {pipeline:.1f} img/s ÷ fastest cam step "
              f"{best:.1f} img/s; goal >= 1.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
