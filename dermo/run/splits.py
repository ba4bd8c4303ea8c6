"""A run's split.csv (docs/method.md §8): exactly which images trained and validated the run.

Written by dermo train when the run starts (beside resume_config.json, so interrupted runs have it too);
read back by dermo evaluate --run (the rows of --split) and dermo ensemble (no member scored on its own training
images). Columns: path (absolute, resolved), label (class name), split (train/val), mask (a given mask's
path, empty when generated), digest (the file's content hash, dermo.data.duplicates.file_digest: scoring refuses
copies of training images under other names), with --group-column group (empty: the image was its own group) and, with
--meta-columns, one column `meta:<name>` per metadata column holding its raw CSV text (empty: missing), so
evaluation of the recorded split feeds the model the same metadata.

    write_split(run_dir, ds) / record_split(run_dir, ds, resume)   write it (a resume checks it instead)
    read_split(run_dir) -> DataFrame | None                         None for runs from before split.csv
    split_samples(run_dir, classes, split) -> [Sample] | None       the recorded rows as samples
    training_paths(run_dir) -> set[str] | None                      resolved paths of the train rows
    training_rows(run_dir) -> DataFrame | None                      the train rows (path, digest, group, ...)
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from dermo.data.datasets import SPLITS, Dataset, Sample
from dermo.data.duplicates import file_digest
from dermo.data.imageio import atomic_write_bytes
from dermo.run.folder import RunError

SPLIT_CSV = "split.csv"
COLUMNS = ["path", "label", "split", "mask", "digest"]
META_PREFIX = "meta:"


def split_frame(ds: Dataset) -> pd.DataFrame:
    """One row per image of `ds`: train rows, then val rows, each in dataset order."""
    samples = ds.train + ds.val
    meta = [META_PREFIX + n for n, _ in next((s.meta for s in samples if s.meta), ())]
    rows = [{"path": s.path, "label": ds.classes[s.label], "split": name, "mask": s.mask or "",
             "digest": file_digest(s.path) or "", "group": s.group or "", **{META_PREFIX + n: v or "" for n, v in (s.meta or ())}}
            for name in SPLITS for s in ds.split(name)]
    grouped = any(s.group is not None for s in samples)
    return pd.DataFrame(rows, columns=COLUMNS + ["group"] + meta)[COLUMNS + (["group"] if grouped else []) + meta]


def write_split(run_dir, ds: Dataset) -> Path:
    path = Path(run_dir) / SPLIT_CSV
    buf = io.StringIO()
    split_frame(ds).to_csv(buf, index=False)
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def record_split(run_dir, ds: Dataset, resume: bool = False) -> None:
    """Write split.csv; when resuming a run that has one, refuse if the data now splits differently."""
    path = Path(run_dir) / SPLIT_CSV
    if not (resume and path.exists()):
        write_split(run_dir, ds)
        return
    recorded = read_split(run_dir)
    before = set(zip(recorded["path"], recorded["split"]))
    now = set(zip(*(split_frame(ds)[c] for c in ("path", "split"))))
    if before != now:
        raise RunError(f"{path}: the data's train/val split changed since this run started "
                       f"({len(before ^ now)} row(s) differ); restore the data as it was, or train anew "
                       "with another --out")


def read_split(run_dir) -> pd.DataFrame | None:
    """The run's split.csv (all columns text, empty cells ""), or None when the run has none."""
    path = Path(run_dir) / SPLIT_CSV
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in ("path", "label", "split") if c not in df.columns]
    if missing:
        raise RunError(f"{path}: no {', '.join(missing)} column; columns are {', '.join(df.columns)}")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise RunError(f"{path}: split column has values {bad}; use train or val")
    return df


def split_samples(run_dir, classes: list[str], split: str) -> list[Sample] | None:
    """The recorded rows of `split` as samples (class index from `classes`), or None without split.csv."""
    df = read_split(run_dir)
    if df is None:
        return None
    unknown = sorted(set(df["label"]) - set(classes))
    if unknown:
        raise RunError(f"{Path(run_dir) / SPLIT_CSV}: labels {unknown} are not the run's classes "
                       f"({', '.join(classes)})")
    rows = df[df["split"] == split]
    groups = rows["group"] if "group" in rows.columns else [""] * len(rows)
    masks = rows["mask"] if "mask" in rows.columns else [""] * len(rows)
    names = [c[len(META_PREFIX):] for c in rows.columns if c.startswith(META_PREFIX)]
    metas = ([tuple((n, r[META_PREFIX + n].strip() or None) for n in names)
              for r in rows.to_dict("records")] if names else [None] * len(rows))
    return [Sample(p, classes.index(lab), m or None, g or None, meta)
            for p, lab, m, g, meta in zip(rows["path"], rows["label"], masks, groups, metas)]


def training_rows(run_dir) -> pd.DataFrame | None:
    """split.csv's train rows (text columns; runs from before the digest column get it computed from the files
    that still exist), or None without split.csv."""
    df = read_split(run_dir)
    if df is None:
        return None
    rows = df[df["split"] == "train"].copy()
    if "digest" not in rows.columns:
        rows["digest"] = [file_digest(p) or "" for p in rows["path"]]
    return rows


def training_paths(run_dir) -> set[str] | None:
    """Resolved paths of the images the run trained on (split.csv's train rows), or None without it."""
    df = read_split(run_dir)
    if df is None:
        return None
    return {str(Path(p).resolve()) for p in df.loc[df["split"] == "train", "path"]}
