"""The official test: train on HAM10000, choose on a lesion-grouped inner split, score the ISIC 2018 Task 3 test once.

    python3 benchmarks/isic2018.py split              # OUT/*.csv: the inner split, written once (then checked)
    python3 benchmarks/isic2018.py run ROW [ROW ...]  # train + score on the inner split (resumable; default: all)
    python3 benchmarks/isic2018.py test ROW           # score ROW on the 1,512 official test images, ONCE
    python3 benchmarks/isic2018.py report ROW         # a meta-*.csv row on its report part (fold 1), ONCE
    python3 benchmarks/isic2018.py compare ROW_A ROW_B [--inner]  # paired bootstrap: official test (or inner split)
    python3 benchmarks/isic2018.py gap ROW            # per-class recall, inner split vs official test
    python3 benchmarks/isic2018.py table              # docs/results.md (and the README's short table)
    options: --out ../runs/isic2018 (outside the work tree)  --ham ../shared/data/ham10000  --workers 2

The protocol (docs/results.md says it again beside the figures):
- Inner split: HAM10000's 10,015 images, stratified by diagnosis, grouped by lesion_id (no lesion on both
  sides), seed 0, one fold of 7 (~14 %) = `val`; written once into the manifests' `split` column, so every row and
  every ensemble member uses the same images. Epochs, hyper-parameters, the best row, ensemble members and TTA are
  chosen on it — never on the test. Every CNN row selects its epoch by val_balanced_accuracy.
- Official test: `test ROW` scores a finished row on the 1,512 images and appends the scoring to the committed
  benchmarks/test-scorings.csv (and its probabilities to benchmarks/test-predictions/ROW.csv); a second scoring of
  a row is refused. 7-class rows also give their nv-vs-rest binary decision (predicted class nv or not).
- Metadata rows (no metadata on the test set): a three-way split — fold 0 selects, fold 1 is the report part
  (scored once with `dermo evaluate --data`), folds 2–6 train.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

HAM = HERE.parents[1] / "shared" / "data" / "ham10000"
TEST = HERE.parents[1] / "shared" / "data" / "isic2018-task3-test"
OUT = HERE.parents[1] / "runs" / "isic2018"
DX7 = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
BINARY = ["nevus", "others"]
FOLDS, SEED, SIZE = 7, 0, 128
LITE = ["--backbone", "lite0", "--weights", "imagenet"]
CE_ONLY = ["--lambda-center", "0", "--lambda-cskl", "0", "--lambda-mask", "0"]
OUTSIDE16 = ["--lambda-outside", "1", "--cam-stride", "16"]
ADAMW = ["--optimizer", "adamw", "--lr-schedule", "cosine", "--warmup-epochs", "1"]
META = "age_approx,sex,localization"
# row -> (manifest, kind, epochs, options); kind: cnn (dermo train), plain (plain_keras.py), ml (dermo ml),
# ensemble (dermo ensemble, soft vote; options = the candidate rows, members chosen on the inner split)
ROWS = {
    "dx7-plain-keras": ("dx7.csv", "plain", 6, []),
    "dx7-ml": ("dx7.csv", "ml", 0, []),
    "dx7-lite0-deck": ("dx7.csv", "cnn", 6, LITE),                       # the deck's recipe (Adadelta lr 1)
    "dx7-lite0-deck-adadelta0.1": ("dx7.csv", "cnn", 6, LITE + ["--learning-rate", "0.1"]),
    "dx7-lite0-deck-adamw": ("dx7.csv", "cnn", 6, LITE + ADAMW),
    "dx7-lite0-focal": ("dx7.csv", "cnn", 6, LITE + CE_ONLY),
    "dx7-lite0-deck-generated": ("dx7-generated.csv", "cnn", 6, LITE),
    "dx7-lite0-outside16": ("dx7.csv", "cnn", 6, LITE + OUTSIDE16),
    "binary-plain-keras": ("binary.csv", "plain", 5, []),
    "binary-ml": ("binary.csv", "ml", 0, []),
    "binary-lite0-deck": ("binary.csv", "cnn", 5, LITE),
    "dx7-lite0-ensemble": ("dx7.csv", "ensemble", 0, ["dx7-lite0-deck", "dx7-lite0-deck-adamw",
                                                       "dx7-lite0-deck-adadelta0.1", "dx7-lite0-focal",
                                                       "dx7-lite0-deck-generated", "dx7-lite0-outside16"]),
    # the metadata pair on the three-way split: trained on folds 2-6, chosen on fold 0, reported on fold 1 (`report`)
    "binary-meta3-lite0-deck": ("meta-binary.csv", "cnn", 5, LITE),
    "binary-meta3-lite0-deck-meta": ("meta-binary.csv", "cnn", 5, LITE + ["--meta-columns", META]),
}


def manifests(ham: Path, test: Path, out: Path) -> list[Path]:
    """dx7.csv / binary.csv (+ -generated: no mask column) with the inner split; meta-*.csv the three-way split;
    test-dx7.csv / test-binary.csv the official test images. The split is written once: a later call recomputes it
    and refuses to go on if it differs from the one on disk."""
    import numpy as np
    import pandas as pd

    from dermo.data.datasets import Sample
    from dermo.data.groups import stratified_folds

    meta = pd.read_csv(ham / "metadata.csv", dtype=str)
    samples = [Sample(str(ham / "images" / p), DX7.index(d), None, g) for p, d, g in
               zip(meta["image"], meta["dx"], meta["lesion_id"])]
    folds = stratified_folds(samples, FOLDS, SEED, ham / "metadata.csv", "lesion_id")
    frame = pd.DataFrame({"image": [s.path for s in samples], "mask": [str(ham / m) for m in meta["mask"]],
                          "lesion_id": meta["lesion_id"], "dx": meta["dx"], "age_approx": meta["age_approx"],
                          "sex": meta["sex"], "localization": meta["localization"],
                          "split": np.where(folds == 0, "val", "train"), "fold": folds})
    out.mkdir(parents=True, exist_ok=True)
    recorded = out / "dx7.csv"
    if recorded.exists():
        old = pd.read_csv(recorded, dtype=str)
        if list(old["image"]) != list(frame["image"]) or list(old["split"]) != list(frame["split"]):
            raise SystemExit(f"{recorded}: the recorded inner split differs from the one recomputed now; keep the "
                             "recorded one (every row was chosen on it) or start a new --out")
    dx7 = frame.assign(label=frame["dx"])
    binary = frame.assign(label=np.where(frame["dx"] == "nv", "nevus", "others"))
    written = {"dx7.csv": dx7, "dx7-generated.csv": dx7.drop(columns="mask"), "binary.csv": binary,
               "binary-generated.csv": binary.drop(columns="mask")}
    for task, table in (("dx7", dx7), ("binary", binary)):        # metadata rows: train 2–6, select 0, report 1
        part = table[table["fold"] != 1].assign(split=lambda t: np.where(t["fold"] == 0, "val", "train"))
        written[f"meta-{task}.csv"] = part
        written[f"meta-{task}-report.csv"] = table[table["fold"] == 1].drop(columns="split")
    labels = pd.read_csv(test / "labels.csv", dtype=str)
    paths = [str(test / p) for p in labels["image"]]
    written["test-dx7.csv"] = pd.DataFrame({"image": paths, "label": labels["dx"]})
    written["test-binary.csv"] = pd.DataFrame({"image": paths, "label": np.where(labels["dx"] == "nv", "nevus",
                                                                                   "others")})
    for name, table in written.items():
        table.to_csv(out / name, index=False)
    return [out / n for n in written]


def train_argv(row: str, out: Path, workers: int) -> list[str]:
    manifest, _, epochs, options = ROWS[row]
    return ["--data", str(out / manifest), "--task", "auto", "--group-column", "lesion_id", "--image-size",
            str(SIZE), "--batch-size", "16", "--epochs", str(epochs), "--class-weight", "balanced", "--monitor",
            "val_balanced_accuracy", "--early-stopping-patience", str(epochs), "--seed", str(SEED), "--workers",
            str(workers), *options, "--out", str(out / row)]


def run_row(row: str, out: Path, workers: int, log=print) -> None:
    if row.endswith("-tta8"):                     # a trained CNN row with 8-fold test-time augmentation
        return tta_row(row.removesuffix("-tta8"), out, log)
    manifest, kind, epochs, options = ROWS[row]
    folder = out / row
    classes = DX7 if manifest.startswith("dx7") else BINARY
    if kind == "plain":
        import plain_keras

        if not (folder / "config.json").exists():
            plain_keras.train(out / manifest, folder, classes, SIZE, epochs, SEED)
        if not (folder / "eval-inner" / "predictions.csv").exists():
            plain_keras.write_inner(folder, out / manifest)
        return
    if kind == "ensemble":
        return ensemble_row(row, out, log)
    if kind == "ml":
        if not (folder / "metrics.json").exists():
            from dermo.experiments import ml

            start = time.time()
            ml.main(["--data", str(out / manifest), "--task", "auto", "--group-column", "lesion_id", "--seed",
                     str(SEED), "--image-size", str(SIZE), "--out", str(folder), *options])
            (folder / "timing.json").write_text(json.dumps({"wall_seconds": round(time.time() - start, 1)}))
        return
    from dermo.experiments.grid import ensure_run, evaluate_run
    from dermo.training.cli import parse_args, resolve_config

    ensure_run(resolve_config(parse_args(train_argv(row, out, workers))), log)     # trained, eval-val/
    inner = folder / "eval-inner"
    if not (inner / "metrics.json").exists():                 # focus vs the experts' masks, outside greyed
        evaluate_run(folder, log, "--data", str(out / manifest.replace("-generated", "")), "--split", "val",
                     "--grey-outside", "--out", str(inner))


def choose_members(candidates: list[str], out: Path) -> tuple[list[str], list[dict]]:
    """Greedy forward selection on the inner split: start from the best single row, add the candidate whose soft
    vote (mean of probabilities) raises the inner balanced accuracy most, stop when none does. -> (members, steps)."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import balanced_accuracy_score

    probs, labels = {}, None
    for row in candidates:
        frame = pd.read_csv(out / row / "eval-inner" / "predictions.csv").sort_values("path")
        probs[row] = frame[DX7 if ROWS[row][0].startswith("dx7") else BINARY].to_numpy(float)
        labels = frame["label"].to_numpy()
    classes = np.array(DX7 if ROWS[candidates[0]][0].startswith("dx7") else BINARY)

    def score(members):
        return balanced_accuracy_score(labels, classes[np.mean([probs[m] for m in members], axis=0).argmax(1)])

    members = [max(candidates, key=lambda r: score([r]))]
    steps = [{"members": list(members), "inner_balanced_accuracy": round(score(members), 4)}]
    while True:
        rest = [r for r in candidates if r not in members]
        if not rest:
            break
        best = max(rest, key=lambda r: score(members + [r]))
        if score(members + [best]) <= score(members):
            break
        members.append(best)
        steps.append({"members": list(members), "inner_balanced_accuracy": round(score(members), 4)})
    return members, steps


def ensemble_row(row: str, out: Path, log=print) -> None:
    """The soft-vote ensemble: members chosen on the inner split (members.json), scored there by dermo ensemble."""
    from dermo.evaluation import ensemble

    folder = out / row
    candidates = [r for r in ROWS[row][3] if (out / r / "eval-inner" / "predictions.csv").exists()]
    if not (folder / "members.json").exists():
        members, steps = choose_members(candidates, out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "members.json").write_text(json.dumps({"candidates": candidates, "members": members,
                                                         "steps": steps}, indent=2))
    members = json.loads((folder / "members.json").read_text())["members"]
    if not (folder / "eval-inner" / "metrics.json").exists():
        assert ensemble.main(["--models", *[str(out / m) for m in members], "--data", str(out / ROWS[row][0]),
                              "--split", "val", "--out", str(folder / "eval-inner")]) == 0


def tta_row(row: str, out: Path, log=print) -> None:
    """ROW-tta8 on the inner split: the trained row evaluated with --tta 8 (eval-inner-tta8/), to choose TTA there."""
    from dermo.experiments.grid import evaluate_run

    folder = out / row / "eval-inner-tta8"
    if ROWS[row][1] != "cnn":
        raise SystemExit(f"{row}-tta8: test-time augmentation is for the dermo rows (dermo evaluate --tta)")
    if not (folder / "metrics.json").exists():
        evaluate_run(out / row, log, "--data", str(out / ROWS[row][0].replace("-generated", "")), "--split", "val",
                     "--tta", "8", "--out", str(folder))


def score_report(row: str, out: Path) -> dict:
    """A three-way-split row (manifest meta-*.csv) scored on its report part, fold 1 — once (eval-report/ kept)."""
    manifest = ROWS[row][0]
    if not manifest.startswith("meta-"):
        raise SystemExit(f"{row}: not a three-way-split row (its manifest is {manifest}); score it with `test`")
    folder = out / row / "eval-report"
    if folder.exists():
        raise SystemExit(f"{folder} exists: the report part is scored once")
    from dermo.experiments.grid import evaluate_run

    return evaluate_run(out / row, print, "--data", str(out / manifest.replace(".csv", "-report.csv")),
                        "--grey-outside", "--out", str(folder))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["split", "run", "test", "report", "compare", "gap", "table"])
    p.add_argument("--inner", action="store_true", help="compare: on the inner split (where rows are chosen)")
    p.add_argument("rows", nargs="*", help=f"rows: {', '.join(ROWS)}")
    p.add_argument("--out", type=Path, default=OUT, help="manifests and run folders (outside the work tree)")
    p.add_argument("--ham", type=Path, default=HAM)
    p.add_argument("--test-data", type=Path, default=TEST)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    unknown = [r for r in args.rows if r.removesuffix("-tta8") not in ROWS]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if args.step == "split":
        for path in manifests(args.ham, args.test_data, args.out):
            print(f"wrote {path}")
    elif args.step == "run":
        for row in args.rows or list(ROWS):
            print(f"=== {row}", flush=True)
            run_row(row, args.out, args.workers)
    elif args.step == "test":
        from isic2018_scoring import score_test

        for row in args.rows:
            print(json.dumps(score_test(row, args.out), indent=2))
    elif args.step == "report":
        for row in args.rows:
            print(json.dumps(score_report(row, args.out), indent=2))
    elif args.step == "gap":
        from isic2018_scoring import gap

        for row in args.rows:
            print(f"{row}:\n{gap(row, args.out)}")
    elif args.step == "compare":
        from isic2018_scoring import compare

        print(compare(*args.rows[:2], out=args.out if args.inner else None))
    else:
        from isic2018_scoring import table

        print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
