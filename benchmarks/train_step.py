"""Cost of the CAM-regularised train_step vs a plain Keras fit with cross-entropy.

Same backbone, image size, batch and in-memory data. Throughput is measured in this process (both models,
after warm-up); peak memory of each variant in its own subprocess (peak RSS growth on CPU, TF's peak allocator
bytes on GPU). Prints both ratios last:  speed ratio = cam img/s ÷ plain img/s (goal ≥ 0.90),
memory ratio = cam ÷ plain (goal ≤ 1.25).

    python3 benchmarks/train_step.py [--backbone B0] [--size 224] [--batch 16] [--steps 10]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_data(n, size, k=2):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    y = np.eye(k, dtype="float32")[np.arange(n) % k]
    m = np.zeros((n, size, size, 1), "float32")
    m[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    return x, y, m


def build(variant, backbone, size):
    import keras

    from dermo.model.network import build_graph
    from dermo.run.config import TrainConfig
    from dermo.training.setup import build_model, compile_model

    cfg = TrainConfig(backbone=backbone, image_size=size, weights="none")
    if variant == "cam":
        model = build_model(cfg, 2)
        compile_model(model, cfg)
        return model
    inputs, outputs = build_graph(backbone, 2, size, "none")
    model = keras.Model(inputs, outputs["probs"])
    model.compile(optimizer=keras.optimizers.Adadelta(1.0, rho=0.9), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def fit_once(model, variant, x, y, m, batch):
    targets = (y, m) if variant == "cam" else y
    model.fit(x, targets, batch_size=batch, epochs=1, verbose=0, shuffle=False)


def throughput(args):
    x, y, m = make_data(args.batch * args.steps, args.size)
    rates = {}
    models = {v: build(v, args.backbone, args.size) for v in ("plain", "cam")}
    for v, model in models.items():                       # warm-up: tracing
        fit_once(model, v, x[: args.batch * 2], y[: args.batch * 2], m[: args.batch * 2], args.batch)
    for _ in range(2):                                    # alternate to even out machine noise
        for v, model in models.items():
            t = time.perf_counter()
            fit_once(model, v, x, y, m, args.batch)
            rates.setdefault(v, []).append(len(x) / (time.perf_counter() - t))
    return {v: max(r) for v, r in rates.items()}


def peak_memory_child(variant, args):
    """Run in a subprocess: peak memory growth of training steps only (after the model is built)."""
    import tensorflow as tf

    x, y, m = make_data(args.batch * args.steps, args.size)
    model = build(variant, args.backbone, args.size)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fit_once(model, variant, x, y, m, args.batch)
    if gpu:
        return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="B0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--memory-child", choices=["plain", "cam"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        print(json.dumps({"peak": peak_memory_child(args.memory_child, args)}))
        return 0
    mem = {}
    for v in ("plain", "cam"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", v, "--backbone", args.backbone,
                              "--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        mem[v] = json.loads(out.stdout.strip().splitlines()[-1])["peak"]
    rates = throughput(args)
    print(f"EfficientNet{args.backbone}, {args.size} px, batch {args.batch}, {args.steps} steps")
    for v in ("plain", "cam"):
        print(f"  {v:5s}: {rates[v]:7.2f} img/s, peak memory of the steps {mem[v] / 2**20:8.1f} MiB")
    print(f"speed ratio (cam/plain, goal >= 0.90): {rates['cam'] / rates['plain']:.3f}")
    print(f"memory ratio (cam/plain, goal <= 1.25): {mem['cam'] / max(mem['plain'], 1):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
