"""How the input pipeline scales with cores: 1 worker vs N worker processes vs N threads, and CPU time per image.

    python3 benchmarks/scaling.py [--size 299] [--n 96] [--batch 16] [--workers 2] [--rounds 4]

Setup as benchmarks/pipeline.py (synthetic images preprocessed into a temporary cache, untimed). Each round, in
turn: LesionBatches(training=True) through Keras' PyDataset adapter with workers=1 (this process), with
`--workers` processes (dermo's RowPool) and with `--workers` threads (the pool switched off: the pre-2026-11
design), each preceded by the machine's 2-thread ceiling (benchmarks/pipeline.py: ~2.0 idle, ~1.0 when another
process holds a core). Reports per round and the medians of the rounds whose ceiling was >= 1.7 (all rounds if
none), and the CPU seconds per image of each mode (this process plus its pool workers, from /proc), which do not
depend on how busy the machine is: per-core img/s = 1 / (CPU s per image).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

QUIET = 1.7


def cpu_seconds(pids) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick       # utime + stime
        except OSError:
            pass
    return total


def run_mode(items, args, mode: str) -> tuple[float, float]:
    """-> (img/s, CPU s per image) of one epoch."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from dermo.pipeline.batches import LesionBatches

    workers = 1 if mode == "1 worker" else args.workers
    ds = LesionBatches(items, 2, args.size, args.batch, training=True, workers=workers)
    if mode.endswith("threads"):
        ds._pool = None                                    # Keras' thread enqueuer only
    pool_pids = list(ds._pool._executor._processes) if ds._pool is not None and ds._pool._executor._processes else []
    adapter = PyDatasetAdapter(ds, shuffle=False)
    cpu0 = time.process_time() + cpu_seconds(pool_pids)
    t0, done = time.perf_counter(), 0
    adapter.on_epoch_begin()
    for x, _ in adapter.get_numpy_iterator():
        done += len(x)
    adapter.on_epoch_end()
    wall = time.perf_counter() - t0
    if ds._pool is not None:
        pool_pids = list(ds._pool._executor._processes)
    cpu = time.process_time() + cpu_seconds(pool_pids) - cpu0
    return done / wall, cpu / done


def main(argv=None) -> int:
    from pipeline import make_cache, parallel_ceiling

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args(argv)
    modes = ["1 worker", f"{args.workers} processes", f"{args.workers} threads"]
    with tempfile.TemporaryDirectory(prefix="dermo-bench-scaling-") as tmp:
        items = make_cache(Path(tmp), args.n, max(400, int(args.size * 1.3)), args.size)
        for mode in modes:                                          # warm-up: imports, pool start
            run_mode(items[:2 * args.batch], args, mode)
        rounds = []
        for r in range(args.rounds):
            row = {}
            for mode in modes:
                ceiling = parallel_ceiling(items[:64], rounds=1)
                rate, cpu = run_mode(items, args, mode)
                row[mode] = (ceiling, rate, cpu)
            rounds.append(row)
            print(f"round {r + 1}: " + "   ".join(f"{m} {v[1]:6.1f} img/s (ceiling {v[0]:.2f}, {v[2] * 1e3:.1f} "
                                                  f"ms CPU/img)" for m, v in row.items()), flush=True)
    print(f"{args.size} px, batch {args.batch}, {args.n} images; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    base = None
    for mode in modes:
        quiet = [row[mode] for row in rounds if row[mode][0] >= QUIET] or [row[mode] for row in rounds]
        rate = statistics.median(v[1] for v in quiet)
        cpu = statistics.median(v[2] for v in [row[mode] for row in rounds])
        base = base or rate
        print(f"  {mode:12s} {rate:7.1f} img/s ({len(quiet)} round(s) used)  x{rate / base:.2f}   "
              f"CPU {cpu * 1e3:.1f} ms/img = {1 / cpu:.1f} img/s per core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
