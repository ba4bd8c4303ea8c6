"""The ablation grid over several seeds and scored on held-out test sets, summarised as mean ± sd — e.g. the
shortcut check (dermo.data.shortcut; docs/method.md §5, §9):

    dermo ablation --data data/shortcut/biased --seeds 0,1,2 \\
        --test clean=data/shortcut/clean/labels.csv --test flipped=data/shortcut/flipped/labels.csv \\
        --configs baseline,+mask,+outside,+stride16 [dermo train options] --out runs/shortcut

Each configuration and seed trains in OUT/<config>/seed-<s>/ (dermo.experiments.ablation.ensure_run: finished
runs are reused, interrupted ones resumed), is evaluated on its own validation split (eval-val/, the only split
model selection sees) and on every test set (eval-<name>/, dermo evaluate --run RUN --data DATA). Seeds go in the
outer loop, so the first seed of every configuration is done before the second starts. Writes
OUT/replicates.csv (one row per configuration and seed) and OUT/replicates.md (mean ± sd per configuration;
with test sets named `clean` and `flipped`, also the gap flipped − clean accuracy).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dermo.experiments.ablation_report import cell, md_table
from dermo.experiments.grid import EVAL_DIR, LOSS_FIELDS, AblationError, ensure_run, evaluate_run, plan
from dermo.run import folder as runs
from dermo.run.config import TrainConfig

SPLIT_METRICS = {"accuracy": "acc", "balanced_accuracy": "bal. acc", "lesion_focus": "focus",
                 "cam_mask_pearson": "CAM–mask r"}
SUMMARY_METRICS = ("accuracy", "lesion_focus", "cam_mask_pearson")
GAP = ("clean", "flipped")                  # test names of the shortcut check: gap = flipped − clean accuracy
CSV, MARKDOWN = "replicates.csv", "replicates.md"


def parse_seeds(spec: str) -> list[int]:
    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise AblationError(f"--seeds {spec}: give distinct integers separated by commas, e.g. 0,1,2")
    return seeds


def parse_tests(specs: list[str] | None) -> dict[str, str]:
    """["clean=DATA", …] -> {"clean": "DATA"}; names are letters, digits, - and _ (they name eval-<name>/)."""
    tests = {}
    for spec in specs or []:
        name, _, data = spec.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not data or name in ("val", "train") or name in tests:
            raise AblationError(f"--test {spec}: use NAME=DATA with a new name of letters, digits, - or _ "
                                "(not val or train), e.g. --test flipped=data/shortcut/flipped/labels.csv")
        if not Path(data).exists():
            raise AblationError(f"--test {spec}: {data} not found")
        tests[name] = data
    return tests


def evaluate_on(cfg: TrainConfig, name: str, data: str, log=print) -> dict:
    """metrics.json of the run on test set `data`, in RUN/eval-<name>/ (computed once)."""
    path = cfg.run_dir / f"eval-{name}" / "metrics.json"
    if not path.exists():
        log(f"== {cfg.run_dir}: evaluating on {name} ({data})")
        evaluate_run(cfg.run_dir, log, "--data", str(data), "--batch-size", str(cfg.batch_size), "--out",
                     str(path.parent))
    return runs.read_json(path)


def _scores(prefix: str, m: dict | None) -> dict:
    return {f"{prefix}_{k}": float(m[k]) if m and isinstance(m.get(k), (int, float)) else np.nan
            for k in SPLIT_METRICS}


def replicate(base: TrainConfig, names: list[str], seeds: list[int], tests: dict[str, str], out,
              log=print) -> pd.DataFrame:
    """Train and score every configuration × seed; write replicates.csv and replicates.md; returns the rows."""
    from dermo.training import trainer as training

    out = Path(out)
    planned = [(seed, plan(dataclasses.replace(base, seed=seed), names, out, f"seed-{seed}")) for seed in seeds]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed, configs in planned:
        for name, cfg in configs:
            row = {"config": name, "seed": seed, "run": cfg.run_dir.relative_to(out).as_posix(),
                   **{k: getattr(cfg, k) for k in LOSS_FIELDS}}
            try:
                m = ensure_run(cfg, log)
                row.update(_scores("val", m))
                for test, data in tests.items():
                    row.update(_scores(test, evaluate_on(cfg, test, data, log)))
                row.update(train_s=m.get("train_s"), error="")
            except training.TrainingError as e:      # one failed run (e.g. NaN) does not stop the others
                log(f"== {name} seed {seed}: failed: {e}")
                row.update(**_scores("val", None), error=str(e))
            rows.append(row)
            table = pd.DataFrame(rows)
            table.to_csv(out / CSV, index=False)          # after every run: progress is visible
            (out / MARKDOWN).write_text(summary_markdown(table, base, list(tests)))
    log(f"wrote {out / CSV} and {out / MARKDOWN}")
    return pd.DataFrame(rows)


def mean_sd(values) -> str:
    """'mean ± sample sd' of the finite values (one value as is; none: n/a)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not v.size:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if v.size > 1 else f"{v[0]:.3f}"


def summary_markdown(table: pd.DataFrame, base: TrainConfig, tests: list[str]) -> str:
    """Mean ± sd (sample sd over seeds) per configuration, in grid order."""
    splits = ["val", *tests]
    gap = all(t in tests for t in GAP)
    if gap:
        table = table.assign(gap=table[f"{GAP[1]}_accuracy"] - table[f"{GAP[0]}_accuracy"])
    header = ["configuration", "λ_outside", "outside form", "CAM stride", "λ_rrr", "seeds",
              *(f"{s} {SPLIT_METRICS[k]}" for s in splits for k in SUMMARY_METRICS),
              *(["flipped − clean acc"] if gap else [])]
    rows = []
    for name, part in table.groupby("config", sort=False):
        ok = part[part["error"].fillna("") == ""]
        lam = part["lambda_outside"].iloc[0]
        form = part["outside_form"].iloc[0] if lam else "–"
        rrr = part["lambda_rrr"].iloc[0] if "lambda_rrr" in part else 0.0     # tables written before RRR
        rows.append([name, cell(lam, 2), form, str(part["cam_stride"].iloc[0]), cell(rrr, 4),
                     ", ".join(str(s) for s in ok["seed"]),
                     *(mean_sd(ok[f"{s}_{k}"]) for s in splits for k in SUMMARY_METRICS),
                     *([mean_sd(ok["gap"])] if gap else [])])
    setting = (f"data `{base.data}`, task {base.task}, backbone {base.backbone}, {base.image_size} px, at most "
               f"{base.epochs} epoch(s), batch {base.batch_size}, weights {base.weights}")
    failed = [f"- `{r.config}` seed {r.seed} failed: {r.error}" for r in table.itertuples() if r.error]
    return "\n".join([
        "# Loss configurations over seeds", "",
        f"{setting}; model selection on the validation split only (`{EVAL_DIR}/`). Mean ± sample sd over the "
        f"seeds listed; test sets: {', '.join(tests) or 'none'}. acc = accuracy; focus = share of the predicted "
        "class's positive CAM mass inside the lesion; CAM–mask r = Pearson r of CAM and mask.", "",
        md_table(header, rows), *(["## Failed", "", *failed, ""] if failed else [])])
