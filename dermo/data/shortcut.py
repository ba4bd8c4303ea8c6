"""A shortcut check (docs/method.md §1): lesions whose class cues are weak, plus artefacts — a sticker, a ruler
mark, ink dots — inside the field of view and outside the lesion whose presence goes with the class.

    dermo synthetic OUT --shortcut [--n 750] [--n-test 400] [--bias 0.95] [--seed 0] [--size 160]
        [--artefact sticker,ruler,ink] [--artefact-place free|beside|rim] [--artefact-scale 1]
        [--artefact-colour natural|brown|grey]        (variants: dermo.data.artefacts.Style)

    OUT/biased/{train,val}/{nevus,others}/scNNNNN.jpg + _mask.png   training and in-distribution validation:
                                   an artefact in `bias` of the `others` images and in 1 − bias of the `nevus`
    OUT/flipped/{nevus,others}/…, flipped/labels.csv               the correlation reversed (test)
    OUT/clean/{nevus,others}/…, clean/labels.csv                   the very lesions of flipped/, no artefact
    OUT/shortcut.csv               every image: split, image, label, artefact kind (empty: none)

Train on biased/ (model selection sees only biased/val); score flipped/ and clean/ with
`dermo evaluate --run RUN --data OUT/flipped/labels.csv` (every row is in the `val` split). A classifier that reads
the lesion scores alike on both; one that reads the artefact scores far lower on flipped/. Each lesion is
drawn from np.random.default_rng([seed, lesion split, index]) and its artefact from its own generator, so
clean/ and flipped/ differ in the artefacts only, and the files do not depend on the worker count.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from dermo.data.artefacts import DEFAULT_STYLE, KINDS, Style, draw_artefact
from dermo.data.generated import MARKER, README, claim_folder, run_jobs
from dermo.data.imageio import mask_path_for, write_jpeg, write_png
from dermo.data.synthetic_draw import CLASSES, GENERATOR_VERSION, draw_lesion_image

HEADER = "dermo synthetic shortcut dataset"
SPLITS = ("biased", "flipped", "clean")
_LESION_STREAM = {"biased": 1, "flipped": 2, "clean": 2}          # clean/ redraws flipped/'s lesions
BLEND = (0.55, 0.8)        # own-class share of each lesion's look: weak cues, still learnable without artefacts
VAL_FRACTION = 0.2


def _kinds(rng, count: int, share: float, names=KINDS) -> list[str]:
    """Artefact kind per image of one class and subset: round(share·count) of them get one (`names` in turn,
    images drawn at random), the others ""."""
    n = int(round(share * count))
    kinds = [""] * count
    for j, i in enumerate(rng.permutation(count)[:n]):
        kinds[i] = names[j % len(names)]
    return kinds


def plan(n: int, n_test: int, bias: float, seed: int, kinds=KINDS) -> list[tuple[str, str, int, str, str]]:
    """(split, subset, index, class, artefact kind) per image; subset is train/val for biased/, "" otherwise.
    Classes alternate (nevus, others); biased/val holds the last VAL_FRACTION of each class."""
    rng = np.random.default_rng([seed, 99])
    rows = []
    names = CLASSES["binary"]
    for split, count in (("biased", n), ("flipped", n_test)):
        share = {"nevus": 1 - bias, "others": bias} if split == "biased" else {"nevus": bias, "others": 1 - bias}
        for k, cls in enumerate(names):
            idx = list(range(k, count, len(names)))
            n_val = max(1, round(VAL_FRACTION * len(idx))) if split == "biased" else 0
            cut = len(idx) - n_val
            subsets = [("train", idx[:cut]), ("val", idx[cut:])] if n_val else [("", idx)]
            for subset, members in subsets:
                rows += [(split, subset, i, cls, kind)
                         for i, kind in zip(members, _kinds(rng, len(members), share[cls], tuple(kinds)))]
    rows += [("clean", "", i, cls, "") for split, _, i, cls, _ in rows if split == "flipped"]
    return sorted(rows, key=lambda r: (SPLITS.index(r[0]), r[1], r[2]))


def relative_path(split: str, subset: str, index: int, cls: str) -> str:
    return "/".join(p for p in (split, subset, cls, f"sc{index:05d}.jpg") if p)


def _write_one(job: tuple) -> None:
    out, seed, size, blend, style, (split, subset, index, cls, kind) = job
    import cv2

    cv2.setNumThreads(1)
    art_rng = np.random.default_rng([seed, SPLITS.index(split) + 1, index, 1])
    hook = (lambda scene, lesion, fov: draw_artefact(scene, lesion, fov, kind, art_rng, style)) if kind else None
    img, mask = draw_lesion_image(cls, np.random.default_rng([seed, _LESION_STREAM[split], index]), size,
                                  blend_range=blend, artefact=hook)
    path = Path(out) / relative_path(split, subset, index, cls)
    write_jpeg(path, img, quality=92)
    write_png(mask_path_for(path), mask)


def _params(n, n_test, bias, seed, size, blend, style: Style) -> dict:
    params = {"generator_version": GENERATOR_VERSION, "kind": "shortcut", "n": int(n), "n_test": int(n_test),
              "bias": float(bias), "seed": int(seed), "size": int(size), "blend": [float(b) for b in blend]}
    return params if style == DEFAULT_STYLE else {**params, "artefact": style.to_dict()}


def write_shortcut_dataset(out, n: int = 750, n_test: int = 400, bias: float = 0.95, seed: int = 0,
                           size: int = 160, blend=BLEND, workers: int | None = None,
                           style: Style = DEFAULT_STYLE) -> Path:
    """Write the biased/, flipped/ and clean/ splits (module docstring) into `out`; returns `out`.
    Replaces an earlier shortcut set there; refuses a non-empty folder that is not one."""
    checks = [(n >= 10, f"--n {n}: use at least 10 images (biased train + val)"),
              (n_test >= 2, f"--n-test {n_test}: use at least 2 images per test split"),
              (0.5 <= bias <= 1, f"--bias {bias}: use a share in [0.5, 1] (0.5 = no shortcut)"),
              (size >= 32, f"--size {size}: use at least 32 pixels"),
              (0 <= blend[0] <= blend[1] <= 1, f"--blend {blend[0]} {blend[1]}: use 0 <= LO <= HI <= 1")]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    style.check()
    out = claim_folder(out, HEADER, SPLITS, what="dermo shortcut dataset")
    rows = plan(n, n_test, bias, seed, style.kinds)
    run_jobs(_write_one, [(str(out), seed, size, tuple(blend), style, row) for row in rows],
             workers if workers is not None else None)
    table = pd.DataFrame([{"split": split, "image": relative_path(split, subset, i, cls), "label": cls,
                           "artefact": kind} for split, subset, i, cls, kind in rows])
    table.to_csv(out / "shortcut.csv", index=False)
    for split in SPLITS[1:]:                        # test splits: CSV manifests whose rows are all `val`
        part = table[table["split"] == split]
        images = [p.removeprefix(f"{split}/") for p in part["image"]]
        pd.DataFrame({"image": images, "label": part["label"].to_numpy(),
                      "mask": [str(mask_path_for(p).as_posix()) for p in images], "split": "val",
                      "artefact": part["artefact"].to_numpy()}).to_csv(out / split / "labels.csv", index=False)
    with_artefact = table.groupby(["split", "label"])["artefact"].apply(lambda a: (a != "").mean())
    (out / README).write_text(
        f"{HEADER} (generated by `dermo synthetic --shortcut`, not real patient data).\n"
        f"{n} biased images (train + val) and {n_test} per test split, {size}x{size} px, seed {seed}, "
        f"bias {bias}, lesion look blend {blend[0]}-{blend[1]}, generator version {GENERATOR_VERSION}.\n"
        f"Artefacts: {', '.join(style.kinds)}; place {style.place}, size x{style.scale:g}, colour {style.colour}.\n"
        "Share of images with an artefact, per split and class:\n"
        + "".join(f"  {s} {c}: {v:.2f}\n" for (s, c), v in with_artefact.items())
        + "Train on biased/, evaluate on flipped/labels.csv and clean/labels.csv (see dermo/data/shortcut.py).\n")
    (out / MARKER).write_text(json.dumps(_params(n, n_test, bias, seed, size, blend, style), sort_keys=True) + "\n")
    return out
