"""Loss-term ablation: train the loss grid on the same data and seed, evaluate each run, tabulate.

    python -m dermo.ablation --task binary --data DATA --backbone B0 [--epochs N] --out runs/ablation
    python -m dermo.ablation --demo --out runs/ablation            # demo data and demo training settings
    python -m dermo.ablation ... --configs baseline,+center        # a subset of the grid

Accepts every train.py option. Each configuration trains in OUT/<config>/ (dermo.training.train on the
options with its loss weights overridden) and is evaluated on the validation split (OUT/<config>/eval-val/).
A run already trained is reused and one already evaluated is only read, so an interrupted ablation
continues where it stopped (--resume is implied: a training cut off mid-way resumes from its last
epoch). Writes OUT/ablation.csv, OUT/ablation.md and OUT/ablation.png (docs/method.md §5, §9).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dermo.errors import DermoError, run_cli
from dermo.run import folder as runs
from dermo.run.config import TrainConfig, add_train_arguments

# The grid, cumulative: each configuration switches on one more loss term than the one above it.
# name -> (centre term on, CSKL variant, mask term on); None: the train options exactly as given.
# A term that is on takes its λ from the options (defaults λ1 1.0, λ2 0.1, λ3 0.5); a term off gets λ 0.
CONFIGS: dict[str, tuple[bool, str, bool] | None] = {
    "baseline": (False, "off", False),             # CE (binary) / focal (multiclass) only
    "+center": (True, "off", False),
    "+cskl-original": (True, "original", False),
    "+cskl-penalized": (True, "penalized", False),
    "+mask": (True, "penalized", True),            # all four terms
    "full": None,                                  # the options as given (defaults: same as +mask)
}
LOSS_FIELDS = ("lambda_center", "lambda_cskl", "cskl", "lambda_mask")
METRICS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "kappa": "kappa",
           "auc": "AUC", "lesion_focus": "lesion focus", "max_abs_cam": "max |CAM|"}
TIMES = ("train_s", "eval_s", "wall_s")
# options that do not change what a run learns: a finished run is reused across them
NOT_SETTINGS = ("out", "resume", "workers", "cache_dir", "demo", "allow_duplicates")
EVAL_DIR = "eval-val"
TIMING = "ablation_timing.json"
CSV, MARKDOWN, CHART = "ablation.csv", "ablation.md", "ablation.png"


class AblationError(DermoError, ValueError):
    """An ablation that cannot run as asked; one line naming the option or folder and the fix."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dermo.ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", action="store_true", help="the demo data and demo training settings")
    add_train_arguments(p)
    p.add_argument("--configs", help=f"comma-separated subset of: {', '.join(CONFIGS)} (default: all)")
    return p.parse_args(argv)


def select_configs(spec: str | None) -> list[str]:
    """"a,b" -> the named configurations in grid order; None -> all of them."""
    if not spec:
        return list(CONFIGS)
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in CONFIGS]
    if unknown or not wanted:
        raise AblationError(f"--configs {spec}: unknown configuration {', '.join(unknown) or '(none)'}; "
                            f"choose from {', '.join(CONFIGS)}")
    return [name for name in CONFIGS if name in wanted]


def loss_overrides(base: TrainConfig, name: str) -> dict:
    """The four loss options of configuration `name` (the base's values for the terms it switches on)."""
    terms = CONFIGS[name]
    if terms is None:
        return {k: getattr(base, k) for k in LOSS_FIELDS}
    center, cskl, mask = terms
    return {"lambda_center": base.lambda_center if center else 0.0,
            "lambda_cskl": base.lambda_cskl if cskl != "off" else 0.0,
            "cskl": cskl, "lambda_mask": base.lambda_mask if mask else 0.0}


def config_for(base: TrainConfig, name: str, run_dir) -> TrainConfig:
    return dataclasses.replace(base, **loss_overrides(base, name), out=str(run_dir), resume=False)


def settings(d: dict) -> dict:
    """The options of a config (TrainConfig fields of a dict) that change what the run learns; an option
    missing from an older saved config has its default (what that run did)."""
    full = dataclasses.asdict(TrainConfig.from_dict(d))
    return {k: v for k, v in full.items() if k not in NOT_SETTINGS}


def check_run_folder(cfg: TrainConfig) -> None:
    """Refuse a run folder that holds a run trained with other options (it would be silently reused)."""
    run_dir = cfg.run_dir
    for name in (runs.CONFIG, runs.RESUME_CONFIG):
        if (run_dir / name).exists():
            saved, wanted = settings(runs.read_json(run_dir / name)), settings(dataclasses.asdict(cfg))
            diff = [f"{k} {saved[k]!r} vs {wanted[k]!r}" for k in wanted if saved[k] != wanted[k]]
            if diff:
                raise AblationError(f"{run_dir}: holds a run with other options ({'; '.join(diff[:4])}); "
                                    "choose another --out or delete that folder")
            return


def plan(base: TrainConfig, names: list[str], out: Path) -> list[tuple[str, TrainConfig]]:
    """(name, config) per configuration; one with the same settings as an earlier one shares its run."""
    planned, seen = [], {}
    for name in names:
        cfg = config_for(base, name, out / name)
        key = json.dumps(settings(dataclasses.asdict(cfg)), sort_keys=True, default=str)
        if key in seen:
            cfg = seen[key]
        else:
            check_run_folder(cfg)
            seen[key] = cfg
        planned.append((name, cfg))
    return planned


def _import_script(name: str):
    """train.py / evaluate.py live beside the dermo package (the repository root)."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.append(root)
    import importlib

    return importlib.import_module(name)


def ensure_run(cfg: TrainConfig, log=print) -> dict:
    """Train (or resume) and evaluate one configuration unless already done -> its metrics.json dict,
    plus the times: train_s (Keras fit), eval_s (prediction), wall_s (train()+evaluation wall clock)."""
    import keras

    from dermo.training import trainer as training
    from dermo.training.checkpoint import read_resume_state

    run_dir = cfg.run_dir
    timing = runs.read_json(run_dir / TIMING) if (run_dir / TIMING).exists() else {}
    if not (run_dir / runs.CONFIG).exists():
        resume = read_resume_state(run_dir) is not None
        log(f"== {run_dir}: {'resuming' if resume else 'training'}")
        keras.backend.clear_session()
        start = time.perf_counter()
        training.train(dataclasses.replace(cfg, resume=resume), log)
        timing = {"train_wall_s": time.perf_counter() - start}
        runs.write_json(run_dir / TIMING, timing)
    metrics_path = run_dir / EVAL_DIR / "metrics.json"
    if not metrics_path.exists():
        log(f"== {run_dir}: evaluating")
        evaluate = _import_script("evaluate")
        start = time.perf_counter()
        evaluate.evaluate(evaluate.parse_args(["--run", str(run_dir), "--batch-size", str(cfg.batch_size),
                                               "--out", str(run_dir / EVAL_DIR)]), log)
        timing = {**timing, "eval_wall_s": time.perf_counter() - start}
        runs.write_json(run_dir / TIMING, timing)
    m = runs.read_json(metrics_path)
    walls = [timing.get("train_wall_s"), timing.get("eval_wall_s")]
    return {**m, "train_s": runs.read_json(run_dir / runs.CONFIG).get("train_seconds"),
            "eval_s": m.get("predict_seconds"),
            "wall_s": round(sum(walls), 1) if None not in walls else None}


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


def _cell(x, digits: int = 4) -> str:
    if isinstance(x, str):
        return x
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)]) + "\n"


def markdown(table: pd.DataFrame, base: TrainConfig) -> str:
    """ablation.md: setting, the configurations' loss options, the metrics and times per configuration."""
    setting = (f"data `{base.data}`, task {base.task}, backbone {base.backbone}, {base.image_size} px, "
               f"at most {base.epochs} epoch(s), batch {base.batch_size}, weights {base.weights}, seed {base.seed}")
    config_rows = [[r.config, _cell(r.lambda_center, 2), _cell(r.lambda_cskl, 2), r.cskl,
                    _cell(r.lambda_mask, 2), f"`{r.run}/`"] for r in table.itertuples()]
    metric_rows = [[r["config"], *(_cell(r[k]) for k in METRICS), *(_cell(r[k], 1) for k in TIMES)]
                   for _, r in table.iterrows()]
    failed = [f"- `{r.config}` failed: {r.error}" for r in table.itertuples() if r.error]
    return "\n".join([
        "# Loss-term ablation", "",
        f"Same data, options and seed for every configuration: {setting}.", "",
        "The grid is **cumulative**: each configuration adds one loss term to the one above it — "
        "`baseline` is CE (binary) / focal (multiclass) only, `+center` adds the centre loss (λ1), "
        "`+cskl-original` adds the original CSKL (λ2), `+cskl-penalized` swaps it for the penalised CSKL, "
        "`+mask` adds the lesion-focus mask loss (λ3), so it trains all four terms. `full` is the train "
        "options exactly as given; with the default options it equals `+mask`, and a configuration with "
        "the same settings as an earlier one reuses that run instead of training it twice. A term switched "
        "on takes its λ from the options (defaults λ1 1.0, λ2 0.1, λ3 0.5).", "",
        _md_table(["configuration", "λ_center", "λ_cskl", "cskl", "λ_mask", "run"], config_rows),
        "Validation split (each run's `eval-val/metrics.json`). max |CAM| is the largest CAM magnitude "
        "over every class and image (the deck's \"dominant weights\"); lesion focus is the share of "
        "positive CAM mass inside the lesion mask. train s: Keras fit time; eval s: evaluation time; "
        "wall s: training + evaluation wall clock (n/a when the run was trained outside the ablation).", "",
        _md_table(["configuration", *METRICS.values(), *TIMES], metric_rows),
        *(["## Failed", "", *failed, ""] if failed else []),
    ])


def plot_ablation(table: pd.DataFrame, path) -> Path:
    """One bar chart: the five 0..1 metrics grouped per configuration, and max |CAM| beside them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scores = [k for k in METRICS if k != "max_abs_cam"]
    x = np.arange(len(table))                                     # one group per configuration
    width = 0.8 / len(scores)
    fig = Figure(figsize=(max(8.0, 1.6 * len(table) + 4), 4.5))
    ax, ax_cam = fig.subplots(1, 2, width_ratios=[3, 1])
    for i, k in enumerate(scores):
        ax.bar(x + (i - (len(scores) - 1) / 2) * width, table[k].fillna(0).to_numpy(float), width,
               label=METRICS[k])
    ax.set_xticks(x, table["config"], rotation=30, ha="right")
    low = float(np.nanmin(table[scores].to_numpy(float), initial=0.0))     # kappa can be negative
    ax.set_ylim(low - 0.05 if low < 0 else 0.0, 1.18)
    ax.set_yticks(np.arange(0, 1.01, 0.2))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title("Validation metrics per loss configuration")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncols=len(scores), frameon=False)
    ax_cam.bar(x, table["max_abs_cam"].fillna(0).to_numpy(float), 0.6, color="tab:red")
    ax_cam.set_xticks(x, table["config"], rotation=30, ha="right")
    ax_cam.set_title("max |CAM|")
    ax_cam.set_ylabel("dominant weights")
    ax_cam.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def main(argv=None) -> int:
    args = parse_args(argv)

    def body() -> int:
        names = select_configs(args.configs)
        out = Path(args.out) if args.out else Path("runs") / f"ablation-{args.task}-{args.backbone.lower()}"
        # every configuration continues by itself (--resume is implied and not train.py's single-run one)
        base = _import_script("train").resolve_config(argparse.Namespace(**{**vars(args), "resume": False}))
        table = ablation(base, names, out)
        return 1 if table["error"].astype(bool).any() else 0

    return run_cli(body, "dermo.ablation")


if __name__ == "__main__":
    sys.exit(main())
