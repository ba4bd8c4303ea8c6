"""Samples -> cached preprocessing: every pixel is checked (and preprocessed once) before epoch 1.

    prepare(samples, settings) -> (list[Prepared], skipped lines)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from dermo.data.datasets import Sample
from dermo.preprocessing.cache import PreprocessSettings, preprocess_many


@dataclass(frozen=True)
class Prepared:
    image: str          # preprocessed PNG (cache)
    mask: str           # lesion mask PNG (cache): given or generated
    label: int | None
    source: str         # the original image path
    meta: tuple | None = None   # the Sample's raw metadata ((column, text or None), ...); None: none read


def settings_for(image_size: int, **kwargs) -> PreprocessSettings:
    """Cached images keep their shorter side a little above the training size (crops stay sharp)."""
    return PreprocessSettings(size=int(math.ceil(image_size * 1.15)), **kwargs)


def prepare(samples: list[Sample], settings: PreprocessSettings, cache_dir=None, on_bad="error",
            workers=None) -> tuple[list[Prepared], list[str]]:
    """Preprocess (or find in the cache) every sample; bad files raise or are skipped and reported."""
    results, skipped = preprocess_many([(s.path, s.mask) for s in samples], settings,
                                       cache_dir=cache_dir, workers=workers, on_bad=on_bad)
    prepared = [Prepared(str(r[0]), str(r[1]), s.label, s.path, s.meta)
                for s, r in zip(samples, results) if r is not None]
    return prepared, list(skipped)
