"""Benchmark: evaluate.py's whole main() vs a raw `model.predict`, images per second.

    python benchmarks/evaluate.py [--n 64] [--size 128] [--batch-size 16] [--repeats 2]

Generated binary images (dermo.synthetic, `n` in the val split), a B0 classifier with random weights
saved as .keras. evaluate.main() is timed end to end (load the model file, read the data, preprocessing
cache warm, one pass computing probabilities and CAMs, metrics, report and the four PNGs). The reference
is `model.predict` on the same images, already loaded as arrays, with an already loaded model:
"cold" = its first call (graph tracing included, as in any fresh process), "warm" = a repeated call.
Goal: evaluate / cold predict >= 0.90 (printed last). All files go to a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=256, help="images evaluated (val split); start-up costs dominate below ~200")
    p.add_argument("--size", type=int, default=128, help="model input size, px")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2, help="timed evaluate runs (best is reported)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dermo-bench-eval-") as tmp:
        tmp = Path(tmp)
        os.environ["DERMO_CACHE"] = str(tmp / "cache")
        import contextlib
        import io

        import keras
        import numpy as np

        import evaluate
        from dermo.data.datasets import load_dataset
        from dermo.data.synthetic import write_dataset
        from dermo.model.network import build_graph, inference_model
        from dermo.pipeline.batches import LesionBatches
        from dermo.pipeline.prepare import prepare, settings_for

        data = write_dataset(tmp / "data", "binary", n=int(round(args.n / 0.8)), size=args.size,
                             val_fraction=0.8)
        keras.utils.set_random_seed(0)
        inputs, outputs = build_graph("B0", 2, args.size, weights="none")
        inference_model(keras.Model(inputs, outputs)).save(tmp / "model.keras")
        argv_eval = ["--model", str(tmp / "model.keras"), "--task", "binary", "--data", str(data),
                     "--batch-size", str(args.batch_size), "--out", str(tmp / "eval")]

        def run_main() -> float:
            sink = io.StringIO()
            start = time.perf_counter()
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                rc = evaluate.main(argv_eval)
            elapsed = time.perf_counter() - start
            if rc != 0:
                raise SystemExit(f"evaluate.py failed:\n{sink.getvalue()}")
            return elapsed

        first = run_main()                                   # fills the preprocessing cache
        t_eval = min(run_main() for _ in range(max(1, args.repeats)))
        n = len(load_dataset(data, "binary").val)

        items, _ = prepare(load_dataset(data, "binary").val, settings_for(args.size))
        x = np.concatenate([LesionBatches(items, 2, args.size, args.batch_size)[i][0]
                            for i in range(len(items) // args.batch_size + bool(len(items) % args.batch_size))])
        model = keras.models.load_model(tmp / "model.keras", compile=False, safe_mode=True)
        start = time.perf_counter()
        model.predict(x, batch_size=args.batch_size, verbose=0)
        t_cold = time.perf_counter() - start
        t_warm = min(_timed(lambda: model.predict(x, batch_size=args.batch_size, verbose=0)) for _ in range(3))

    print(f"images: {n} at {args.size} px, B0 (random weights), batch {args.batch_size}, "
          f"{os.cpu_count()} CPU(s)")
    print(f"evaluate.py main(), cold cache: {first:6.2f} s  ({n / first:7.1f} img/s)")
    print(f"evaluate.py main(), warm cache: {t_eval:6.2f} s  ({n / t_eval:7.1f} img/s)")
    print(f"model.predict, first call:      {t_cold:6.2f} s  ({n / t_cold:7.1f} img/s)")
    print(f"model.predict, repeated:        {t_warm:6.2f} s  ({n / t_warm:7.1f} img/s)")
    print(f"ratio evaluate / repeated predict: {t_warm / t_eval:.3f}")
    print(f"ratio evaluate / first predict (goal >= 0.90): {t_cold / t_eval:.3f}")
    return 0


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
