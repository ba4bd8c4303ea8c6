"""Scoring for benchmarks/isic2018.py: the official test (once per row), paired comparisons, the results table.

    score_test(row, out)   the row's probabilities on the 1,512 official images -> test-predictions/ROW.csv and one
                           line (two for a 7-class row: + its nv-vs-rest decision) appended to test-scorings.csv;
                           refused when the row was scored before
    compare(a, b)          BA(a) − BA(b) on the official test with its 95 % paired-bootstrap interval
    table(out)             docs/results.md (every column) and the README's short table, from the scorings and the
                           rows' inner-split evaluations
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from isic2018 import BINARY, DX7, ROWS, train_argv

HERE = Path(__file__).resolve().parent
SCORINGS = HERE / "test-scorings.csv"
PREDICTIONS = HERE / "test-predictions"
RESULTS = HERE.parent / "docs" / "results.md"
README = HERE.parent / "README.md"
TTA = "-tta8"
NV_VS_REST = "/nv-vs-rest"


def row_parts(row: str) -> tuple[str, int]:
    """"dx7-lite0-deck-tta8" -> ("dx7-lite0-deck", 8): a trained row scored with 8-fold test-time augmentation."""
    return (row.removesuffix(TTA), 8) if row.endswith(TTA) else (row, 1)


def commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _ml_probs(folder: Path, paths: list[str]) -> np.ndarray:
    import joblib

    from dermo.data.datasets import Sample
    from dermo.experiments.features import extract_features
    from dermo.experiments.ml import predict_probs
    from dermo.pipeline.prepare import prepare
    from dermo.preprocessing.cache import PreprocessSettings

    saved = joblib.load(folder / "model.joblib")
    items, skipped = prepare([Sample(p, 0) for p in paths], PreprocessSettings(**saved["preprocess"]))
    assert not skipped, skipped
    return predict_probs(saved["model"], extract_features(items), len(saved["classes"]))


def test_probs(row: str, out: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(image paths, labels (N,), probabilities (N,K), classes) of `row` on the official test set."""
    base, tta = row_parts(row)
    manifest, kind, _, _ = ROWS[base]
    classes = DX7 if manifest.startswith("dx7") else BINARY
    test = pd.read_csv(out / f"test-{'dx7' if classes == DX7 else 'binary'}.csv", dtype=str)
    paths, labels = list(test["image"]), test["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(int)
    if kind == "plain":
        import plain_keras

        return paths, labels, plain_keras.predict(out / base, paths), classes
    if kind == "ml":
        return paths, labels, _ml_probs(out / base, paths), classes
    if kind == "ensemble":
        from dermo.evaluation import ensemble

        members = json.loads((out / base / "members.json").read_text())["members"]
        folder = out / base / "eval-official-test"
        assert ensemble.main(["--models", *[str(out / m) for m in members], "--data",
                              str(out / f"test-{'dx7' if classes == DX7 else 'binary'}.csv"), "--out",
                              str(folder)]) == 0
        pred = pd.read_csv(folder / "predictions.csv").set_index("path")
        return paths, labels, pred.loc[paths, classes].to_numpy(float), classes
    from dermo.experiments.grid import evaluate_run

    folder = out / base / f"eval-official-test{TTA if tta > 1 else ''}"
    evaluate_run(out / base, print, "--data", str(out / f"test-{'dx7' if classes == DX7 else 'binary'}.csv"),
                 "--tta", str(tta), "--out", str(folder))
    pred = pd.read_csv(folder / "predictions.csv").set_index("path")
    return paths, labels, pred.loc[paths, classes].to_numpy(float), classes


def scoring_line(row: str, task: str, labels, probs, classes) -> dict:
    from dermo.metrics import classification_metrics
    from dermo.metrics.bootstrap import balanced_accuracy_interval

    m = classification_metrics(labels, probs, classes)
    low, high = balanced_accuracy_interval(labels, probs.argmax(1))
    return {"row": row, "task": task, "scored_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "commit": commit(), "n": m["n"], "balanced_accuracy": round(m["balanced_accuracy"], 4),
            "ba_low": round(low, 4), "ba_high": round(high, 4),
            "auc": None if m["auc"] is None else round(m["auc"], 4), "kappa": round(m["kappa"], 4),
            "accuracy": round(m["accuracy"], 4),
            "recall": json.dumps({c: round(v["recall"], 3) for c, v in m["per_class"].items()})}


def nv_vs_rest(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    """A 7-class model's binary form: (labels 0 nevus / 1 others, probabilities (N,2) = (p_nv, the other six
    classes' sum)); its decision is nevus when p_nv > 1/2."""
    nv = DX7.index("nv")
    return (np.asarray(labels) != nv).astype(int), np.stack([probs[:, nv], 1 - probs[:, nv]], axis=1)


def score_test(row: str, out: Path) -> list[dict]:
    scored = pd.read_csv(SCORINGS) if SCORINGS.exists() else pd.DataFrame(columns=["row"])
    if row in set(scored["row"]):
        raise SystemExit(f"{row} was already scored on the official test ({SCORINGS.name}); a test set is scored "
                         "once — choose on the inner split")
    paths, labels, probs, classes = test_probs(row, out)
    PREDICTIONS.mkdir(exist_ok=True)
    frame = pd.DataFrame(probs, columns=classes).assign(image=[Path(p).name for p in paths],
                                                        label=[classes[i] for i in labels])
    frame[["image", "label", *classes]].to_csv(PREDICTIONS / f"{row}.csv", index=False, float_format="%.6g")
    lines = [scoring_line(row, "dx7" if classes == DX7 else "binary", labels, probs, classes)]
    if classes == DX7:
        y2, p2 = nv_vs_rest(labels, probs)
        lines.append(scoring_line(row + NV_VS_REST, "binary from dx7", y2, p2, BINARY))
    pd.concat([scored, pd.DataFrame(lines)], ignore_index=True).to_csv(SCORINGS, index=False)
    return lines


def decisions(row: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, decisions) of a scored row from its committed test predictions (row + NV_VS_REST: binary form)."""
    base = row.removesuffix(NV_VS_REST)
    frame = pd.read_csv(PREDICTIONS / f"{base}.csv").sort_values("image")
    classes = [c for c in frame.columns if c not in ("image", "label")]
    labels = frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(int)
    probs = frame[classes].to_numpy(float)
    if row.endswith(NV_VS_REST):
        y2, p2 = nv_vs_rest(labels, probs)
        return y2, p2.argmax(1)
    return labels, probs.argmax(1)


def inner_decisions(row: str, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, decisions) of a trained row on the inner split (what chooses), from its eval-inner/predictions.csv
    (CNN rows; row + TTA: eval-inner-tta8)."""
    base, tta = row_parts(row)
    folder = out / base / ("eval-inner" + (TTA if tta > 1 else ""))
    if ROWS[base][1] == "ml":
        folder = out / base                                  # dermo ml scores the manifest's val split itself
    frame = pd.read_csv(folder / "predictions.csv").sort_values("path")
    classes = [c for c in frame.columns if c in DX7 or c in BINARY]
    return (frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(int),
            frame[classes].to_numpy(float).argmax(1))


def compare(a: str, b: str, out: Path | None = None) -> str:
    """Paired bootstrap of BA(a) − BA(b): on the official test (scored rows), or with `out` on the inner split
    (trained rows: where rows are chosen)."""
    from dermo.metrics.bootstrap import paired_difference_interval

    (ya, da), (yb, db) = ((inner_decisions(a, out), inner_decisions(b, out)) if out is not None
                          else (decisions(a), decisions(b)))
    if not np.array_equal(ya, yb):
        raise SystemExit(f"{a} and {b} were not scored on the same labels")
    diff, low, high = paired_difference_interval(ya, da, db)
    where = "inner split" if out is not None else "official test"
    verdict = "excludes 0" if low > 0 or high < 0 else f"includes 0: not resolved by the {where}"
    return (f"BA({a}) − BA({b}) = {diff:+.4f} on the {where}, 95 % paired bootstrap [{low:+.4f}, {high:+.4f}] "
            f"({verdict})")


def _inner(row: str, out: Path) -> dict:
    """The row's numbers on the inner split (what chose it) and its training time."""
    base, tta = row_parts(row)
    folder = out / base
    kind, epochs = ROWS[base][1], ROWS[base][2]
    info = {"epochs": epochs}
    if kind == "plain" and (folder / "config.json").exists():
        c = json.loads((folder / "config.json").read_text())
        info.update(inner_ba=c["val_balanced_accuracy"], minutes=c["train_seconds"] / 60, best_epoch=c["best_epoch"] + 1)
    elif kind == "ml" and (folder / "metrics.json").exists():
        m = json.loads((folder / "metrics.json").read_text())
        t = json.loads((folder / "timing.json").read_text()) if (folder / "timing.json").exists() else {}
        info.update(inner_ba=m["balanced_accuracy"], inner_auc=m["auc"], minutes=t.get("wall_seconds", 0) / 60)
    elif kind == "ensemble" and (folder / "members.json").exists():
        chosen = json.loads((folder / "members.json").read_text())
        info.update(inner_ba=chosen["steps"][-1]["inner_balanced_accuracy"],
                    members=", ".join(chosen["members"]))
    elif kind == "cnn" and (folder / "config.json").exists():
        c = json.loads((folder / "config.json").read_text())
        m = json.loads((folder / "eval-inner" / "metrics.json").read_text()) \
            if (folder / "eval-inner" / "metrics.json").exists() else {}
        h = pd.read_csv(folder / "history.csv")
        info.update(inner_ba=m.get("balanced_accuracy"), inner_auc=m.get("auc"), focus=m.get("lesion_focus"),
                    greyed=(m.get("outside_greyed") or {}).get("accuracy_change"), minutes=c["train_seconds"] / 60,
                    best_epoch=int(h["val_balanced_accuracy"].idxmax()) + 1)
    if tta > 1:
        info["inner_ba"] = None                       # the TTA row's inner figure: see its eval-inner-tta8
        tta_m = folder / "eval-inner-tta8" / "metrics.json"
        if tta_m.exists():
            info["inner_ba"] = json.loads(tta_m.read_text())["balanced_accuracy"]
    return info


def _command(row: str) -> str:
    base, tta = row_parts(row)
    kind = ROWS[base][1]
    if kind == "ensemble":
        return f"benchmarks/isic2018.py run {base} (dermo ensemble, soft vote of the members chosen on the inner split)"
    if kind == "cnn":
        argv = " ".join(a if " " not in a else repr(a) for a in train_argv(base, Path("OUT"), 2))
        return f"dermo train {argv}" + (f"; dermo evaluate --tta {tta}" if tta > 1 else "")
    return f"benchmarks/isic2018.py run {base} ({'plain_keras.py' if kind == 'plain' else 'dermo ml'})"


def _cell(v, digits=3):
    return "–" if v is None or (isinstance(v, float) and v != v) else f"{v:.{digits}f}"


def table(out: Path) -> str:
    scored = pd.read_csv(SCORINGS) if SCORINGS.exists() else pd.DataFrame(columns=["row"])
    rows = list(dict.fromkeys([*ROWS, *[r.removesuffix(NV_VS_REST) for r in scored["row"]]]))
    full = ["| row | task | official test: balanced accuracy [95 % CI] | macro AUC | κ | per-class recall | "
            "nv-vs-rest BA [95 % CI] | inner split: BA | lesion focus | outside greyed: acc. change | best epoch / "
            "epochs | train min | scored (commit) | command |", "|" + "---|" * 14]
    short = ["| row | official test: balanced accuracy [95 % CI] | macro AUC | train min |", "|---|---|---|---|"]
    for row in rows:
        info = _inner(row, out)
        test = scored[scored["row"] == row]
        binary = scored[scored["row"] == row + NV_VS_REST]
        if test.empty and info.get("inner_ba") is None:
            continue
        t = test.iloc[0] if not test.empty else None
        ba = "not scored" if t is None else f"{t['balanced_accuracy']:.3f} [{t['ba_low']:.3f}, {t['ba_high']:.3f}]"
        nv = "–" if binary.empty else (f"{binary.iloc[0]['balanced_accuracy']:.3f} [{binary.iloc[0]['ba_low']:.3f}, "
                                       f"{binary.iloc[0]['ba_high']:.3f}]")
        recall = "–" if t is None else ", ".join(f"{k} {v:.2f}" for k, v in json.loads(t["recall"]).items())
        epochs = f"{info.get('best_epoch', '–')} / {info['epochs']}" if info.get("epochs") else "–"
        full.append(f"| {row} | {'dx7' if ROWS[row_parts(row)[0]][0].startswith('dx7') else 'binary'} | {ba} | "
                    f"{_cell(None if t is None else t['auc'])} | {_cell(None if t is None else t['kappa'])} | "
                    f"{recall} | {nv} | {_cell(info.get('inner_ba'))} | {_cell(info.get('focus'))} | "
                    f"{_cell(info.get('greyed'))} | {epochs} | {_cell(info.get('minutes'), 0)} | "
                    f"{'–' if t is None else t['scored_at'][:10] + ' (' + str(t['commit']) + ')'} | `{_command(row)}` |")
        if t is not None:
            short.append(f"| {row} | {ba} | {_cell(t['auc'])} | {_cell(info.get('minutes'), 0)} |")
    text = "\n".join(full) + "\n"
    _replace_between(RESULTS, "<!-- isic2018:full -->", text)
    _replace_between(README, "<!-- isic2018:short -->", "\n".join(short) + "\n")
    return text


def _replace_between(path: Path, marker: str, text: str) -> None:
    """Put `text` between `marker` and its closing <!-- /... --> in `path` (both lines must be there)."""
    end = marker.replace("<!-- ", "<!-- /")
    doc = path.read_text()
    if marker not in doc or end not in doc:
        raise SystemExit(f"{path}: no {marker} … {end} block to fill")
    head, rest = doc.split(marker, 1)
    path.write_text(head + marker + "\n" + text + end + rest.split(end, 1)[1])


def gap(row: str, out: Path) -> str:
    """Where a scored row's balanced accuracy goes from the inner split to the official test: per-class recall on
    each and the class counts (balanced accuracy weighs every class alike, so the class mix alone moves nothing;
    a class's recall does)."""
    from sklearn.metrics import recall_score

    (yi, di), (yt, dt) = inner_decisions(row, out), decisions(row)
    classes = DX7 if len(set(yt)) > 2 else BINARY
    ri = recall_score(yi, di, labels=range(len(classes)), average=None, zero_division=0)
    rt = recall_score(yt, dt, labels=range(len(classes)), average=None, zero_division=0)
    lines = [f"| class | inner n | inner recall | test n | test recall | change |", "|---|---|---|---|---|---|"]
    for k, c in enumerate(classes):
        lines.append(f"| {c} | {(yi == k).sum()} | {ri[k]:.3f} | {(yt == k).sum()} | {rt[k]:.3f} | {rt[k] - ri[k]:+.3f} |")
    lines.append(f"| balanced accuracy | {len(yi)} | {ri.mean():.3f} | {len(yt)} | {rt.mean():.3f} | "
                 f"{rt.mean() - ri.mean():+.3f} |")
    return "\n".join(lines)
