"""A training epoch as dermo runs it against a plain Keras fit of the same network fed from memory.

    python3 benchmarks/epoch.py [--data runs/ham10000/binary.csv] [--n 512] [--size 128] [--batch 16] [--workers 2]

The same N images (a CSV manifest's first N rows, e.g. the HAM10000 manifest of benchmarks/ham10000.py; synthetic
images when --data is absent), preprocessed into the cache first (untimed). After one untimed warm-up epoch each
(tracing), one timed epoch of:
  dermo   CAMModel (the four-term CAM step) fit on LesionBatches(training=True, workers=--workers): augmentation,
          masks, shuffling — what `dermo train` does per epoch, without validation;
  plain   the same graph image -> probs compiled with Keras' cross-entropy, fit on the images held in memory.
Prints img/s of each and dermo / plain (goal >= 0.90: the epoch is compute-bound, the CAM terms and the input
pipeline together cost at most 10 %). The CAM step alone against the plain one: benchmarks/train_step.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def items_of(args, tmp: Path):
    from dermo.pipeline.prepare import prepare, settings_for

    if args.data and Path(args.data).exists():
        from dermo.data.datasets import load_dataset

        ds = load_dataset(args.data, "auto", make_split=False)
        samples = ds.val[: args.n]
        return prepare(samples, settings_for(args.size))[0], ds.num_classes
    from pipeline import make_cache

    return make_cache(tmp, args.n, 400, args.size), 2


def timed_fit(model, data, batch: int | None = None) -> float:
    """img/s of one epoch (the first call of a model/data pair also runs an untimed warm-up epoch: tracing)."""
    x, y = data if isinstance(data, tuple) else (data, None)
    kwargs = {"batch_size": batch} if y is not None else {}
    key = (id(model), type(x).__name__)
    if key not in WARM:
        model.fit(x, y, epochs=1, verbose=0, shuffle=False, **kwargs)
        WARM.add(key)
    n = len(x) if y is not None else len(data) * data.batch_size
    start = time.perf_counter()
    model.fit(x, y, epochs=1, verbose=0, shuffle=False, **kwargs)
    return n / (time.perf_counter() - start)


WARM: set = set()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="runs/ham10000/binary.csv", help="a CSV manifest (absent: synthetic images)")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="timed epochs of each, alternating; the best is kept")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from dermo.model.network import build_graph
    from dermo.pipeline.batches import LesionBatches
    from dermo.run.config import TrainConfig
    from dermo.training.setup import build_model, compile_model

    with tempfile.TemporaryDirectory(prefix="dermo-bench-epoch-") as tmp:
        items, k = items_of(args, Path(tmp))
        feed = LesionBatches(items, k, args.size, args.batch, training=True, seed=0, workers=args.workers)
        whole = LesionBatches(items, k, args.size, len(items))[0]                 # the same images, in memory
        x, (y, _) = whole
        n = len(feed) * args.batch
        x, y = x[:n], y[:n]
        cfg = TrainConfig(image_size=args.size, batch_size=args.batch, weights="none")
        model = build_model(cfg, k)
        compile_model(model, cfg, jit_compile=False)
        inputs, outputs = build_graph("B0", k, args.size, "none")
        plain = keras.Model(inputs, outputs["probs"])
        plain.compile(optimizer=keras.optimizers.Adadelta(1.0, rho=0.9), loss="categorical_crossentropy",
                      jit_compile=False)
        runs = {"dermo": lambda: timed_fit(model, feed), "plain": lambda: timed_fit(plain, (x, y), args.batch)}
        rates = {name: 0.0 for name in runs}
        for _ in range(args.rounds):                 # alternate, keep each one's best: machine noise evens out
            for name, run in runs.items():
                rates[name] = max(rates[name], run())
    source = args.data if args.data and Path(args.data).exists() else "synthetic images"
    print(f"B0, {args.size} px, batch {args.batch}, {n} images of {source}, --workers {args.workers}, "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    for name, rate in rates.items():
        print(f"  {name:6s} {rate:7.1f} img/s")
    print(f"dermo / plain (goal >= 0.90): {rates['dermo'] / rates['plain']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
