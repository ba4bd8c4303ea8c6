"""Drawing of one synthetic dermoscopy-like image with its exact lesion mask (demo data, docs/method.md §1, §9).

    draw_lesion_image(cls, rng, size) -> (uint8 RGB (size, size, 3), uint8 {0,255} mask (size, size))

Scene, in drawing order (float32 RGB in [0, 1]): skin (tone, low-frequency shading, fine texture) ->
lesion (shape, border, colours and texture by class; a quarter of each class borrows the shape and/or
the look of another class) -> hairs -> illumination, colour cast, gamma, focus -> dark circular
dermoscope vignette (sometimes absent) -> sensor noise. The mask is the lesion polygon inside the field
of view, before hairs are drawn. Everything random comes from `rng`, so equal generators give equal
bytes; dermo.synthetic writes whole datasets and re-exports CLASSES, GENERATOR_VERSION and
draw_lesion_image. Bump GENERATOR_VERSION whenever a change here alters the drawn bytes.
"""
from __future__ import annotations

import cv2
import numpy as np

CLASSES = {"binary": ["nevus", "others"], "multiclass": ["bcc", "mel", "scc"]}  # task -> class names
GENERATOR_VERSION = 2  # recorded in each dataset's marker: bump when the drawn bytes change
ATYPICAL_FRACTION = 0.25
# Shape per look: (irregularity range, spectral decay, aspect range, border softness px @256, radius/size range)
_SHAPES = {"nevus": ((0.02, 0.06), 2.0, (0.7, 1.0), (1.5, 4.0), (0.15, 0.30)),
           "mel": ((0.08, 0.20), 1.0, (0.55, 1.0), (0.7, 2.5), (0.17, 0.36)),
           "bcc": ((0.05, 0.12), 1.3, (0.6, 1.0), (1.5, 3.0), (0.14, 0.32)),
           "scc": ((0.05, 0.12), 1.5, (0.65, 1.0), (1.0, 2.5), (0.14, 0.30))}
_MEL_PALETTE = np.array([[0.60, 0.40, 0.26], [0.30, 0.17, 0.10], [0.10, 0.07, 0.07],
                         [0.42, 0.47, 0.58], [0.72, 0.30, 0.30], [0.85, 0.80, 0.80]], np.float32)
_MEL_P = np.array([0.25, 0.25, 0.18, 0.14, 0.10, 0.08])  # light/dark brown, black, blue-grey, red, white


def _look(cls: str) -> str:
    return "mel" if cls == "others" else cls


def _noise(rng, s: int, sigma: float) -> np.ndarray:
    """(s, s) float32 band-limited Gaussian noise with unit std."""
    n = cv2.GaussianBlur(rng.standard_normal((s, s), dtype=np.float32), (0, 0), max(sigma, 0.3))
    return n / (n.std() + 1e-6)


def _lowfreq(rng, s: int, cells: int, k: int = 1) -> np.ndarray:
    """(s, s, k) smooth field in about [-1, 1]: a random cells x cells grid, cubic-upsampled."""
    grid = rng.uniform(-1, 1, (cells, cells, k)).astype(np.float32)
    mid = cv2.resize(grid, (s // 4, s // 4), interpolation=cv2.INTER_CUBIC)  # cubic is slow: smooth small,
    return cv2.resize(mid, (s, s), interpolation=cv2.INTER_LINEAR).reshape(s, s, k)  # then stretch


def _mix(a: np.ndarray, b, w: np.ndarray) -> np.ndarray:
    """(s, s, 3) a blended towards b ((s, s, 3) or an RGB triple) by weight w (s, s) in [0, 1]."""
    d = np.subtract(b, a, dtype=np.float32)
    d *= w[..., None]
    return d.__iadd__(a)


def _dot(layer: np.ndarray, x, y, r: float, value) -> None:
    """Filled anti-aliased disc of sub-pixel radius r (>= 0.6 px) at (x, y), drawn in place."""
    cv2.circle(layer, (int(x) * 16 + 8, int(y) * 16 + 8), int(max(r, 0.6) * 16), value, -1, cv2.LINE_AA, 4)


def _network(rng, s: int, period: float, width: float) -> np.ndarray:
    """(s, s) in [0, 1]: the zero-crossing lines of smooth noise, a reticular (pigment-network) pattern."""
    return np.exp(-(_noise(rng, s, period) / width) ** 2)


def _skin(rng, s: int, sc: float) -> np.ndarray:
    """(s, s, 3) skin: warm tone varying per image, low-frequency shading, redness, fine texture."""
    light = rng.uniform(0.6, 0.92)
    green = light * rng.uniform(0.68, 0.82)
    base = np.array([light, green, green * rng.uniform(0.82, 0.96)], np.float32)
    shade = 1 + rng.uniform(0.04, 0.14) * _lowfreq(rng, s, 3)[..., 0]
    shade += rng.uniform(0.015, 0.04) * _noise(rng, s, 0.8 * sc)
    red = rng.uniform(0, 0.06) * _lowfreq(rng, s, 5)[..., 0]
    img = shade[..., None] * base
    img[..., 1:] -= red[..., None]
    return img


def _polygon(rng, s: int, sc: float, look: str) -> tuple[np.ndarray, float]:
    """Lesion outline as (N, 2) int32 points, plus border softness in px, from a noisy radius profile."""
    irr, decay, asp, soft, rad = _SHAPES[look]
    theta = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    k = np.arange(1, 17)
    amp = rng.uniform(*irr) * rng.standard_normal(16) / k ** decay
    r = 1 + (amp[:, None] * np.cos(k[:, None] * theta + rng.uniform(0, 2 * np.pi, 16)[:, None])).sum(0)
    r = np.clip(r, 0.35, None) * rng.uniform(*rad) * s
    a, rot = rng.uniform(*asp), rng.uniform(0, np.pi)
    x, y = r * np.cos(theta), r * np.sin(theta) * a
    c = s / 2 + rng.normal(0, 0.06 * s, 2)
    pts = np.stack([c[0] + x * np.cos(rot) - y * np.sin(rot), c[1] + x * np.sin(rot) + y * np.cos(rot)], 1)
    return np.round(pts).astype(np.int32), rng.uniform(*soft) * sc


def _nevus(rng, s, sc, dist, radius):
    """Uniform light-to-dark brown, darker centre, mild reticular network fading at the periphery."""
    t = rng.uniform(0, 1)
    base = np.array([0.66, 0.45, 0.30], np.float32) * (1 - t) + np.array([0.32, 0.18, 0.10], np.float32) * t
    net = _network(rng, s, rng.uniform(3.0, 5.0) * sc, rng.uniform(0.3, 0.45)) * rng.uniform(0.15, 0.4)
    shade = (1 - rng.uniform(0.05, 0.25) * dist) * (1 - net * (0.3 + 0.7 * dist))
    col = base * shade[..., None] + 0.02 * _noise(rng, s, 1.0 * sc)[..., None]
    if rng.random() < 0.4:  # two-tone: a smooth patch of a darker or lighter brown
        patch = np.clip(_lowfreq(rng, s, 4)[..., 0] * 2, 0, 1) * rng.uniform(0.2, 0.7)
        col = _mix(col, base * rng.choice([0.55, 1.3]), patch)
    ys, xs = np.nonzero(dist > 0.15)
    n_glob = int(rng.integers(5, 25)) if rng.random() < 0.3 else 0  # globular pattern
    for i in rng.choice(len(ys), size=min(len(ys), n_glob), replace=False):
        _dot(col, xs[i], ys[i], rng.uniform(2, 4) * sc, tuple(float(v) for v in base * 0.7))
    return col, np.float32(rng.uniform(0.8, 1.0))


def _mel(rng, s, sc, dist, radius):
    """Several colours in blotches (browns, black, blue-grey, red, white), atypical network, dots."""
    idx = rng.choice(len(_MEL_P), size=rng.integers(2, 6), replace=False, p=_MEL_P)
    fields = _lowfreq(rng, s, int(rng.integers(4, 8)), len(idx)) * rng.uniform(3, 8)
    w = np.exp(fields - fields.max(2, keepdims=True))
    col = (w / w.sum(2, keepdims=True)) @ _MEL_PALETTE[idx]
    net = _network(rng, s, rng.uniform(1.5, 4.0) * sc, rng.uniform(0.3, 0.6))
    col *= (1 - rng.uniform(0.1, 0.4) * net * (_lowfreq(rng, s, 4)[..., 0] > 0))[..., None]
    dots = np.zeros((s, s), np.float32)
    ys, xs = np.nonzero((dist > 0.02) & (dist < 0.45))
    for i in rng.choice(len(ys), size=min(len(ys), int(rng.integers(0, 12))), replace=False):
        _dot(dots, xs[i], ys[i], rng.uniform(1, 3) * sc, 1.0)
    col = col * (1 - 0.8 * dots)[..., None] + 0.03 * _noise(rng, s, 1.0 * sc)[..., None]
    return col, np.float32(rng.uniform(0.85, 1.0))


def _tree(layer, rng, p, angle, length, thick, depth):
    """Draw one branching vessel: a line then 2 thinner, shorter children at spread angles."""
    q = p + length * np.array([np.cos(angle), np.sin(angle)])
    cv2.line(layer, tuple(np.round(p).astype(int)), tuple(np.round(q).astype(int)), 1.0,
             max(1, int(round(thick))), cv2.LINE_AA)
    if depth > 0:
        for sign in (-1, 1):
            _tree(layer, rng, q, angle + sign * rng.uniform(0.3, 0.9), length * rng.uniform(0.5, 0.8),
                  thick * 0.7, depth - 1)


def _bcc(rng, s, sc, dist, radius):
    """Pinkish pearly translucent lesion, arborizing red vessels, maybe blue-grey ovoid nests."""
    base = np.array([0.92, 0.62, 0.62], np.float32) * rng.uniform(0.85, 1.05)
    col = base + rng.uniform(0.03, 0.1) * _lowfreq(rng, s, 6) + 0.02 * _noise(rng, s, 1.2 * sc)[..., None]
    opacity = rng.uniform(0.55, 0.9) * (0.5 + 0.5 * np.sqrt(dist))
    vessels = np.zeros((s, s), np.float32)
    ys, xs = np.nonzero(dist > 0.1)
    for i in rng.choice(len(ys), size=min(len(ys), int(rng.integers(2, 6))), replace=False):
        _tree(vessels, rng, np.array([xs[i], ys[i]], float), rng.uniform(0, 2 * np.pi),
              radius * rng.uniform(0.25, 0.5), rng.uniform(0.8, 2.0) * sc, int(rng.integers(2, 5)))
    vessels = cv2.GaussianBlur(vessels, (0, 0), 0.6 * sc) * (dist > 0) * rng.uniform(0.6, 0.9)
    col = _mix(col, (0.70, 0.12, 0.16), vessels)
    nests = np.zeros((s, s), np.float32)
    for i in rng.choice(len(ys), size=min(len(ys), int(rng.integers(0, 4))), replace=False):
        axes = (max(1, int(radius * rng.uniform(0.08, 0.2))), max(1, int(radius * rng.uniform(0.05, 0.12))))
        cv2.ellipse(nests, (int(xs[i]), int(ys[i])), axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
    nests = cv2.GaussianBlur(nests, (0, 0), 1.5 * sc) * (dist > 0)
    col = _mix(col, (0.36, 0.40, 0.52), 0.8 * nests)
    return col, np.maximum(opacity, np.maximum(vessels, 0.8 * nests))


def _scc(rng, s, sc, dist, radius):
    """Pale whitish-yellow keratotic lesion: scaly texture, crusts, a red rim, a few dotted vessels."""
    col = np.array([0.93, 0.87, 0.72], np.float32) * rng.uniform(0.85, 1.03) + np.zeros((s, s, 3), np.float32)
    scales = _network(rng, s, rng.uniform(2.5, 4.0) * sc, 0.4) * rng.uniform(0.3, 0.6)
    col = _mix(col, (0.62, 0.50, 0.34), scales)
    crust = np.clip((_lowfreq(rng, s, 5)[..., 0] - rng.uniform(0.2, 0.7)) * 4, 0, 1)
    tint = np.array([0.62, 0.45, 0.25] if rng.random() < 0.6 else [0.45, 0.18, 0.12], np.float32)
    col = _mix(col, tint, crust)
    rim = np.exp(-(dist / rng.uniform(0.1, 0.3)) ** 2) * rng.uniform(0.3, 0.7) * (dist > 0)
    col = _mix(col, (0.85, 0.42, 0.42), rim)
    ys, xs = np.nonzero((dist > 0) & (dist < 0.35))
    for i in rng.choice(len(ys), size=min(len(ys), int(rng.integers(0, 10))), replace=False):
        _dot(col, xs[i], ys[i], 1.5 * sc, (0.7, 0.15, 0.18))
    return col + 0.03 * _noise(rng, s, 0.8 * sc)[..., None], np.float32(rng.uniform(0.75, 0.95))


_RENDER = {"nevus": _nevus, "mel": _mel, "bcc": _bcc, "scc": _scc}


def _hairs(rng, img: np.ndarray, sc: float) -> np.ndarray:
    """Draw 0..8 thin dark curved hairs (quadratic Bezier polylines) over (s, s, 3) img."""
    s = img.shape[0]
    layer = np.zeros((s, s), np.float32)
    t = np.linspace(0, 1, 24)[:, None]
    for _ in range(int(rng.integers(0, 9))):
        p0 = rng.uniform(-0.1, 1.1, 2) * s
        ang = rng.uniform(0, 2 * np.pi)
        p2 = p0 + rng.uniform(0.3, 1.2) * s * np.array([np.cos(ang), np.sin(ang)])
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.15 * s, 2)
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
        cv2.polylines(layer, [np.round(pts).astype(np.int32)], False, rng.uniform(0.6, 1.0),
                      max(1, int(round(rng.uniform(0.8, 2.2) * sc))), cv2.LINE_AA)
    colour = np.array([0.22, 0.15, 0.1], np.float32) * rng.uniform(0.2, 1.0)
    return _mix(img, colour, layer)


def draw_lesion_image(cls: str, rng: np.random.Generator, size: int = 256, blend_range=None,
                      artefact=None) -> tuple[np.ndarray, np.ndarray]:
    """One dermoscopy-like image of class `cls`: (uint8 RGB (size, size, 3), uint8 {0,255} mask (size, size)).

    blend_range (lo, hi): weak lesion cues — every lesion blends its own class's look (weight ~ U(lo, hi)) with
    another class's, and takes that class's shape half of the time. artefact: called as
    artefact(scene, mask, fov) after the hairs, to draw into the float32 RGB scene in place (dermo.data.artefacts).
    With neither, the bytes are those of the demo generator."""
    task = next((t for t, names in CLASSES.items() if cls in names), None)
    if task is None:
        raise ValueError(f"unknown class {cls!r}; expected one of {sum(CLASSES.values(), [])}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    s, sc = size, size / 256.0
    img = _skin(rng, s, sc)
    shape_look = colour_look = _look(cls)
    blend, colour_look2 = 1.0, colour_look
    if blend_range is not None:  # weak cues: always part another class's look, half the time its shape
        other = _look(str(rng.choice([c for c in CLASSES[task] if c != cls])))
        shape_look = other if rng.random() < 0.5 else shape_look
        blend, colour_look2 = rng.uniform(*blend_range), other
    elif rng.random() < ATYPICAL_FRACTION:  # borrow the shape and/or the look of another class
        other = _look(str(rng.choice([c for c in CLASSES[task] if c != cls])))
        mode = int(rng.integers(0, 3))
        shape_look = other if mode != 1 else shape_look
        blend = rng.uniform(0.25, 0.65) if mode != 0 else 1.0
        colour_look2 = other
    fov_r = rng.uniform(0.48, 0.75) * s if rng.random() < 0.65 else 2.0 * s
    fov = np.zeros((s, s), np.uint8)
    cv2.circle(fov, tuple(np.round(s / 2 + rng.normal(0, 0.03 * s, 2)).astype(int)), int(fov_r), 255, -1)
    for _ in range(50):  # redraw outlines whose visible area is implausible (rare)
        pts, soft = _polygon(rng, s, sc, shape_look)
        mask = cv2.fillPoly(np.zeros((s, s), np.uint8), [pts], 255) & fov
        if 0.05 <= np.count_nonzero(mask) / mask.size <= 0.6:
            break
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    radius = float(np.sqrt(np.count_nonzero(mask) / np.pi))
    dist /= max(float(dist.max()), 1e-6)  # 0 at the border .. 1 at the deepest point
    col, opacity = _RENDER[colour_look](rng, s, sc, dist, radius)
    if blend < 1.0:
        col2, op2 = _RENDER[colour_look2](rng, s, sc, dist, radius)
        col, opacity = blend * col + (1 - blend) * col2, blend * opacity + (1 - blend) * op2
    col *= rng.uniform(0.8, 1.15)  # lesion tone varies independently of class
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), soft) * opacity
    img = _mix(img, col, alpha)
    img = _hairs(rng, img, sc)
    if artefact is not None:
        artefact(img, mask, fov)
    if rng.random() < 0.4:  # focus
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.2) * sc)
    img *= np.exp(rng.normal(0, 0.04, 3)).astype(np.float32) * rng.uniform(0.8, 1.12) * 255  # light, cast
    vig = cv2.GaussianBlur(fov.astype(np.float32), (0, 0), 2.5 * sc) / 255  # (s, s) in [0, 1]
    offset = (1 - vig) * (rng.uniform(0.0, 0.06) * 255) + 0.5
    offset += rng.uniform(0.8, 4.0) * rng.standard_normal((s, s), dtype=np.float32)  # sensor noise
    img *= vig[..., None]
    img += offset[..., None]
    gamma_lut = np.round(255 * (np.arange(256) / 255) ** rng.uniform(0.85, 1.2)).astype(np.uint8)
    return cv2.LUT(np.clip(img, 0, 255, out=img).astype(np.uint8), gamma_lut), mask
