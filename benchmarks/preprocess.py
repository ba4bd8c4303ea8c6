"""Benchmark of dermo.preprocess_image: speed at ~770x575 on one core, Dice on generated images.

    python benchmarks/preprocess.py [--n 40] [--size 320] [--seed 0]

Speed: real ISIC images (../shared/data/isic-uda1, upscaled to 770x575) when present, else
generated ones; one OpenCV thread. Dice: generated images with known lesion masks (skin tone,
lesion colour, shape, illumination gradient, hairs and vignette all vary), and dermo.synthetic's
demo images when that module is available. Real expert masks are not part of this benchmark.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dermo.data.imageio import read_image  # noqa: E402
from dermo.preprocessing.color import shades_of_gray  # noqa: E402
from dermo.preprocessing.fov import field_of_view  # noqa: E402
from dermo.preprocessing.hair import remove_hair  # noqa: E402
from dermo.preprocessing.image import preprocess_image  # noqa: E402
from dermo.preprocessing.morphology import resize_short  # noqa: E402
from dermo.preprocessing.segment import segment_lesion  # noqa: E402

ISIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "isic-uda1" / "images"


def generated(rng: np.random.Generator, h: int = 575, w: int = 770) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB (h, w, 3) dermoscopy-like image and its bool (h, w) lesion mask."""
    skin = rng.uniform([190, 140, 120], [240, 200, 185])
    dark = skin * rng.uniform(0.35, 0.7) * rng.uniform(0.85, 1.0, 3)
    mask = np.zeros((h, w), np.uint8)
    centre = np.array([w / 2, h / 2]) + rng.normal(0, 0.06, 2) * (w, h)
    radius = rng.uniform(0.15, 0.3) * min(h, w)
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    wobble = 1 + sum(rng.uniform(0, 0.12) * np.cos(k * angles + rng.uniform(0, 6.3)) for k in (2, 3, 5))
    aspect = rng.uniform(0.7, 1.0)
    pts = np.stack([centre[0] + radius * wobble * np.cos(angles),
                    centre[1] + aspect * radius * wobble * np.sin(angles)], 1)
    cv2.fillPoly(mask, [pts.round().astype(np.int32)], 1)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), rng.uniform(1, 6))[..., None]
    texture = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 6)[..., None]
    img = skin * (1 - soft) + dark * soft * (1 + 0.6 * texture)
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (w / 2) ** 2
    img = img * (1 - rng.uniform(0, 0.3) * r2)[..., None] + rng.normal(0, 5, (h, w, 3))
    for _ in range(int(rng.integers(0, 12))):
        p0, p1 = rng.integers(0, [w, h], 2), rng.integers(0, [w, h], 2)
        cv2.line(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1), (40, 30, 25), int(rng.integers(1, 4)))
    inside = np.ones((h, w), bool)
    if rng.random() < 0.6:
        vig = np.zeros((h, w), np.uint8)
        cv2.circle(vig, (w // 2, h // 2), int(rng.uniform(0.5, 0.62) * w), 1, -1)
        inside = vig > 0
        img[~inside] = rng.uniform(0, 15)
    return np.clip(img, 0, 255).astype(np.uint8), (mask > 0) & inside


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def speed(images: list[np.ndarray], size: int) -> dict:
    """Mean ms per image of preprocess_image and of its stages (on the resized working copy)."""
    for img in images[:3]:
        preprocess_image(img, size)
    out = {}
    t = time.perf_counter()
    for img in images:
        preprocess_image(img, size)
    out["preprocess_image"] = (time.perf_counter() - t) / len(images) * 1000
    work = [resize_short(img, size) for img in images]
    fovs = [field_of_view(x) for x in work]
    for name, fn in [("field_of_view", lambda x, f: field_of_view(x)),
                     ("remove_hair", remove_hair), ("shades_of_gray", shades_of_gray),
                     ("segment_lesion", segment_lesion)]:
        t = time.perf_counter()
        for x, f in zip(work, fovs):
            fn(x, f)
        out[name] = (time.perf_counter() - t) / len(images) * 1000
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=40, help="images per measurement")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(args.seed)

    files = sorted(ISIC.glob("*.jpg"))[60:][: args.n] if ISIC.is_dir() else []
    if files:
        source = f"{len(files)} ISIC images upscaled to 770x575"
        images = [cv2.resize(read_image(f), (770, 575), interpolation=cv2.INTER_CUBIC) for f in files]
    else:
        source = f"{args.n} generated 770x575 images"
        images = [generated(rng)[0] for _ in range(args.n)]
    ms = speed(images, args.size)
    print(f"speed ({source}, size {args.size}, 1 OpenCV thread):")
    for name, v in ms.items():
        print(f"  {name:17s} {v:6.1f} ms/image")

    scores = []
    for _ in range(args.n):
        img, truth = generated(rng)
        _, mask = preprocess_image(img, args.size)
        scores.append(dice(mask, cv2.resize(truth.astype(np.uint8), mask.shape[::-1],
                                            interpolation=cv2.INTER_NEAREST)))
    print(f"Dice on {args.n} generated images with known masks: mean {np.mean(scores):.3f}, "
          f"min {np.min(scores):.3f}")
    try:
        from dermo.data.synthetic import CLASSES, draw_lesion_image
    except ImportError:
        return 0
    for task, classes in CLASSES.items():
        scores = []
        for i in range(args.n):
            img, truth = draw_lesion_image(classes[i % len(classes)], np.random.default_rng([args.seed, i]), 256)
            _, mask = preprocess_image(img, 256)
            scores.append(dice(mask, truth))
        print(f"Dice on {args.n} dermo.synthetic {task} images: mean {np.mean(scores):.3f}, "
              f"min {np.min(scores):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
