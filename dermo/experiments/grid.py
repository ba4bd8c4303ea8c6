"""The configurations of the loss-term grid and running one of them (train, or reuse / resume, then
evaluate on the validation split) — shared by the single-seed ablation table (dermo.experiments.ablation) and
the seed replicates with test sets (dermo.experiments.replicates); docs/method.md §9.

A run already trained is reused and one already evaluated is only read, so an interrupted grid continues where
it stopped (--resume is implied: a training cut off mid-way resumes from its last epoch); a folder holding a run
trained with other options is refused.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import NamedTuple

from dermo.errors import DermoError
from dermo.run import folder as runs
from dermo.run.config import (RECOMMENDED_LAMBDA_OUTSIDE, RECOMMENDED_LAMBDA_RRR, RECOMMENDED_PASTE_SHARE,
                               TrainConfig)


class Terms(NamedTuple):
    """One configuration of the grid: which terms are on (a term on takes its λ from the options)."""
    center: bool
    cskl: str                      # "off" | "original" | "penalized"
    mask: bool
    outside: bool = False          # λ4 from --lambda-outside, else RECOMMENDED_LAMBDA_OUTSIDE
    cam_stride: int | None = None  # None: the options' --cam-stride
    rrr: bool = False              # λ_rrr from --lambda-rrr, else RECOMMENDED_LAMBDA_RRR
    paste: bool = False            # --paste-share from the options, else RECOMMENDED_PASTE_SHARE


# The grid, cumulative: each configuration switches on one more loss term (or finer CAMs) than the one above
# it; None: the train options exactly as given. A term off gets λ 0.
CONFIGS: dict[str, Terms | None] = {
    "baseline": Terms(False, "off", False),        # CE (binary) / focal (multiclass) only
    "+center": Terms(True, "off", False),
    "+cskl-original": Terms(True, "original", False),
    "+cskl-penalized": Terms(True, "penalized", False),
    "+mask": Terms(True, "penalized", True),       # the deck's loss: all four terms
    "+outside": Terms(True, "penalized", True, True),               # beyond the deck: outside evidence
    "+stride16": Terms(True, "penalized", True, True, 16),          # ... and CAMs on a stride-16 map
    "rrr": Terms(False, "off", False, rrr=True),  # a published remedy, not cumulative: CE + RRR (Ross et al. 2017)
    "paste": Terms(False, "off", False, paste=True),   # the data-side remedy alone: CE + lesions on other surroundings
    "+stride16+paste": Terms(True, "penalized", True, True, 16, paste=True),   # ... with the recommended terms
    "full": None,                                  # the options as given (defaults: same as +mask)
}
LOSS_FIELDS = ("lambda_center", "lambda_cskl", "cskl", "lambda_mask", "lambda_outside", "outside_form",
               "cam_stride", "lambda_rrr", "paste_share")
# options that do not change what a run learns: a finished run is reused across them
NOT_SETTINGS = ("out", "resume", "workers", "cache_dir", "demo", "allow_duplicates")
EVAL_DIR = "eval-val"
TIMING = "ablation_timing.json"


class AblationError(DermoError, ValueError):
    """An ablation that cannot run as asked; one line naming the option or folder and the fix."""


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
    """The loss options (LOSS_FIELDS) of configuration `name`: the base's values for the terms it switches on."""
    terms = CONFIGS[name]
    if terms is None:
        return {k: getattr(base, k) for k in LOSS_FIELDS}
    return {"lambda_center": base.lambda_center if terms.center else 0.0,
            "lambda_cskl": base.lambda_cskl if terms.cskl != "off" else 0.0,
            "cskl": terms.cskl, "lambda_mask": base.lambda_mask if terms.mask else 0.0,
            "lambda_outside": (base.lambda_outside or RECOMMENDED_LAMBDA_OUTSIDE) if terms.outside else 0.0,
            "outside_form": base.outside_form, "cam_stride": terms.cam_stride or base.cam_stride,
            "lambda_rrr": (base.lambda_rrr or RECOMMENDED_LAMBDA_RRR) if terms.rrr else 0.0,
            "paste_share": (base.paste_share or RECOMMENDED_PASTE_SHARE) if terms.paste else 0.0}


def config_for(base: TrainConfig, name: str, run_dir) -> TrainConfig:
    return dataclasses.replace(base, **loss_overrides(base, name), out=str(run_dir), resume=False)


def settings(d: dict) -> dict:
    """The options of a config (TrainConfig fields of a dict) that change what the run learns; an option
    missing from an older saved config has its default (what that run did); --outside-form does nothing while
    λ4 is 0."""
    full = dataclasses.asdict(TrainConfig.from_dict(d))
    inert = NOT_SETTINGS + (("outside_form",) if not full["lambda_outside"] else ())
    return {k: v for k, v in full.items() if k not in inert}


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


def plan(base: TrainConfig, names: list[str], out: Path, sub: str = "") -> list[tuple[str, TrainConfig]]:
    """(name, config) per configuration, run in out/<name>[/<sub>]; one with the same settings as an earlier
    one shares its run."""
    planned, seen = [], {}
    for name in names:
        cfg = config_for(base, name, out / name / sub if sub else out / name)
        key = json.dumps(settings(dataclasses.asdict(cfg)), sort_keys=True, default=str)
        if key in seen:
            cfg = seen[key]
        else:
            check_run_folder(cfg)
            seen[key] = cfg
        planned.append((name, cfg))
    return planned


def evaluate_run(run_dir, log=print, *options: str) -> dict:
    """`dermo evaluate --run RUN [options]` in this process -> its metrics dict."""
    from dermo.evaluation.cli import parse_args
    from dermo.evaluation.scoring import evaluate

    return evaluate(parse_args(["--run", str(run_dir), *options]), log)


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
        start = time.perf_counter()
        evaluate_run(run_dir, log, "--batch-size", str(cfg.batch_size), "--out", str(run_dir / EVAL_DIR))
        timing = {**timing, "eval_wall_s": time.perf_counter() - start}
        runs.write_json(run_dir / TIMING, timing)
    m = runs.read_json(metrics_path)
    walls = [timing.get("train_wall_s"), timing.get("eval_wall_s")]
    return {**m, "train_s": runs.read_json(run_dir / runs.CONFIG).get("train_seconds"),
            "eval_s": m.get("predict_seconds"),
            "wall_s": round(sum(walls), 1) if None not in walls else None}
