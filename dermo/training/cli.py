"""Train a CAM-regularised EfficientNet lesion classifier (docs/method.md §9 lists every option).

    dermo train --demo                                  # generated demo data, ~2 min on 2 CPU cores
    dermo train --task binary --data DATA --backbone B0 --weights imagenet --out runs/b0
    dermo train --resume runs/b0                        # continue an interrupted run (= --resume --out runs/b0)
    dermo train --resume --out runs/b0 --epochs 80      # train a run (finished or not) for longer
    (python3 train.py ... is the same command)

The run folder (--out) gets config.json, split.csv, model.keras / model.h5, best.weights.h5, history.csv,
curves.png; evaluate it with `dermo evaluate --run RUN`.

Each epoch prints one line: its seconds, the training loss with each active term (cls, centre, cskl, mask, …) and
accuracy, then the whole val set's loss, accuracy (acc), balanced accuracy (bal.acc), κ, AUC, cf.acc — the
accuracy on the val images with each lesion pasted onto the surroundings of an image of another class (a model that
reads the lesion keeps it; one that reads the surroundings loses it) — and worst = min(acc, cf.acc), then the
learning rate. history.csv has every number per epoch (epochs counted from 0 there, from 1 on the console).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from dermo.console import given_options, parser
from dermo.data.imageio import BadInputError
from dermo.errors import DermoError, run_cli
from dermo.run.config import TrainConfig, check_config
from dermo.run.options import add_train_arguments, config_from_args

PROG = "dermo train"
# --demo (synthetic): generated dermoscopy-like images, small and short enough for ~2 minutes on 2 CPU cores.
DEMO_DATA = Path("data/demo")
DEMO = dict(task="binary", n=480, seed=0, size=128)
DEMO_TRAIN = dict(backbone="B0", image_size=96, batch_size=16, epochs=12, weights="none",
                  early_stopping_patience=6)
# --demo real: the 439 CC0 ISIC images shipped in the repository (melanoma vs nevus), fine-tuned from ImageNet
# Lite0 for a fixed number of epochs, the last one kept (no choice made on its ~90 val images)
REAL_DEMO_DATA = Path(__file__).resolve().parents[2] / "data" / "isic-uda1" / "metadata.csv"
REAL_DEMO_TRAIN = dict(backbone="lite0", weights="imagenet", image_size=128, batch_size=16, epochs=8,
                       monitor="last", label_column="diagnosis")
DEMOS = ("synthetic", "real")
# what a demo decides itself: typed beside --demo, these are refused rather than silently overridden
DEMO_FIXED = ("data", "task", "label_column", "group_column", "meta_columns")
# --resume: options that may differ from the run's. EXTENDABLE change the plan (said in a line); RUNTIME change
# how it runs, not what it learns.
EXTENDABLE = ("epochs", "early_stopping_patience", "lr_patience")
RUNTIME = ("workers", "cache_dir", "on_bad_image", "resume", "out", "demo")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = parser(prog, __doc__)
    p.add_argument("--demo", nargs="?", const="synthetic", choices=DEMOS, default=False,
                   help="train on built-in data, no download, ~2-3 min on 2 CPU cores, with the demo's own defaults "
                        "in place of those below (options you type still win): synthetic (the default: 480 generated "
                        "images written to data/demo/, B0 from scratch --weights none --image-size 96 --epochs 12 "
                        "--early-stopping-patience 6) or real (the repository's 439 CC0 ISIC images, melanoma vs "
                        "nevus: --backbone lite0 --weights imagenet --image-size 128 --epochs 8 --monitor last)")
    add_train_arguments(p)
    return p


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    p = build_parser(prog)
    args = p.parse_args(argv)
    args.given = given_options(p, argv if argv is not None else sys.argv[1:])
    return args


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resumed_config(cfg: TrainConfig, given: set[str], log=print) -> TrainConfig:
    """The run's own options (resume_config.json) for --resume: an option typed now that differs from them is
    refused, except the EXTENDABLE ones (more epochs, more patience), which change the plan with a line."""
    from dermo.run import folder as runs

    saved = TrainConfig.from_dict(runs.read_json(Path(cfg.out) / runs.RESUME_CONFIG))
    differ = [k for k in sorted(given) if k not in RUNTIME and getattr(cfg, k, None) != getattr(saved, k, None)]
    fixed = [k for k in differ if k not in EXTENDABLE]
    if fixed:
        listing = ", ".join(f"{_flag(k)} {getattr(cfg, k)} (the run's: {getattr(saved, k)})" for k in fixed)
        raise DermoError(f"{cfg.out}: --resume continues the run as it was started, and {listing} differ from it; "
                         "leave them out, or train anew with another --out")
    for k in differ:
        log(f"extending the run: {_flag(k)} {getattr(saved, k)} -> {getattr(cfg, k)}")
        setattr(saved, k, getattr(cfg, k))
    for k in ("workers", "cache_dir", "on_bad_image"):
        if k in given:
            setattr(saved, k, getattr(cfg, k))
    saved.resume, saved.out = True, cfg.out
    if differ:
        runs.write_json(Path(cfg.out) / runs.RESUME_CONFIG, {**runs.read_json(Path(cfg.out) / runs.RESUME_CONFIG),
                                                              **{k: getattr(saved, k) for k in differ}})
    return saved


def resolve_config(args: argparse.Namespace, log=print) -> TrainConfig:
    """Options -> checked TrainConfig: --resume reloads the run's saved options (resumed_config), --demo fills in
    the demo's (the user's own options win) and writes the demo data. `args.given`: the options typed (default:
    those differing from the parser's defaults)."""
    from dermo.run import folder as runs

    given = getattr(args, "given", None)
    if given is None:
        defaults = vars(build_parser().parse_args([]))
        given = {k for k, v in vars(args).items() if v != defaults.get(k)}
    cfg = config_from_args(args)
    if cfg.resume and not cfg.out and args.demo:
        cfg.out = "runs/demo-real" if args.demo == "real" else "runs/demo"     # where the demo wrote its run
    if cfg.resume and not cfg.out:
        raise DermoError("--resume needs the run folder to continue: --resume RUN (or --resume --out RUN)")
    if cfg.resume and not (Path(cfg.out) / runs.RESUME_CONFIG).exists():
        raise DermoError(f"{cfg.out}: nothing to resume (no {runs.RESUME_CONFIG}: not a run folder of "
                         "dermo train); start without --resume")
    if cfg.resume:
        cfg = resumed_config(cfg, given, log)
        check_options(cfg)
        return cfg
    if args.demo:
        cfg = demo_config(cfg, args.demo, given)
    if not cfg.data:
        raise DermoError("--data is required (or --demo, or --resume --out RUN)")
    if not cfg.out:
        cfg.out = str(Path("runs") / runs.default_run_name(cfg))
    check_options(cfg)
    if cfg.demo == "synthetic":
        from dermo.data.synthetic import ensure_demo_dataset

        ensure_demo_dataset(Path(cfg.data), **DEMO)
    return cfg


def demo_config(cfg: TrainConfig, demo: str, given: set[str]) -> TrainConfig:
    """The demo's data and options; the user's own options win, except those the demo decides (DEMO_FIXED),
    which are refused in one line rather than ignored."""
    fixed = [k for k in DEMO_FIXED if k in given]
    if fixed:
        raise DermoError(f"--demo trains on its own data, so {_flag(fixed[0])} {getattr(cfg, fixed[0])} would be "
                         f"ignored; drop {_flag(fixed[0])}, or drop --demo to train on your data")
    if demo == "real":
        if not REAL_DEMO_DATA.exists():
            raise DermoError(f"--demo real: {REAL_DEMO_DATA} not found; its 439 images ship with the repository "
                             "(data/isic-uda1/): run from a clone of it")
        own = {**REAL_DEMO_TRAIN, "data": str(REAL_DEMO_DATA), "task": "auto", "out": cfg.out or "runs/demo-real"}
    else:
        own = {**DEMO_TRAIN, "data": str(DEMO_DATA / DEMO["task"]), "task": DEMO["task"], "out": cfg.out or "runs/demo"}
    return TrainConfig.from_dict({**vars(cfg), **{k: v for k, v in own.items() if k not in given}, "demo": demo})


def check_options(cfg: TrainConfig) -> None:
    """Every check that needs no TensorFlow, before it is imported (a mistake is answered in well under 1 s)."""
    from dermo.model.backbones import check_image_size, check_weights, get_backbone

    check_config(cfg)
    spec = get_backbone(cfg.backbone)
    check_image_size(spec, cfg.image_size)
    check_weights(cfg.weights, spec)


def main(argv=None, prog: str = PROG) -> int:
    import time

    started = time.time()
    args = parse_args(argv, prog)

    def run() -> int:
        cfg = resolve_config(args)                  # options checked before TensorFlow is imported
        from dermo.training.trainer import train

        out = Path(cfg.out)
        existed = out.exists()
        try:
            train(cfg, started=started)
        except DermoError as e:
            if not existed and not (out / "backup").exists():
                shutil.rmtree(out, ignore_errors=True)       # nothing trained: no half-made run folder left
            if isinstance(e, BadInputError) and cfg.on_bad_image != "skip":
                raise BadInputError(e.path, f"{e.problem}; pass --on-bad-image skip to skip (and list) such "
                                            "files") from None
            raise
        return 0

    return run_cli(run, prog)


if __name__ == "__main__":
    sys.exit(main())
