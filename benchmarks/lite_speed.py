"""Training speed of EfficientNet-Lite0 against B0, in one run: dermo's CAM train step (build_model +
compile_model, all four loss terms, Adadelta) on the same in-memory batches, after an untimed warm-up, at each
size; prints img/s and the ratio Lite0 ÷ B0.

    python3 benchmarks/lite_speed.py [--sizes 128,224] [--batch 16] [--steps 12] [--jit off]

Random weights for both (speed does not depend on the values). On 2 CPU cores use --jit off (XLA on this CPU is
~10× slower); benchmarks/README.md has the figures.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="128,224")
    p.add_argument("--backbones", default="B0,lite0")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=12, help="timed training steps per backbone and size")
    p.add_argument("--jit", choices=["on", "off"], default="off")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from throughput import time_training
    from train_step import make_data

    sizes = [int(s) for s in args.sizes.split(",")]
    backbones = args.backbones.split(",")
    print(f"keras {keras.__version__} ({keras.backend.backend()}), batch {args.batch}, {args.steps} timed steps, "
          f"XLA {args.jit}, {os.cpu_count()} CPU cores", flush=True)
    rates = {}
    for size in sizes:
        data = make_data(args.batch * min(args.steps, 8), size)
        for name in backbones:
            opts = SimpleNamespace(backbone=name, size=size, batch=args.batch, steps=args.steps)
            rates[(name, size)] = time_training("cam", opts, "fp32", args.jit == "on", data)
            print(f"  {name} {size} px: {rates[(name, size)]:.1f} img/s", flush=True)
    print()
    print("| size | " + " | ".join(f"{b} img/s" for b in backbones) + f" | {backbones[1]} ÷ {backbones[0]} |")
    print("|---|" + "---|" * (len(backbones) + 1))
    for size in sizes:
        cells = " | ".join(f"{rates[(b, size)]:.1f}" for b in backbones)
        print(f"| {size} | {cells} | {rates[(backbones[1], size)] / rates[(backbones[0], size)]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
