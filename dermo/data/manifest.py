"""CSV manifests: the one reader behind training, evaluation and the preprocessing command.

A manifest has an `image` column (path absolute, relative to the CSV's folder, or relative to an `images/`
folder beside it; the extension may be left out) and optionally `mask`, `split` and any label or metadata
columns. `read_manifest` returns the rows with absolute `image`/`mask` paths and the path as written in
`entry`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermo.data.imageio import IMAGE_EXTENSIONS
from dermo.errors import DermoError


class DataError(DermoError, ValueError):
    """A dataset-level mistake (layout, classes, columns): one line naming the fix."""


def resolve_entry(csv_path, value) -> Path:
    """A manifest path -> absolute Path: as given when absolute, else beside the CSV, else in images/ beside
    it; a name without extension matches an image file with one. Not found: the path beside the CSV."""
    csv_path = Path(csv_path)
    p = Path(str(value).strip())
    candidates = [p] if p.is_absolute() else [csv_path.parent / p, csv_path.parent / "images" / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
        if not c.suffix:
            for ext in IMAGE_EXTENSIONS:
                if c.with_suffix(ext).is_file():
                    return c.with_suffix(ext).resolve()
    return candidates[0].resolve()


def read_manifest(csv_path, label_column: str | None = None, group_column: str | None = None,
                  meta_columns: list[str] | tuple = ()) -> pd.DataFrame:
    """The CSV's rows with an image -> DataFrame with absolute `image` (str), `mask` (str or None, when the
    column exists) and `entry` (the image path as written); the label, group and metadata columns and `split`
    are read as text (empty cells NaN: labels 0/1 stay "0"/"1" even beside an empty cell); other columns as
    pandas reads them.

    Raises DataError for an unreadable CSV, a missing `image` (or `label_column`, `group_column`, metadata)
    column, or no rows."""
    csv_path = Path(csv_path)
    meta_columns = list(meta_columns or ())
    text = {"image": str, "mask": str, "split": str, **({label_column: str} if label_column else {}),
            **({group_column: str} if group_column else {}),
            **{c: str for c in meta_columns}}
    try:
        df = pd.read_csv(csv_path, dtype=text)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{csv_path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    required = ["image"] + ([label_column] if label_column else []) + ([group_column] if group_column else [])
    missing = [c for c in required if c not in df.columns]
    if missing:
        names = " or ".join(f"'{c}'" for c in missing)
        fix = " (choose the label with --label-column)" if label_column and label_column in missing else ""
        fix = fix or (" (choose the group with --group-column)" if group_column in missing else "")
        raise DataError(f"{csv_path}: no {names} column; columns are {', '.join(map(str, df.columns))}"
                        + fix)
    absent = [c for c in meta_columns if c not in df.columns]
    if absent:
        raise DataError(f"{csv_path}: no metadata column {', '.join(repr(c) for c in absent)} (asked for by "
                        f"--meta-columns); columns are {', '.join(map(str, df.columns))}")
    df = df[df["image"].notna() & (df["image"].astype(str).str.strip() != "")].copy()
    df["entry"] = df["image"].astype(str).str.strip()
    df["image"] = [str(resolve_entry(csv_path, v)) for v in df["entry"]]
    if "mask" in df.columns:
        df["mask"] = [None if pd.isna(v) or not str(v).strip() else str(resolve_entry(csv_path, v))
                      for v in df["mask"]]
    return df
