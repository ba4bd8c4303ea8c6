"""Finding the images, labels, masks and splits of a dataset (docs/method.md §1).

Two forms are accepted:
  folder  DATA/{train,val}/<class>/<image>  (or DATA/<class>/<image>: then a seeded stratified split is made);
          an optional lesion mask sits beside its image as <stem>_mask.png.
  CSV     columns `image` (see dermo.data.manifest), a label column (`--label-column`, default `label`),
          optional `mask` and `split` (train/val), optional group column (`--group-column`, a lesion or
          patient id): the split then keeps each group on one side (dermo.data.groups); optional metadata
          columns (`--meta-columns`, e.g. age_approx,sex): their raw text travels with each Sample.
Class index = position in the sorted class names. Only file existence is checked here; pixels are checked by
the preprocessing step, before training starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from dermo.data.groups import check_groups_apart, group_split
from dermo.data.imageio import BadInputError, is_image_file, mask_path_for
from dermo.data.manifest import DataError, read_manifest

TASK_CLASSES = {"binary": ["nevus", "others"], "multiclass": ["bcc", "mel", "scc"]}
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Sample:
    path: str                  # absolute image path
    label: int | None          # class index, None when unlabelled
    mask: str | None = None    # absolute path of a given lesion mask, None -> generated
    group: str | None = None   # value of the CSV's --group-column (lesion/patient id), None -> its own group
    meta: tuple | None = None  # ((column, raw text or None), ...) of the CSV's --meta-columns; None: none read

    def meta_values(self) -> dict:
        """{column: raw text or None} of this image's metadata ({} when none was read: all missing)."""
        return dict(self.meta or ())


@dataclass
class Dataset:
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    source: str
    skipped: list[str] = field(default_factory=list)   # "path: problem" lines
    given_split: bool = True   # False: the data has no train/val split of its own (make_split=False: all in val)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> list[Sample]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        return getattr(self, name)


def loss_kind(num_classes: int) -> str:
    """Two classes train with cross-entropy, more with focal loss (docs/method.md §1)."""
    return "ce" if num_classes == 2 else "focal"


def check_task_classes(task: str, classes: list[str], source) -> list[str]:
    """The class list for `task` given the classes found in the data."""
    if task == "auto":
        if len(classes) < 2:
            raise DataError(f"{source}: found {len(classes)} class(es) {classes}; need at least 2")
        return sorted(classes)
    if task not in TASK_CLASSES:
        raise DataError(f"unknown task {task!r}; use binary, multiclass or auto")
    expected = TASK_CLASSES[task]
    if sorted(classes) != expected:
        raise DataError(f"{source}: task {task} expects classes {', '.join(expected)} but the data has "
                        f"{', '.join(sorted(classes)) or 'none'}; use --task auto for other class names")
    return expected


def list_images(folder) -> list[Path]:
    """Image files under `folder`, recursively, sorted; masks (<stem>_mask.*) excluded."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_file(p))


def _folder_samples(folder: Path, class_names: list[str]) -> list[Sample]:
    samples = []
    for idx, name in enumerate(class_names):
        cdir = folder / name
        if not cdir.is_dir():
            continue
        images = list_images(cdir)
        if not images:
            raise DataError(f"{cdir}: class folder has no images")
        for img in images:
            mask = mask_path_for(img)
            samples.append(Sample(str(img.resolve()), idx, str(mask.resolve()) if mask.exists() else None))
    return samples


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _stratified_split(samples: list[Sample], val_fraction: float, seed: int, source):
    labels = [s.label for s in samples]
    counts = pd.Series(labels).value_counts()
    if (counts < 2).any():
        raise DataError(f"{source}: every class needs at least 2 images to make a train/val split")
    try:
        train, val = train_test_split(samples, test_size=val_fraction, stratify=labels, random_state=seed)
    except ValueError as e:  # e.g. fewer validation images than classes
        raise DataError(f"{source}: cannot make a stratified {val_fraction:g} validation split "
                        f"of {len(samples)} images ({e})") from None
    return sorted(train, key=lambda s: s.path), sorted(val, key=lambda s: s.path)


def load_folder(root, task="auto", seed=0, val_fraction=0.2, make_split: bool = True) -> Dataset:
    root = Path(root)
    if (root / "train").is_dir():
        found = sorted(set(_class_dirs(root / "train")) | set(_class_dirs(root / "val"))
                       if (root / "val").is_dir() else _class_dirs(root / "train"))
        classes = check_task_classes(task, found, root)
        train = _folder_samples(root / "train", classes)
        if (root / "val").is_dir():
            val = _folder_samples(root / "val", classes)
        elif make_split:
            train, val = _stratified_split(train, val_fraction, seed, root)
        else:
            return Dataset(classes, [], train, source=str(root), given_split=False)
    else:
        classes = check_task_classes(task, _class_dirs(root), root)
        samples = _folder_samples(root, classes)
        if not make_split:
            return Dataset(classes, [], samples, source=str(root), given_split=False)
        train, val = _stratified_split(samples, val_fraction, seed, root)
    return Dataset(classes, train, val, source=str(root))


def load_csv(csv_path, task="auto", label_column="label", seed=0, val_fraction=0.2,
             on_bad="error", group_column: str | None = None, meta_columns=(), make_split: bool = True) -> Dataset:
    csv_path = Path(csv_path)
    meta_columns = list(meta_columns or ())
    df = read_manifest(csv_path, label_column, group_column, meta_columns)
    df = df.dropna(subset=[label_column])
    df[label_column] = df[label_column].astype(str)
    classes = check_task_classes(task, sorted(df[label_column].unique()), csv_path)
    index = {c: i for i, c in enumerate(classes)}
    samples, splits, skipped = [], [], []
    for row in df.to_dict("records"):  # not itertuples: it renames columns such as "lesion type"
        image, mask = row["image"], row.get("mask")
        problem = None
        if not Path(image).is_file():
            problem = BadInputError(image, f"listed in {csv_path.name} but not found")
        elif mask is not None and not Path(mask).is_file():
            problem = BadInputError(mask, f"mask listed in {csv_path.name} but not found")
        if problem is not None:
            if on_bad != "skip":
                raise problem
            skipped.append(str(problem))
            continue
        if mask is None and mask_path_for(image).exists():
            mask = str(mask_path_for(image))
        group = _group_value(row[group_column]) if group_column else None
        meta = tuple((c, _text_value(row[c])) for c in meta_columns) if meta_columns else None
        samples.append(Sample(image, index[row[label_column]], mask, group, meta))
        splits.append(str(row.get("split", "")).strip().lower())
    if not samples:
        raise DataError(f"{csv_path}: no usable rows")
    if "split" in df.columns:
        bad = sorted({s for s in splits if s not in SPLITS})
        if bad:
            raise DataError(f"{csv_path}: split column has values {bad}; use train or val")
        train = [s for s, sp in zip(samples, splits) if sp == "train"]
        val = [s for s, sp in zip(samples, splits) if sp == "val"]
        if group_column:
            check_groups_apart(train, val, csv_path, group_column)
    elif not make_split:
        return Dataset(classes, [], samples, source=str(csv_path), skipped=skipped, given_split=False)
    elif group_column:
        train, val = group_split(samples, val_fraction, seed, csv_path, group_column)
    else:
        train, val = _stratified_split(samples, val_fraction, seed, csv_path)
    return Dataset(classes, train, val, source=str(csv_path), skipped=skipped)


def _group_value(value) -> str | None:
    """A group cell as text; empty or missing -> None (the image is its own group)."""
    return _text_value(value)


def _text_value(value) -> str | None:
    """A cell read as text; empty or missing -> None."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return str(value).strip() or None


def meta_needs_csv(meta_columns, data) -> DataError:
    return DataError(f"--meta-columns {','.join(meta_columns)}: metadata needs a CSV manifest with those "
                     f"columns, but --data {data} is a folder; list the images in a CSV (columns image, label, "
                     f"{', '.join(meta_columns)})")


def group_column_needs_csv(group_column: str, data) -> DataError:
    return DataError(f"--group-column {group_column}: groups need a CSV manifest with that column, but "
                     f"--data {data} is a folder; list the images in a CSV (columns image, label, "
                     f"{group_column})")


def load_dataset(data, task="auto", label_column="label", seed=0, val_fraction=0.2,
                 on_bad="error", group_column: str | None = None, meta_columns=(), make_split: bool = True) -> Dataset:
    """Folder or CSV -> Dataset; raises DataError / BadInputError with one line. `group_column` (CSV
    only) makes the split a stratified group split, or checks a given split keeps the groups apart;
    `meta_columns` (CSV only) are read into each Sample.meta. `make_split=False` (scoring a data set): data
    without a train/val split of its own is not split; all its images are in `val`, with given_split False."""
    data = Path(data)
    if not data.exists():
        raise DataError(f"{data}: data path not found")
    if data.is_dir():
        if group_column:
            raise group_column_needs_csv(group_column, data)
        if meta_columns:
            raise meta_needs_csv(meta_columns, data)
        return load_folder(data, task, seed, val_fraction, make_split)
    if data.suffix.lower() == ".csv":
        return load_csv(data, task, label_column, seed, val_fraction, on_bad, group_column, meta_columns, make_split)
    raise DataError(f"{data}: --data must be a folder or a .csv manifest")


def unlabelled_samples(folder) -> list[Sample]:
    """Every image under `folder` (recursive) for prediction without labels."""
    if not Path(folder).exists():
        raise DataError(f"{folder}: not found")
    if not Path(folder).is_dir():
        raise DataError(f"{folder}: not a folder (--images takes a folder of images)")
    images = list_images(folder)
    if not images:
        raise DataError(f"{folder}: no images found")
    return [Sample(str(p.resolve()), None, str(mask_path_for(p).resolve()) if mask_path_for(p).exists()
                   else None) for p in images]
