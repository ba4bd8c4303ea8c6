"""Which images a run may be scored on: its recorded split (split.csv), and the refusal to score a model on
images it trained on — by path, by content (a copy under another name) or by group (another photo of a
training lesion, the run's --group-column) (docs/method.md §8, §9).

    recorded_samples(run, split, on_bad, log)    the run's split.csv rows of `split` (old runs: rebuilt)
    training_set(run, log)                       what the run trained on: paths, digests, groups (None: unknown)
    held_out(samples, trained, where, split, fix, drop, log, data)
                                                 the samples no model trained on: one refusal line, or with
                                                 drop=True the others kept and the dropped ones counted
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dermo.data.datasets import Sample, load_dataset
from dermo.data.duplicates import file_digest
from dermo.data.manifest import read_manifest
from dermo.errors import DermoError
from dermo.evaluation.sources import EvaluationError
from dermo.run import splits
from dermo.run.config import meta_column_list
from dermo.run.folder import Run


@dataclass(frozen=True)
class TrainingSet:
    """What one run trained on."""
    paths: frozenset[str]              # resolved image paths
    digests: frozenset[str]            # content hashes (file_digest)
    groups: frozenset[str]             # group ids of its --group-column (empty without one)
    group_column: str | None


def _rebuilt(run: Run, on_bad: str):
    """The run's dataset rebuilt from its config.json (data, label column, seed, val fraction, groups)."""
    cfg = run.config
    if not cfg.data:
        raise EvaluationError(f"{run.path}: the run records no data; pass --data")
    ds = load_dataset(cfg.data, "auto", cfg.label_column, seed=cfg.seed, val_fraction=cfg.val_fraction,
                      on_bad=on_bad, group_column=cfg.group_column, meta_columns=meta_column_list(cfg.meta_columns))
    if list(ds.classes) != list(run.classes):
        raise EvaluationError(f"{cfg.data}: classes {', '.join(ds.classes)} differ from the run's "
                              f"({run.path}: {', '.join(run.classes)}); pass --data with the same class names")
    return ds


def recorded_samples(run: Run, split: str, on_bad: str, log=print) -> tuple[list[Sample], str, list[str]]:
    """(samples, data source, skipped lines): exactly the split.csv rows of `split`. A run trained before
    split.csv existed has its split rebuilt from config.json, as dermo evaluate always did (with a note)."""
    samples = splits.split_samples(run.path, run.classes, split)
    if samples is not None:
        return samples, str(run.path / splits.SPLIT_CSV), []
    log(f"note: {run.path} has no {splits.SPLIT_CSV} (trained before dermo recorded splits); rebuilding its "
        f"{split} split from config.json (data, seed, val fraction)")
    ds = _rebuilt(run, on_bad)
    return ds.split(split), ds.source, list(ds.skipped)


def training_set(run: Run, log=print) -> TrainingSet | None:
    """The run's training images (split.csv's train rows; a run without split.csv: its rebuilt training split,
    or None with a note when its data is gone)."""
    rows = splits.training_rows(run.path)
    if rows is not None:
        paths, digests = list(rows["path"]), list(rows["digest"])
        groups = list(rows["group"]) if "group" in rows.columns else []
    else:
        try:
            ds = _rebuilt(run, "skip")
        except DermoError:
            log(f"note: {run.path} has no {splits.SPLIT_CSV} and its data cannot be read again; not checked "
                "for overlap with its training images")
            return None
        paths = [s.path for s in ds.train]
        digests, groups = [file_digest(p) for p in paths], [s.group or "" for s in ds.train]
    return TrainingSet(frozenset(str(Path(p).resolve()) for p in paths), frozenset(d for d in digests if d),
                       frozenset(g for g in groups if g), run.config.group_column)


def data_groups(data, column: str) -> dict[str, str] | None:
    """{resolved image path: group id} from the CSV `data`'s `column`; None for a folder or a CSV without it."""
    if data is None or Path(data).is_dir() or Path(data).suffix.lower() != ".csv":
        return None
    if column not in pd.read_csv(data, nrows=0).columns:
        return None
    df = read_manifest(data, group_column=column)                       # ids as text: "007" stays "007"
    return {str(Path(p).resolve()): str(g).strip() for p, g in zip(df["image"], df[column])
            if not pd.isna(g) and str(g).strip()}


def trained_on(samples: list[Sample], trained: TrainingSet, data=None, log=print) -> set[str]:
    """Resolved paths of `samples` that `trained` saw: the same path, the same bytes, or the same group id of the
    run's group column (read from `data` when it is a CSV with that column; data None: the samples' own groups,
    e.g. another run's recorded split.csv rows)."""
    paths = {s.path: str(Path(s.path).resolve()) for s in samples}
    hits = {r for r in paths.values() if r in trained.paths}
    if trained.digests:
        hits |= {r for p, r in paths.items() if r not in hits and file_digest(p) in trained.digests}
    if trained.group_column and trained.groups:
        groups = ({paths[s.path]: s.group for s in samples if s.group} if data is None     # recorded rows
                  else data_groups(data, trained.group_column))
        if groups is None:
            log(f"note: {data} has no {trained.group_column!r} column (the run's --group-column): checked for "
                "training images by path and content only")
        else:
            hits |= {r for r in paths.values() if groups.get(r) in trained.groups}
    return hits


def held_out(samples: list[Sample], trained: dict[str, TrainingSet | None], where, split: str, fix: str,
             drop: bool = False, log=print, data=None) -> list[Sample]:
    """`samples` minus those any model trained on (`trained`: model name -> TrainingSet; None = unknown, not
    checked; `split` "" for a data set scored whole). Any hit is refused in one line with the counts, or with `drop`
    removed and counted in a line."""
    hits = {name: trained_on(samples, t, data, log) for name, t in trained.items() if t is not None}
    overlap = set().union(*hits.values()) if hits else set()
    if not overlap:
        return samples
    who = ", ".join(f"{name}: {len(h)}" for name, h in hits.items() if h)
    n, images = len(samples), f"{split} images" if split else "images"
    if not drop:
        raise EvaluationError(f"{where}: {len(overlap)} of the {n} {images} were used in training "
                              f"({who}; same path, same content or same group); {fix}, or pass "
                              "--drop-training-images to score the rest")
    kept = [s for s in samples if str(Path(s.path).resolve()) not in overlap]
    log(f"dropped {len(overlap)} of the {n} {images} that were used in training ({who}; same path, same "
        f"content or same group); scoring the other {len(kept)}")
    return kept
