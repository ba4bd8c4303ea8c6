"""Artefacts of dermoscopy images that say nothing about the lesion — a sticker, a ruler mark, ink dots — drawn
into a synthetic scene inside the field of view and outside the lesion (the shortcut check, dermo.data.shortcut).

    draw_artefact(scene, lesion, fov, kind, rng[, style]) -> the artefact's footprint, uint8 {0,255} (s, s)

`scene` is the float32 RGB scene in [0, 1] of dermo.data.synthetic_draw (changed in place); `lesion` and `fov`
are its uint8 {0,255} lesion mask and field of view. The artefact's centre is drawn among the positions where
its whole footprint (plus a margin) clears the lesion and stays inside the field of view; where no such
position exists it shrinks, and in the last resort sits where the free room is largest.

`Style` varies the artefact so that no remedy is tuned to one generator (issue 22): which kinds, where
(`free`: any such position; `beside`: the fifth of them nearest the lesion; `rim`: the fifth farthest from it,
towards the field of view's edge), how large (a factor on the footprint) and what colour (`natural`: the
kind's own; `brown`: lesion-like pigment; `grey`: no chroma, so the colour-constancy estimate barely moves).
The default style draws exactly what the generator drew before styles existed.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

KINDS = ("sticker", "ruler", "ink")
PLACES = ("free", "beside", "rim")
COLOURS = {"natural": None, "brown": (0.45, 0.29, 0.19), "grey": (0.50, 0.50, 0.50)}


@dataclass(frozen=True)
class Style:
    kinds: tuple[str, ...] = KINDS
    place: str = "free"
    scale: float = 1.0
    colour: str = "natural"

    def check(self) -> "Style":
        """Refuse values that cannot be drawn (one line naming the option); returns self."""
        bad = [k for k in self.kinds if k not in KINDS]
        rules = [(self.kinds and not bad, f"--artefact {','.join(self.kinds)}: use kinds from {', '.join(KINDS)}"),
                 (self.place in PLACES, f"--artefact-place {self.place}: use one of {', '.join(PLACES)}"),
                 (0.25 <= self.scale <= 3, f"--artefact-scale {self.scale}: use a factor in [0.25, 3]"),
                 (self.colour in COLOURS, f"--artefact-colour {self.colour}: use one of {', '.join(COLOURS)}")]
        for ok, message in rules:
            if not ok:
                raise ValueError(message)
        return self

    def to_dict(self) -> dict:
        return {"kinds": list(self.kinds), "place": self.place, "scale": float(self.scale), "colour": self.colour}


DEFAULT_STYLE = Style()
_STICKER_COLOURS = np.array([[0.15, 0.65, 0.30], [0.20, 0.40, 0.85], [0.95, 0.80, 0.15], [0.95, 0.45, 0.10]],
                            np.float32)
_INK = (0.32, 0.12, 0.52)                 # surgical marker violet
_RULER = (0.96, 0.94, 0.82)               # cream plastic
_TICKS = (0.08, 0.08, 0.10)
_SIZE = {"sticker": (0.07, 0.10), "ruler": (0.16, 0.22), "ink": (0.07, 0.10)}   # footprint radius / side


def _free_room(lesion: np.ndarray, fov: np.ndarray, margin: int) -> np.ndarray:
    """(s, s) float32: distance of each pixel to the lesion (grown by `margin`) or the field of view's edge."""
    k = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    free = ((cv2.dilate(lesion, k) == 0) & (cv2.erode(fov, k) > 0)).astype(np.uint8)
    free = np.pad(free[margin:-margin, margin:-margin], margin)          # the image's edge is an edge too
    return cv2.distanceTransform(free, cv2.DIST_L2, 5)


def _place(room: np.ndarray, radius: float, rng, near=None, place: str = "free") -> tuple[np.ndarray, float]:
    """A centre (x, y) whose disc of `radius` fits the free room (shrinking it up to 3 times), and that radius;
    `near` (s, s): each pixel's distance to the lesion, for the places "beside" (the nearest fifth of the fitting
    centres) and "rim" (the farthest fifth)."""
    for _ in range(4):
        ys, xs = np.nonzero(room >= radius)
        if len(ys) and place != "free":
            d = near[ys, xs]
            keep = d <= np.quantile(d, 0.2) if place == "beside" else d >= np.quantile(d, 0.8)
            ys, xs = ys[keep], xs[keep]
        if len(ys):
            i = int(rng.integers(len(ys)))
            return np.array([xs[i], ys[i]], float), radius
        radius *= 0.8
    y, x = np.unravel_index(int(room.argmax()), room.shape)
    return np.array([x, y], float), max(float(room.max()), 2.0)


def _sticker(layer, colour, c, r, rng, paint=None):
    """A round label: white rim, coloured face (`paint`, else one of the label colours), a darker printed mark."""
    face = tuple(float(v) for v in _STICKER_COLOURS[rng.integers(len(_STICKER_COLOURS))])
    face = paint or face
    centre = tuple(int(v) for v in np.round(c))
    cv2.circle(layer, centre, int(round(r)), 1.0, -1, cv2.LINE_AA)
    cv2.circle(colour, centre, int(round(r)), (0.97, 0.97, 0.97), -1, cv2.LINE_AA)
    cv2.circle(colour, centre, max(1, int(round(0.8 * r))), face, -1, cv2.LINE_AA)
    cv2.circle(colour, centre, max(1, int(round(0.3 * r))), tuple(0.5 * v for v in face), -1, cv2.LINE_AA)


def _ruler(layer, colour, c, r, rng, paint=None):
    """A strip of plastic (length 2r; cream, else `paint`) with dark ticks, long every fifth."""
    angle = rng.uniform(0, np.pi)
    u, v = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
    half_w = max(2.0, 0.28 * r)
    corners = np.stack([c + su * r * u + sv * half_w * v for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    poly = [np.round(corners).astype(np.int32)]
    cv2.fillPoly(layer, poly, 1.0, cv2.LINE_AA)
    cv2.fillPoly(colour, poly, paint or _RULER, cv2.LINE_AA)
    for i, t in enumerate(np.linspace(-0.9, 0.9, 11)):
        tick = (1.6 if i % 5 == 0 else 0.9) * half_w
        a, b = c + t * r * u - half_w * v, c + t * r * u + (tick - half_w) * v
        cv2.line(colour, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), _TICKS,
                 max(1, int(round(0.05 * r))), cv2.LINE_AA)


def _ink(layer, colour, c, r, rng, paint=None):
    """One to three marker dots (violet, else `paint`) within the footprint."""
    for _ in range(int(rng.integers(1, 4))):
        dot = c + rng.uniform(-0.4, 0.4, 2) * r
        centre, rad = tuple(int(v) for v in np.round(dot)), max(1, int(round(rng.uniform(0.35, 0.55) * r)))
        cv2.circle(layer, centre, rad, 0.9, -1, cv2.LINE_AA)
        cv2.circle(colour, centre, rad, paint or _INK, -1, cv2.LINE_AA)


_DRAW = {"sticker": _sticker, "ruler": _ruler, "ink": _ink}


def draw_artefact(scene: np.ndarray, lesion: np.ndarray, fov: np.ndarray, kind: str, rng,
                  style: Style = DEFAULT_STYLE) -> np.ndarray:
    """Draw one artefact of `kind` into `scene` (float32 RGB (s, s, 3), in place) outside `lesion`, inside `fov`,
    placed, sized and coloured by `style`; returns its footprint (uint8 {0,255} (s, s))."""
    if kind not in _DRAW:
        raise ValueError(f"unknown artefact kind {kind!r}; choose one of {', '.join(KINDS)}")
    s = scene.shape[0]
    room = _free_room(lesion, fov, max(1, round(0.02 * s)))
    near = None if style.place == "free" else cv2.distanceTransform((lesion == 0).astype(np.uint8), cv2.DIST_L2, 5)
    centre, radius = _place(room, rng.uniform(*_SIZE[kind]) * s * style.scale, rng, near, style.place)
    layer = np.zeros((s, s), np.float32)                  # opacity
    colour = np.zeros((s, s, 3), np.float32)
    _DRAW[kind](layer, colour, centre, radius, rng, COLOURS[style.colour])
    scene += (colour - scene) * layer[..., None]
    return (layer > 0.5).astype(np.uint8) * 255
