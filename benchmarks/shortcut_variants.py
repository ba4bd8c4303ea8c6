"""The shortcut check over artefact variants: the same ablation on every variant of `dermo synthetic --shortcut`.

    python3 benchmarks/shortcut_variants.py run [VARIANT ...]   # data + dermo ablation per variant (resumable)
    python3 benchmarks/shortcut_variants.py table               # OUT/variants.md (and .csv) from finished runs
    options: --data data/shortcut-variants  --out runs/shortcut-variants  --seeds 0,1,2
             --configs baseline,+stride16  --epochs 12  --image-size 128; any other dermo ablation option
             (e.g. --monitor val_counterfactual_accuracy) is passed on

Why (docs/method.md §11, issue 22): a remedy tuned to one artefact generator may not transfer, so every figure is
reported per variant — the kind, place, size and colour of the artefact varied one at a time from the default
(sticker, ruler and ink in turn, anywhere clear of the lesion, their own colours, size ×1). Each variant's set is
written once to DATA/<variant>/ (biased/, clean/, flipped/; seed 0 of the drawing, 750 + 400 + 400 images at
160 px) and trained with `dermo ablation --data DATA/<variant>/biased --test clean=… --test flipped=…` into
OUT/<variant>/ (B0 from scratch, batch 16, early-stopping patience 6 — the settings of the README's shortcut
table), so finished runs are reused and interrupted ones resumed. The table gives, per variant and
configuration, clean and flipped accuracy, their gap and lesion focus on clean/ (mean ± sd over the seeds run).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# variant -> dermo.data.artefacts.Style fields that differ from the default style
VARIANTS = {
    "default": {},
    "beside-brown": {"kinds": ("sticker",), "place": "beside", "colour": "brown"},
    "rim": {"place": "rim"},
    "beside": {"place": "beside"},
    "grey": {"colour": "grey"},
    "sticker": {"kinds": ("sticker",)},
    "ruler": {"kinds": ("ruler",)},
    "ink": {"kinds": ("ink",)},
    "small": {"scale": 0.5},
    "large": {"scale": 2.0},
}


def style_of(variant: str):
    from dermo.data.artefacts import Style

    return Style(**VARIANTS[variant]).check()


def ensure_data(variant: str, root: Path, log=print) -> Path:
    """DATA/<variant>/ written unless complete (its marker is written last)."""
    from dermo.data.generated import MARKER
    from dermo.data.shortcut import write_shortcut_dataset

    folder = root / variant
    if not (folder / MARKER).exists():
        log(f"== {variant}: writing {folder}")
        write_shortcut_dataset(folder, style=style_of(variant))
    return folder


def ablation_argv(variant: str, data: Path, args) -> list[str]:
    return ["--data", str(data / "biased"), "--task", "binary", "--backbone", "B0", "--image-size",
            str(args.image_size), "--batch-size", "16", "--epochs", str(args.epochs), "--weights", "none",
            "--early-stopping-patience", "6", "--configs", args.configs, "--seeds", args.seeds,
            "--test", f"clean={data / 'clean' / 'labels.csv'}", "--test", f"flipped={data / 'flipped' / 'labels.csv'}",
            *args.extra, "--out", str(args.out / variant)]


def table(out: Path) -> str:
    """OUT/variants.md and .csv: one row per variant × configuration from OUT/<variant>/replicates.csv."""
    import pandas as pd

    from dermo.experiments.replicates import mean_sd

    parts = [pd.read_csv(out / v / "replicates.csv").assign(variant=v) for v in VARIANTS
             if (out / v / "replicates.csv").exists()]
    lines = ["| variant | artefact (kinds; place; size; colour) | configuration | seeds | clean acc | flipped acc | "
             "flipped − clean | clean focus |", "|---|---|---|---|---|---|---|---|"]
    if not parts:
        return "\n".join(lines) + "\n"
    frame = pd.concat(parts, ignore_index=True)
    frame = frame[frame["error"].fillna("") == ""].assign(gap=lambda f: f["flipped_accuracy"] - f["clean_accuracy"])
    frame.to_csv(out / "variants.csv", index=False)
    for (variant, config), part in frame.groupby(["variant", "config"], sort=False):
        s = style_of(variant)
        lines.append(f"| {variant} | {','.join(s.kinds)}; {s.place}; ×{s.scale:g}; {s.colour} | {config} | "
                     f"{', '.join(str(x) for x in part['seed'])} | {mean_sd(part['clean_accuracy'])} | "
                     f"{mean_sd(part['flipped_accuracy'])} | {mean_sd(part['gap'])} | "
                     f"{mean_sd(part['clean_lesion_focus'])} |")
    text = "\n".join(lines) + "\n"
    (out / "variants.md").write_text(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["run", "table"])
    p.add_argument("variants", nargs="*", help=f"variants to run (default: all): {', '.join(VARIANTS)}")
    p.add_argument("--data", type=Path, default=Path("data/shortcut-variants"), help="the variants' data sets")
    p.add_argument("--out", type=Path, default=Path("runs/shortcut-variants"), help="the ablation folders")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--configs", default="baseline,+stride16", help="dermo ablation --configs")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--image-size", type=int, default=128)
    args, args.extra = p.parse_known_args(argv)                 # other options go to dermo ablation as they are
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.step == "run":
        from dermo.experiments import ablation

        for variant in args.variants or list(VARIANTS):
            print(f"=== {variant}", flush=True)
            data = ensure_data(variant, args.data)
            if ablation.main(ablation_argv(variant, data, args)):
                print(f"{variant}: some runs failed (see {args.out / variant / 'replicates.md'})", flush=True)
    print(table(args.out), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
