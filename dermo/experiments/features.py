"""Hand-crafted lesion features for the classical-ML baseline (dermo.ml).

    lesion_features(image, mask, size=256) -> dict[str, float]   keys in FEATURE_NAMES order
    feature_vector(image, mask, size=256)  -> float64 (F,)         the same values as an array
    extract_features(items, workers=None)  -> float64 (N, F)       cached (image, mask) PNGs, in parallel

Inputs: image uint8 RGB (H, W, 3), mask uint8 (H, W) (>0 = lesion). Both are first resized so the
shorter side is `size` px (fixed scale: texture and border numbers are comparable between datasets).
Feature groups (F = len(FEATURE_NAMES) = 117):
  colour   RGB (0..255), HSV (H in degrees, rotated so reds do not wrap; S, V 0..1), CIE Lab:
           per channel mean/std/skew of the lesion and of the surrounding skin (inside the dermoscope's
           field of view), and lesion - skin differences of mean and std                       72
  GLCM     grey levels quantised to 32 inside the lesion (outside pixels never pair), distances 1 and
           3 px, angles 0/45/90/135 degrees averaged: contrast, homogeneity, energy, correlation   8
  LBP      uniform local binary pattern histograms inside the lesion, (P, R) = (8, 1) and (16, 2)  28
  shape    area fraction, eccentricity, solidity, extent, compactness = perimeter^2 / (4 pi area),
           asymmetry about the major / minor principal axis (share of the lesion not covered by its
           mirror image: 0 symmetric .. 1), border irregularity = perimeter / convex-hull perimeter,
           radial_cv = std / mean of the contour's distances to the centroid                        9
A region without pixels (empty or full mask) gives zeros for its features, never NaN.
"""
from __future__ import annotations

import os

import cv2
import numpy as np
from joblib import Parallel, delayed
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from skimage.measure import perimeter, regionprops
from tqdm import tqdm

from dermo.data.imageio import read_image, read_mask
from dermo.preprocessing.fov import field_of_view

WORK_SIZE = 256
COLOUR_SPACES = (("rgb", ("r", "g", "b")), ("hsv", ("h", "s", "v")), ("lab", ("l", "a", "b")))
REGION_STATS = ("mean", "std", "skew")
DIFF_STATS = ("mean", "std")
GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")
GLCM_DISTANCES = (1, 3)
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_LEVELS = 32
LBP_CONFIGS = ((8, 1.0), (16, 2.0))
SHAPE_NAMES = ("area_fraction", "eccentricity", "solidity", "extent", "compactness",
               "asymmetry_major", "asymmetry_minor", "border_irregularity", "radial_cv")
HUE_SHIFT = 120.0            # degrees added to hue: the wrap point moves from red to blue
MIN_REGION = 10              # pixels; smaller lesions/skin regions count as empty


def _colour_names() -> list[str]:
    names = []
    for space, channels in COLOUR_SPACES:
        for ch in channels:
            names += [f"{space}_{ch}_{region}_{stat}" for region in ("lesion", "skin") for stat in REGION_STATS]
            names += [f"{space}_{ch}_diff_{stat}" for stat in DIFF_STATS]
    return names


FEATURE_NAMES: tuple[str, ...] = tuple(
    _colour_names()
    + [f"glcm_{prop}_d{d}" for d in GLCM_DISTANCES for prop in GLCM_PROPS]
    + [f"lbp_p{p}_r{r:g}_bin{b}" for p, r in LBP_CONFIGS for b in range(p + 2)]
    + [f"shape_{n}" for n in SHAPE_NAMES])


# ----------------------------------------------------------------------------- helpers

def resize_short(image: np.ndarray, mask: np.ndarray, size: int = WORK_SIZE):
    """(H,W,3) uint8, (H,W) -> both with the shorter side = size (image: area/bilinear, mask: nearest)."""
    h, w = image.shape[:2]
    if mask.shape[:2] != (h, w):
        raise ValueError(f"mask shape {mask.shape[:2]} != image shape {(h, w)}")
    scale = size / min(h, w)
    if scale == 1:
        return image, mask
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, new, interpolation=interp), cv2.resize(mask, new, interpolation=cv2.INTER_NEAREST)


def colour_planes(image: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 RGB (H,W,3) -> {"rgb","hsv","lab": float32 (H,W,3)} (see the module docstring for ranges)."""
    f = image.astype(np.float32) / 255.0
    hsv = cv2.cvtColor(f, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + HUE_SHIFT) % 360.0
    return {"rgb": image.astype(np.float32), "hsv": hsv, "lab": cv2.cvtColor(f, cv2.COLOR_RGB2Lab)}


def channel_stats(pixels: np.ndarray) -> np.ndarray:
    """pixels (n, C) -> (3, C): mean, std, skew per channel; zeros if n < MIN_REGION, skew 0 if std = 0."""
    if len(pixels) < MIN_REGION:
        return np.zeros((3, pixels.shape[1]))
    mean = pixels.mean(axis=0, dtype=np.float64)
    d = pixels - mean.astype(pixels.dtype)
    d2 = d * d                                   # (not ** : np.power is several times slower)
    std = np.sqrt(d2.mean(axis=0, dtype=np.float64))
    m3 = (d2 * d).mean(axis=0, dtype=np.float64)
    skew = np.divide(m3, std ** 3, out=np.zeros_like(m3), where=std > 1e-9)
    return np.stack([mean, std, skew])


def colour_features(image: np.ndarray, lesion: np.ndarray, skin: np.ndarray) -> list[float]:
    """72 values in FEATURE_NAMES order; lesion, skin bool (H,W)."""
    planes = colour_planes(image)
    stacked = np.concatenate([planes[space] for space, _ in COLOUR_SPACES], axis=2)   # (H,W,9)
    les, sk = channel_stats(stacked[lesion]), channel_stats(stacked[skin])          # (3, 9) each
    both = lesion.sum() >= MIN_REGION and skin.sum() >= MIN_REGION
    diff = (les[:2] - sk[:2]) if both else np.zeros((2, stacked.shape[2]))
    return list(np.concatenate([les, sk, diff]).T.ravel())       # channel-major: lesion, skin, diff


def _bbox(lesion: np.ndarray, margin: int) -> tuple[slice, slice]:
    ys, xs = np.nonzero(lesion)
    h, w = lesion.shape
    return (slice(max(0, ys.min() - margin), min(h, ys.max() + margin + 1)),
            slice(max(0, xs.min() - margin), min(w, xs.max() + margin + 1)))


def glcm_features(gray: np.ndarray, lesion: np.ndarray) -> list[float]:
    """gray uint8 (H,W), lesion bool (H,W) -> 8 values: 4 GLCM properties x 2 distances, angle-averaged.

    Lesion pixels get levels 1..GLCM_LEVELS, the rest 0; row/column 0 of the matrix is dropped, so only
    pairs with both pixels inside the lesion count."""
    if lesion.sum() < MIN_REGION:
        return [0.0] * (len(GLCM_PROPS) * len(GLCM_DISTANCES))
    box = _bbox(lesion, 0)
    q = (gray[box].astype(np.int32) * GLCM_LEVELS // 256 + 1) * lesion[box]
    glcm = graycomatrix(q.astype(np.uint8), GLCM_DISTANCES, GLCM_ANGLES, levels=GLCM_LEVELS + 1,
                        symmetric=True, normed=False)[1:, 1:].astype(np.float64)   # (L, L, nd, na)
    sums = glcm.sum(axis=(0, 1), keepdims=True)
    glcm = np.divide(glcm, sums, out=np.zeros_like(glcm), where=sums > 0)
    props = np.stack([graycoprops(glcm, p) for p in GLCM_PROPS])                     # (4, nd, na)
    return list(np.nan_to_num(props.mean(axis=2)).T.ravel())                         # d-major order


def lbp_features(gray: np.ndarray, lesion: np.ndarray) -> list[float]:
    """Normalised uniform-LBP histograms of the lesion pixels: (P+2) bins per (P, R) in LBP_CONFIGS."""
    values = []
    n = int(lesion.sum())
    box = _bbox(lesion, 3) if n >= MIN_REGION else None
    for p, r in LBP_CONFIGS:
        if box is None:
            values += [0.0] * (p + 2)
            continue
        codes = local_binary_pattern(gray[box], p, r, method="uniform")[lesion[box]].astype(np.int64)
        values += list(np.bincount(codes, minlength=p + 2)[:p + 2] / n)
    return values


def asymmetry(lesion: np.ndarray) -> tuple[float, float]:
    """Share of the lesion not covered by its mirror image about the (major, minor) principal axis.

    The mask is resampled (nearest) on a grid aligned with its principal axes and centred on the
    centroid, so mirroring is an exact flip of that grid."""
    ys, xs = np.nonzero(lesion)
    centre = np.array([xs.mean(), ys.mean()])
    _, vecs = np.linalg.eigh(np.cov(np.stack([xs, ys]).astype(np.float64)))   # columns: minor, major
    minor, major = vecs[:, 0], vecs[:, 1]
    radius = int(np.ceil(np.hypot(xs - centre[0], ys - centre[1]).max())) + 2
    u = np.arange(-radius, radius + 1, dtype=np.float64)
    uu, vv = np.meshgrid(u, u)                 # columns run along the major axis, rows along the minor
    map_x = (centre[0] + uu * major[0] + vv * minor[0]).astype(np.float32)
    map_y = (centre[1] + uu * major[1] + vv * minor[1]).astype(np.float32)
    grid = cv2.remap(lesion.astype(np.uint8), map_x, map_y, cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
    area = max(int(grid.sum()), 1)
    about_major = np.count_nonzero(grid & ~grid[::-1, :]) / area   # v -> -v
    about_minor = np.count_nonzero(grid & ~grid[:, ::-1]) / area   # u -> -u
    return float(about_major), float(about_minor)


def shape_features(lesion: np.ndarray) -> list[float]:
    """bool (H,W) -> the 9 SHAPE_NAMES values (zeros for an empty lesion)."""
    if lesion.sum() < MIN_REGION:
        return [0.0] * len(SHAPE_NAMES)
    region = regionprops(lesion.astype(np.uint8))[0]          # all lesion pixels as one region
    area, perim = float(region.area), float(region.perimeter)
    convex_perim = float(perimeter(region.image_convex))
    contours, _ = cv2.findContours(lesion.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = max(contours, key=len)[:, 0, :].astype(np.float64)                     # (n, 2) x, y
    cy, cx = region.centroid
    dist = np.hypot(pts[:, 0] - cx, pts[:, 1] - cy)
    asym_major, asym_minor = asymmetry(lesion)
    return [area / lesion.size, float(region.eccentricity), float(region.solidity), float(region.extent),
            perim ** 2 / (4 * np.pi * area), asym_major, asym_minor,
            perim / convex_perim if convex_perim > 0 else 0.0,
            float(dist.std() / dist.mean()) if dist.mean() > 0 else 0.0]


# ----------------------------------------------------------------------------- public API

def feature_vector(image: np.ndarray, mask: np.ndarray, size: int = WORK_SIZE) -> np.ndarray:
    """uint8 RGB (H,W,3), mask (H,W) (>0 lesion) -> float64 (F,) in FEATURE_NAMES order, all finite."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
    image, mask = resize_short(image, np.asarray(mask), size)
    lesion = mask > 0
    skin = field_of_view(image) & ~lesion
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    values = (colour_features(image, lesion, skin) + glcm_features(gray, lesion)
              + lbp_features(gray, lesion) + shape_features(lesion))
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def lesion_features(image: np.ndarray, mask: np.ndarray, size: int = WORK_SIZE) -> dict[str, float]:
    """Named features of one image: {name: value} in FEATURE_NAMES order (see the module docstring)."""
    return dict(zip(FEATURE_NAMES, map(float, feature_vector(image, mask, size))))


def features_of_files(image_path, mask_path, size: int = WORK_SIZE) -> np.ndarray:
    """Feature vector (F,) of an image file and its mask file (BadInputError names a bad file)."""
    image = read_image(image_path)
    return feature_vector(image, read_mask(mask_path, shape=image.shape[:2]), size)


def _worker(image_path, mask_path, size):
    cv2.setNumThreads(1)                      # one process per core already
    return features_of_files(image_path, mask_path, size)


def extract_features(items, workers: int | None = None, size: int = WORK_SIZE,
                     progress: bool = True) -> np.ndarray:
    """items: objects with .image and .mask paths (dermo.pipeline.Prepared) -> float64 (N, F).

    Runs in `workers` processes (default: all cores) with a tqdm progress bar; order is kept."""
    pairs = [(str(it.image), str(it.mask)) for it in items]
    if not pairs:
        return np.zeros((0, len(FEATURE_NAMES)))
    workers = max(1, min(workers or os.cpu_count() or 1, len(pairs)))
    bar = tqdm(total=len(pairs), desc="features", unit="img", disable=None if progress else True)
    rows = []
    try:
        if workers == 1:
            for img, msk in pairs:
                rows.append(features_of_files(img, msk, size))
                bar.update(1)
        else:
            parallel = Parallel(n_jobs=workers, return_as="generator", batch_size=4)
            for row in parallel(delayed(_worker)(img, msk, size) for img, msk in pairs):
                rows.append(row)
                bar.update(1)
    finally:
        bar.close()
    return np.stack(rows)
