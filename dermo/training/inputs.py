"""A run's inputs: its data set, checked and split (split.csv written), preprocessed into the cache, and the
metadata encoding fitted on its training images (docs/method.md §1, §2, §4)."""
from __future__ import annotations

import numpy as np

from dermo.data.datasets import Dataset, load_dataset
from dermo.data.duplicates import check_duplicates
from dermo.data.groups import ungrouped_ids_note
from dermo.data.metadata import MetaEncoding, fit_encoding
from dermo.errors import DermoError
from dermo.pipeline.prepare import prepare, settings_for
from dermo.run.config import TrainConfig, meta_column_list
from dermo.run.splits import record_split


class TrainingError(DermoError, RuntimeError):
    """Training could not go on; one line saying why and what to do."""


def load_data(cfg: TrainConfig, log=print, run_dir=None) -> tuple[Dataset, list, list]:
    ds = load_dataset(cfg.data, cfg.task, cfg.label_column, cfg.seed, cfg.val_fraction, cfg.on_bad_image,
                      cfg.group_column, meta_column_list(cfg.meta_columns))
    check_classes_present(cfg, ds, log)
    hint = None if cfg.group_column else ungrouped_ids_note(cfg.data)
    if hint:
        log(hint)
    duplicates = check_duplicates(ds, cfg.allow_duplicates)      # before any preprocessing
    record_split(run_dir or cfg.run_dir, ds, cfg.resume)           # split.csv, also for interrupted runs
    if duplicates:
        log(f"note: {len(duplicates)} exact duplicate image pair(s) across train and val (--allow-duplicates)")
    settings = settings_for(cfg.image_size, hair=cfg.hair_removal, color=cfg.color_constancy,
                            color_region=cfg.color_region, mask_grow=cfg.mask_grow)
    log(f"data: {ds.source} — classes {ds.classes}, {len(ds.train)} train / {len(ds.val)} val images")
    log("preprocessing (cached; hair removal, colour constancy, lesion masks)…")
    train_items, bad_train = prepare(ds.train, settings, cfg.cache_dir, cfg.on_bad_image)
    val_items, bad_val = prepare(ds.val, settings, cfg.cache_dir, cfg.on_bad_image)
    ds.skipped += bad_train + bad_val
    if ds.skipped:
        log(f"skipped {len(ds.skipped)} bad file(s):")
        for line in ds.skipped:
            log(f"  {line}")
    if not train_items or not val_items:
        raise TrainingError(f"{cfg.data}: no usable {'training' if not train_items else 'validation'} "
                            "images left")
    if bad_train or bad_val:                 # skipped files can empty a class the check above still saw
        check_classes_present(cfg, ds, log, {"train": [it.label for it in train_items],
                                             "val": [it.label for it in val_items]}, " after skipping bad files")
    return ds, train_items, val_items


EVERY_CLASS_MONITORS = ("val_auc", "val_balanced_accuracy", "val_counterfactual_accuracy",  # need every class
                        "val_worst_accuracy")


def check_classes_present(cfg: TrainConfig, ds: Dataset, log=print, labels: dict | None = None,
                          when: str = "") -> None:
    """A class without training images cannot be learnt (refused); one without validation images is said in a
    note, and refused with a monitor that needs every class (AUC is undefined, balanced accuracy ignores it).
    `labels` {split: class ids}: the images left (default: the data set's); `when` says what left them."""
    for split in ("train", "val"):
        ids = labels[split] if labels is not None else [s.label for s in ds.split(split)]
        counts = np.bincount(ids, minlength=ds.num_classes)
        absent = [c for c, n in zip(ds.classes, counts) if n == 0]
        if not absent:
            continue
        what = f"{cfg.data}: the {split} split has no image of class {', '.join(absent)}{when}"
        if split == "train":
            raise TrainingError(f"{what}; every class needs training images")
        if cfg.monitor in EVERY_CLASS_MONITORS:
            raise TrainingError(f"{what}, so --monitor {cfg.monitor} is undefined; use --monitor val_accuracy or "
                                "val_kappa, or a split with every class in val")
        log(f"note: {what}; its recall, the AUC and the balanced accuracy are not measured")


def fit_meta(cfg: TrainConfig, ds: Dataset, train_items: list, log=print) -> MetaEncoding | None:
    """The metadata encoding of --meta-columns fitted on the training images only (stored in
    cfg.meta_encoding, hence config.json); None without --meta-columns."""
    names = meta_column_list(cfg.meta_columns)
    if not names:
        return None
    enc = fit_encoding(names, [dict(it.meta or ()) for it in train_items], source=ds.source)
    cfg.meta_encoding = enc.to_dict()
    missing = {n: sum(dict(it.meta or ()).get(n) is None for it in train_items) for n in names}
    log(f"metadata: {', '.join(enc.feature_names())} ({enc.width} inputs, fitted on {len(train_items)} training "
        "images; missing: " + ", ".join(f"{n} {k}" for n, k in missing.items()) + ")")
    return enc
