"""Loss-term ablation: train the loss grid on the same data and seed, evaluate each run, tabulate.

    dermo ablation --task binary --data DATA --backbone B0 [--epochs N] --out runs/ablation
    dermo ablation --demo --out runs/ablation            # demo data and demo training settings
    dermo ablation ... --configs baseline,+center        # a subset of the grid
    dermo ablation ... --seeds 0,1,2 --test clean=DATA --test flipped=DATA   # replicates, test sets

Accepts every `dermo train` option. Each configuration trains in OUT/<config>/ (dermo.training.train on the
options with its loss weights overridden; the grid is dermo.experiments.grid) and is evaluated on the
validation split (OUT/<config>/eval-val/). A run already trained is reused and one already evaluated is only
read, so an interrupted ablation continues where it stopped (--resume is implied: a training cut off mid-way
resumes from its last epoch). Writes OUT/ablation.csv, OUT/ablation.md and OUT/ablation.png (docs/method.md
§5, §9). With --seeds or --test, dermo.experiments.replicates runs OUT/<config>/seed-<s>/ instead and writes
OUT/replicates.csv and OUT/replicates.md (mean ± sd over the seeds, per split).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from dermo.console import parser
from dermo.errors import run_cli
from dermo.experiments.ablation_report import METRICS, TIMES, markdown, plot_ablation
from dermo.experiments.grid import CONFIGS, LOSS_FIELDS, ensure_run, plan, select_configs
from dermo.run.config import TrainConfig
from dermo.run.options import add_train_arguments

CSV, MARKDOWN, CHART = "ablation.csv", "ablation.md", "ablation.png"
PROG = "dermo ablation"


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    p = parser(prog, __doc__)
    p.add_argument("--demo", action="store_true", help="the demo data and demo training settings")
    add_train_arguments(p, out_help="the ablation folder: one run folder per configuration (seed-<s>/ inside with "
                                    "--seeds), ablation.md / replicates.md (default: runs/ablation-<task>-<backbone>)")
    p.add_argument("--configs", help=f"comma-separated subset of: {', '.join(CONFIGS)} (default: all)")
    p.add_argument("--seeds", help="comma-separated seeds: every configuration once per seed, mean ± sd (default: "
                                   "--seed only)")
    p.add_argument("--test", action="append", metavar="NAME=DATA",
                   help="also score every run on this labelled folder/CSV, into RUN/eval-NAME/ (repeatable; "
                        "default: none)")
    return p.parse_args(argv)


def _number(x) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def result_row(name: str, cfg: TrainConfig, out: Path, m: dict | None, error: str = "") -> dict:
    row = {"config": name, "run": cfg.run_dir.relative_to(out).as_posix(),
           **{k: getattr(cfg, k) for k in LOSS_FIELDS}}
    row.update({k: _number((m or {}).get(k)) for k in (*METRICS, *TIMES)})
    row["error"] = error
    return row


def ablation(base: TrainConfig, names: list[str], out, log=print) -> pd.DataFrame:
    """Run (or reuse) each configuration and write the three outputs; returns the table (one row each)."""
    out = Path(out)
    planned = plan(base, names, out)
    out.mkdir(parents=True, exist_ok=True)
    from dermo.training import trainer as training

    rows, results = [], {}                   # run folder -> (metrics, error)
    for name, cfg in planned:
        if cfg.run_dir in results:
            log(f"== {name}: same settings as {cfg.run_dir.name}, its run is reused")
        else:
            try:
                results[cfg.run_dir] = ensure_run(cfg, log), ""
            except training.TrainingError as e:  # one configuration failing (e.g. NaN) does not stop the grid
                results[cfg.run_dir] = None, str(e)
                log(f"== {name}: failed: {e}")
        rows.append(result_row(name, cfg, out, *results[cfg.run_dir]))
    table = pd.DataFrame(rows)
    table.to_csv(out / CSV, index=False)
    (out / MARKDOWN).write_text(markdown(table, base))
    plot_ablation(table, out / CHART)
    log(f"wrote {out / CSV}, {out / MARKDOWN}, {out / CHART}")
    return table


def main(argv=None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)

    def body() -> int:
        names = select_configs(args.configs)
        out = Path(args.out) if args.out else Path("runs") / f"ablation-{args.task}-{args.backbone.lower()}"
        # every configuration continues by itself (--resume is implied and not dermo train's single-run one)
        from dermo.training.cli import resolve_config

        base = resolve_config(argparse.Namespace(**{**vars(args), "resume": False}))
        if args.seeds or args.test:
            from dermo.experiments import replicates

            seeds = replicates.parse_seeds(args.seeds) if args.seeds else [base.seed]
            table = replicates.replicate(base, names, seeds, replicates.parse_tests(args.test), out)
        else:
            table = ablation(base, names, out)
        return 1 if table["error"].astype(bool).any() else 0

    return run_cli(body, prog)


if __name__ == "__main__":
    sys.exit(main())
