"""Train a CAM-regularised EfficientNet lesion classifier.

    python train.py --demo
    python train.py --task binary --data DATA --backbone B0 --weights imagenet --out runs/b0
    python train.py --resume --out runs/b0          # continue an interrupted run

See `python train.py --help` and docs/method.md §9 for every option.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dermo.errors import run_cli
from dermo.run.config import TrainConfig, add_train_arguments, config_from_args

# The demo: generated dermoscopy-like images, small and short enough for ~3 minutes on 2 CPU cores.
DEMO_DATA = Path("data/demo")
DEMO = dict(task="binary", n=480, seed=0, size=128)
DEMO_TRAIN = dict(backbone="B0", image_size=96, batch_size=16, epochs=12, weights="none",
                  early_stopping_patience=6)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", action="store_true",
                   help="generate a small synthetic dataset and train on it (no download)")
    add_train_arguments(p)
    return p.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Options -> TrainConfig: --resume reloads the run's saved options, --demo fills in the demo's."""
    from dermo.errors import DermoError
    from dermo.run import folder as runs

    cfg = config_from_args(args)
    if cfg.resume and not cfg.out:
        raise DermoError("--resume needs --out RUN, the run folder to continue")
    if cfg.resume and not (Path(cfg.out) / runs.RESUME_CONFIG).exists():
        raise DermoError(f"{cfg.out}: nothing to resume (no {runs.RESUME_CONFIG}: not a run folder of "
                         "train.py); start without --resume")
    if cfg.resume:
        saved = TrainConfig.from_dict(runs.read_json(Path(cfg.out) / runs.RESUME_CONFIG))
        saved.resume, saved.out = True, cfg.out
        return saved
    if args.demo:
        from dermo.data.synthetic import ensure_demo_dataset

        defaults = vars(parse_args([]))
        given = {k for k, v in vars(args).items() if v != defaults.get(k)}   # the user's own overrides
        data = DEMO_DATA / DEMO["task"]
        ensure_demo_dataset(data, **DEMO)
        demo = {k: v for k, v in DEMO_TRAIN.items() if k not in given}
        cfg = TrainConfig.from_dict({**vars(cfg), **demo, "data": str(data), "task": DEMO["task"],
                                     "demo": True, "out": cfg.out or "runs/demo"})
    if not cfg.data:
        raise DermoError("--data is required (or --demo, or --resume --out RUN)")
    if not cfg.out:
        cfg.out = str(Path("runs") / runs.default_run_name(cfg))
    return cfg


def main(argv=None) -> int:
    args = parse_args(argv)

    def run() -> int:
        from dermo.training.trainer import train

        train(resolve_config(args))
        return 0

    return run_cli(run, "train.py")


if __name__ == "__main__":
    sys.exit(main())
