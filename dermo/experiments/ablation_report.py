"""Tables and the chart of the loss-term ablation (dermo.experiments.ablation): ablation.md and ablation.png,
and the markdown helpers the seed replicates (dermo.experiments.replicates) share."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dermo.run.config import TrainConfig

METRICS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "kappa": "kappa",
           "auc": "AUC", "lesion_focus": "lesion focus", "max_abs_cam": "max |CAM|"}
TIMES = ("train_s", "eval_s", "wall_s")


def cell(x, digits: int = 4) -> str:
    if isinstance(x, str):
        return x
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)]) + "\n"


def markdown(table: pd.DataFrame, base: TrainConfig) -> str:
    """ablation.md: setting, the configurations' loss options, the metrics and times per configuration."""
    setting = (f"data `{base.data}`, task {base.task}, backbone {base.backbone}, {base.image_size} px, "
               f"at most {base.epochs} epoch(s), batch {base.batch_size}, weights {base.weights}, seed {base.seed}")
    config_rows = [[r.config, cell(r.lambda_center, 2), cell(r.lambda_cskl, 2), r.cskl, cell(r.lambda_mask, 2),
                    cell(r.lambda_outside, 2), r.outside_form if r.lambda_outside else "–", str(r.cam_stride),
                    cell(getattr(r, "lambda_rrr", 0.0), 4), f"`{r.run}/`"] for r in table.itertuples()]
    metric_rows = [[r["config"], *(cell(r[k]) for k in METRICS), *(cell(r[k], 1) for k in TIMES)]
                   for _, r in table.iterrows()]
    failed = [f"- `{r.config}` failed: {r.error}" for r in table.itertuples() if r.error]
    return "\n".join([
        "# Loss-term ablation", "",
        f"Same data, options and seed for every configuration: {setting}.", "",
        "The grid is **cumulative**: each configuration adds one loss term to the one above it — "
        "`baseline` is CE (binary) / focal (multiclass) only, `+center` adds the centre loss (λ1), "
        "`+cskl-original` adds the original CSKL (λ2), `+cskl-penalized` swaps it for the penalised CSKL, "
        "`+mask` adds the lesion-focus mask loss (λ3), so it trains all four terms of the deck; `+outside` "
        "adds the outside-evidence term (λ4, beyond the deck) and `+stride16` computes the CAMs on a "
        "stride-16 map as well. `rrr` is not cumulative: CE + RRR, \"right for the right reasons\" (Ross et al. "
        "2017: the squared input gradient of Σ log p outside the lesion; λ --lambda-rrr, else the recommended "
        "value), a published remedy to compare with. `full` is the train options exactly as given; with the default options it "
        "equals `+mask`, and a configuration with the same settings as an earlier one reuses that run "
        "instead of training it twice. A term switched on takes its λ from the options (defaults λ1 1.0, "
        "λ2 0.1, λ3 0.5; λ4 --lambda-outside, else the recommended value).", "",
        md_table(["configuration", "λ_center", "λ_cskl", "cskl", "λ_mask", "λ_outside", "outside form", "CAM stride",
                  "λ_rrr", "run"],
                 config_rows),
        "Validation split (each run's `eval-val/metrics.json`). max |CAM| is the largest CAM magnitude "
        "over every class and image (the deck's \"dominant weights\"); lesion focus is the share of "
        "positive CAM mass inside the lesion mask. train s: Keras fit time; eval s: evaluation time; "
        "wall s: training + evaluation wall clock (n/a when the run was trained outside the ablation).", "",
        md_table(["configuration", *METRICS.values(), *TIMES], metric_rows),
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
