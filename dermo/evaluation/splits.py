"""Which images a run may be scored on: its recorded split (split.csv), and the refusal to score a model on
images it trained on (docs/method.md §8, §9).

    recorded_samples(run, split, on_bad, log)   the run's split.csv rows of `split` (old runs: rebuilt)
    training_paths(run, log)                    resolved paths the run trained on (None: unknown)
    refuse_training_images(samples, trained, where, split, fix)   one line with the count, or nothing
"""
from __future__ import annotations

from pathlib import Path

from dermo.data.datasets import Sample, load_dataset
from dermo.errors import DermoError
from dermo.evaluation.sources import EvaluationError
from dermo.run import splits
from dermo.run.config import meta_column_list
from dermo.run.folder import Run


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
    split.csv existed has its split rebuilt from config.json, as evaluate.py always did (with a note)."""
    samples = splits.split_samples(run.path, run.classes, split)
    if samples is not None:
        return samples, str(run.path / splits.SPLIT_CSV), []
    log(f"note: {run.path} has no {splits.SPLIT_CSV} (trained before dermo recorded splits); rebuilding its "
        f"{split} split from config.json (data, seed, val fraction)")
    ds = _rebuilt(run, on_bad)
    return ds.split(split), ds.source, list(ds.skipped)


def training_paths(run: Run, log=print) -> set[str] | None:
    """Resolved paths of the images `run` trained on: split.csv's train rows; for a run without split.csv
    the rebuilt training split (None, with a note, when its data is gone)."""
    trained = splits.training_paths(run.path)
    if trained is not None:
        return trained
    try:
        ds = _rebuilt(run, "skip")
    except DermoError:
        log(f"note: {run.path} has no {splits.SPLIT_CSV} and its data cannot be read again; not checked "
            "for overlap with its training images")
        return None
    return {str(Path(s.path).resolve()) for s in ds.train}


def refuse_training_images(samples: list[Sample], trained: dict[str, set[str] | None], where, split: str,
                           fix: str) -> None:
    """Refuse, in one line with the count, to score `samples` when any of them is in a model's training
    images (`trained`: model name -> resolved training paths; None = unknown, not checked)."""
    paths = {str(Path(s.path).resolve()) for s in samples}
    hits = {name: paths & t for name, t in trained.items() if t}
    overlap = set().union(*hits.values()) if hits else set()
    if overlap:
        who = ", ".join(f"{name}: {len(h)}" for name, h in hits.items() if h)
        raise EvaluationError(f"{where}: {len(overlap)} of the {len(paths)} {split} images were used in training "
                              f"({who}); {fix}")
