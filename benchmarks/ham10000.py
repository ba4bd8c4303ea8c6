"""The HAM10000 benchmark: real dermoscopic images, lesion-grouped split, CNN rows against the classical baseline.

    python3 benchmarks/ham10000.py manifests        # OUT/binary.csv, binary-generated.csv, dx7.csv
    python3 benchmarks/ham10000.py run [ROW ...]    # train + evaluate rows (default: all); resumable
    python3 benchmarks/ham10000.py table            # OUT/results.md (and .csv) from the finished rows
    python3 benchmarks/ham10000.py dice [--color-region skin]   # generated lesion masks vs the experts' (all images)
    options: --data ../shared/data/ham10000  --out runs/ham10000  --epochs 12  --image-size 128  --workers 2

The protocol (docs/method.md §12). Data: the HAM10000 training set (10,015 images at 200 x 150, one expert lesion
mask each, 7,470 lesion ids). Binary task: nv = nevus, every other diagnosis = others; 7-class task: dx. Split:
stratified by the label, grouped by lesion_id (no lesion on both sides), seed 0, 80/20 (`--group-column lesion_id
--val-fraction 0.2`); the per-image rows split the same images without the groups (the leakage check). CNN rows:
EfficientNet-B0 from scratch at --image-size, batch 16, --epochs, --class-weight balanced, --monitor
val_balanced_accuracy, seed 0 — each an ordinary run folder OUT/<row>/ (`dermo train` options in ROWS), reused when
finished and resumed when interrupted. Every CNN run is also scored on its val images with the experts' masks
(OUT/<row>/eval-expert/: `dermo evaluate --run RUN --data binary.csv --drop-training-images --grey-outside`), so
lesion focus is measured against the expert masks also for the run trained on generated masks, and the accuracy
change with everything outside the expert mask greyed says how much the decisions read the surroundings.
Baseline rows: `dermo ml` on the same split (OUT/<row>/). The data stay where they are; only the manifests (absolute paths) are written to OUT.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DATA = HERE.parents[1] / "shared" / "data" / "ham10000"
GROUPED = ["--group-column", "lesion_id"]
DECK: list[str] = []                                        # the deck's loss: dermo train's defaults
CE_ONLY = ["--lambda-center", "0", "--lambda-cskl", "0", "--lambda-mask", "0"]
# row -> (manifest, kind, options): kind "cnn" (dermo train) or "ml" (dermo ml)
ROWS = {
    "binary-ml": ("binary.csv", "ml", GROUPED),
    "binary-ce": ("binary.csv", "cnn", GROUPED + CE_ONLY),
    "binary-deck": ("binary.csv", "cnn", GROUPED + DECK),
    "binary-deck-generated": ("binary-generated.csv", "cnn", GROUPED + DECK),
    "binary-deck-outside16": ("binary.csv", "cnn", GROUPED + DECK + ["--lambda-outside", "1", "--cam-stride", "16"]),
    "binary-deck-meta": ("binary.csv", "cnn", GROUPED + DECK + ["--meta-columns", "age_approx,sex,localization"]),
    "binary-ml-meta": ("binary.csv", "ml", GROUPED + ["--meta-columns", "age_approx,sex,localization"]),
    "binary-ml-per-image": ("binary.csv", "ml", []),
    "binary-ce-per-image": ("binary.csv", "cnn", CE_ONLY),
    "dx7-ml": ("dx7.csv", "ml", GROUPED),
    "dx7-ce": ("dx7.csv", "cnn", GROUPED + CE_ONLY),
    "dx7-deck": ("dx7.csv", "cnn", GROUPED + DECK),
}
LABELS = {"binary": "nv vs the rest (nevus / others)", "dx7": "7 diagnoses (akiec, bcc, bkl, df, mel, nv, vasc)"}


def write_manifests(data: Path, out: Path) -> list[Path]:
    """binary.csv (label nevus/others, expert mask), binary-generated.csv (no mask column: the masks are generated),
    dx7.csv (label = dx); absolute paths, the metadata columns kept."""
    import pandas as pd

    meta = pd.read_csv(data / "metadata.csv", dtype=str)
    frame = pd.DataFrame({"image": [str((data / "images" / p).resolve()) for p in meta["image"]],
                          "mask": [str((data / p).resolve()) for p in meta["mask"]],
                          "lesion_id": meta["lesion_id"], "dx": meta["dx"], "age_approx": meta["age_approx"],
                          "sex": meta["sex"], "localization": meta["localization"]})
    out.mkdir(parents=True, exist_ok=True)
    binary = frame.assign(label=["nevus" if d == "nv" else "others" for d in frame["dx"]])
    binary.to_csv(out / "binary.csv", index=False)
    binary.drop(columns="mask").to_csv(out / "binary-generated.csv", index=False)
    frame.assign(label=frame["dx"]).to_csv(out / "dx7.csv", index=False)
    return [out / n for n in ("binary.csv", "binary-generated.csv", "dx7.csv")]


def train_argv(row: str, args) -> list[str]:
    manifest, _, options = ROWS[row]
    return ["--data", str(args.out / manifest), "--task", "auto", "--backbone", "B0", "--image-size",
            str(args.image_size), "--batch-size", "16", "--epochs", str(args.epochs), "--weights", "none",
            "--class-weight", "balanced", "--monitor", "val_balanced_accuracy", "--seed", "0", "--workers",
            str(args.workers), *options, "--out", str(args.out / row)]


def run_row(row: str, args, log=print) -> None:
    manifest, kind, options = ROWS[row]
    folder = args.out / row
    if kind == "ml":
        if (folder / "metrics.json").exists():
            return
        from dermo.experiments import ml

        start = time.time()
        ml.main(["--data", str(args.out / manifest), "--task", "auto", "--seed", "0", "--image-size",
                 str(args.image_size), "--out", str(folder), *options])
        (folder / "timing.json").write_text(json.dumps({"wall_seconds": round(time.time() - start, 1)}))
        return
    from dermo.experiments.grid import ensure_run, evaluate_run
    from dermo.training.cli import parse_args, resolve_config

    cfg = resolve_config(parse_args(train_argv(row, args)))
    ensure_run(cfg, log)                                            # trained (or resumed), eval-val/
    scored = folder / "eval-expert" / "metrics.json"
    if not scored.exists() or "outside_greyed" not in json.loads(scored.read_text()):
        evaluate_run(folder, log, "--data", str(args.out / "binary.csv" if row.startswith("binary") else
                                               args.out / "dx7.csv"),
                     "--drop-training-images", "--grey-outside", "--out", str(folder / "eval-expert"))


def row_numbers(row: str, out: Path) -> dict | None:
    folder = out / row
    kind = ROWS[row][1]
    path = folder / ("metrics.json" if kind == "ml" else "eval-expert/metrics.json")
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    # ml: the whole `dermo ml` run; cnn: training time over every process of a resumed run (config.json)
    seconds = (json.loads((folder / "timing.json").read_text()).get("wall_seconds") if kind == "ml" else
               json.loads((folder / "config.json").read_text()).get("train_seconds"))
    greyed = m.get("outside_greyed") or {}
    return {"row": row, "balanced_accuracy": m["balanced_accuracy"], "auc": m["auc"], "kappa": m["kappa"],
            "accuracy": m["accuracy"], "lesion_focus": m.get("lesion_focus"),
            "greyed_accuracy_change": greyed.get("accuracy_change"), "greyed_unchanged": greyed.get("unchanged"),
            "n": m["n"], "minutes": None if seconds is None else round(seconds / 60, 1)}


def table(out: Path) -> str:
    import pandas as pd

    rows = [r for r in (row_numbers(name, out) for name in ROWS) if r is not None]
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "results.csv", index=False)

    def cell(v, digits=3):
        return "–" if v is None or v != v else f"{v:.{digits}f}"
    lines = ["| row | balanced accuracy | macro AUC | κ | accuracy | lesion focus (expert masks) | outside greyed: "
             "accuracy change / decisions unchanged | val images | train time (min) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        greyed = ("–" if r["greyed_unchanged"] is None else
                  f"{r['greyed_accuracy_change']:+.3f} / {r['greyed_unchanged']:.2f}")
        lines.append(f"| {r['row']} | {cell(r['balanced_accuracy'])} | {cell(r['auc'])} | {cell(r['kappa'])} | "
                     f"{cell(r['accuracy'])} | {cell(r['lesion_focus'])} | {greyed} | {r['n']} | "
                     f"{cell(r['minutes'], 0)} |")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


def dice(data: Path, out: Path, size: int, workers: int | None, color_region: str = "fov") -> dict:
    """Generated masks against the experts' over every image, both in the preprocessed geometry (dermo's cache at
    the training size: the given mask goes through the same field-of-view crop and resize)."""
    import cv2
    import numpy as np
    import pandas as pd

    from dermo.pipeline.prepare import settings_for
    from dermo.preprocessing.cache import preprocess_many

    frame = pd.read_csv(out / "binary.csv")
    settings = settings_for(size, color_region=color_region)
    given, _ = preprocess_many(list(zip(frame["image"], frame["mask"])), settings, workers=workers)
    made, _ = preprocess_many([(p, None) for p in frame["image"]], settings, workers=workers)
    scores = []
    for (_, g), (_, m) in zip(given, made):
        a, b = cv2.imread(str(g), cv2.IMREAD_GRAYSCALE) > 127, cv2.imread(str(m), cv2.IMREAD_GRAYSCALE) > 127
        total = a.sum() + b.sum()
        scores.append(1.0 if total == 0 else 2.0 * (a & b).sum() / total)
    scores = np.array(scores)
    from dermo.data.datasets import load_dataset                  # the CNN rows' lesion-grouped split

    val = {str(s.path) for s in load_dataset(out / "binary.csv", "auto", group_column="lesion_id", seed=0).val}
    in_val = np.array([str(p) in val for p in frame["image"]])
    result = {"n": int(len(scores)), "mean_dice": float(scores.mean()), "median_dice": float(np.median(scores)),
              "share_below_0.5": float((scores < 0.5).mean()),
              "val_split": {"n": int(in_val.sum()), "mean_dice": float(scores[in_val].mean())},
              "by_dx": {k: float(v) for k, v in pd.Series(scores).groupby(frame["dx"]).mean().items()}}
    result["color_region"] = color_region
    name = "dice.json" if color_region == "fov" else f"dice-{color_region}.json"
    (out / name).write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["manifests", "run", "table", "dice"])
    p.add_argument("rows", nargs="*", help=f"rows to run (default: all): {', '.join(ROWS)}")
    p.add_argument("--data", type=Path, default=DATA, help="the ham10000 folder (metadata.csv, images/, masks/)")
    p.add_argument("--out", type=Path, default=Path("runs/ham10000"), help="manifests and run folders")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--color-region", choices=["fov", "skin"], default="fov",
                   help="dice: colour constancy's illuminant over the field of view or the skin (dice-skin.json)")
    args = p.parse_args(argv)
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if args.step == "manifests":
        for path in write_manifests(args.data, args.out):
            print(f"wrote {path}")
    elif args.step == "run":
        for row in args.rows or list(ROWS):
            print(f"=== {row}", flush=True)
            run_row(row, args)
    elif args.step == "table":
        print(table(args.out))
    else:
        print(json.dumps(dice(args.data, args.out, args.image_size, args.workers, args.color_region), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
