"""Preprocessing with an on-disk cache, for many images in parallel.

The cache (`$DERMO_CACHE`, else ~/.cache/dermo) holds one (image, mask) PNG pair per source file,
keyed by its absolute path, mtime and size, the settings and the given mask's file, so training
epochs and repeated runs never redo the work.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from dermo.data import imageio
from dermo.data.imageio import BadInputError
from dermo.preprocessing.image import preprocess_image
from dermo.preprocessing.segment import GROW

VERSION = "2"        # bump whenever preprocess_image's output changes: old cache entries are then ignored
LEGACY_GROW = 0.03   # the mask margin of every cache entry written before --mask-grow


@dataclass(frozen=True)
class PreprocessSettings:
    size: int = 320       # shorter side of the output, px
    hair: bool = True     # hair removal
    color: bool = True    # Shades-of-Gray colour constancy
    p: int = 6            # Minkowski norm of Shades of Gray
    color_region: str = "fov"   # where the illuminant is estimated: "fov" or "skin" (preprocessing.color)
    mask_grow: float = GROW     # the generated lesion mask's margin (preprocessing.segment)

    def key(self) -> str:
        """Short hash of the settings and the algorithm VERSION."""
        fields = asdict(self)
        if fields["color_region"] == "fov":       # the key of every cache entry written before the option existed
            del fields["color_region"]
        if fields["mask_grow"] == LEGACY_GROW:    # entries from before --mask-grow were made with 0.03
            del fields["mask_grow"]
        text = json.dumps({"version": VERSION, **fields}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    env = os.environ.get("DERMO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dermo"


def _file_id(path) -> str:
    """'<absolute path>|<mtime_ns>|<size>', or BadInputError if the file is missing."""
    p = Path(path).absolute()
    try:
        st = p.stat()
    except OSError:
        raise BadInputError(path, "file not found") from None
    return f"{p}|{st.st_mtime_ns}|{st.st_size}"


def cache_paths(src, settings: PreprocessSettings, cache_dir=None, mask_src=None) -> tuple[Path, Path]:
    """Where (image png, mask png) of this source + settings + given mask live in the cache."""
    parts = [_file_id(src), settings.key(), _file_id(mask_src) if mask_src is not None else "-"]
    key = hashlib.sha1("\n".join(parts).encode()).hexdigest()[:24]
    folder = Path(cache_dir or default_cache_dir()) / "preprocess" / key[:2]
    return folder / f"{key}.png", folder / f"{key}_mask.png"


def is_cached(src, settings: PreprocessSettings, cache_dir=None, mask_src=None) -> bool:
    img_png, mask_png = cache_paths(src, settings, cache_dir, mask_src)
    return img_png.is_file() and mask_png.is_file()


def _cached_preprocess(src, settings, cache_dir, mask_src) -> tuple[Path, Path, bool]:
    """Like cached_preprocess, plus whether the pair had to be computed."""
    img_png, mask_png = cache_paths(src, settings, cache_dir, mask_src)
    if img_png.is_file() and mask_png.is_file():
        return img_png, mask_png, False
    img = imageio.read_image(src)
    given = None if mask_src is None else imageio.read_mask(mask_src, shape=img.shape[:2])
    out, mask = preprocess_image(img, settings.size, settings.hair, settings.color, given, settings.p,
                                 settings.color_region, settings.mask_grow)
    imageio.write_png(mask_png, mask)
    imageio.write_png(img_png, out)
    return img_png, mask_png, True


def cached_preprocess(src, settings: PreprocessSettings = PreprocessSettings(), cache_dir=None,
                      mask_src=None) -> tuple[Path, Path]:
    """(image png, mask png) in the cache for `src`, computed only if absent.

    Raises BadInputError (one line: file and problem) for an unreadable image or mask.
    """
    img_png, mask_png, _ = _cached_preprocess(src, settings, cache_dir, mask_src)
    return img_png, mask_png


def _init_worker() -> None:
    cv2.setNumThreads(1)          # one process per core already


def _work(job):
    """Pool task: (src, mask_src, settings, cache_dir) -> ('ok', img, mask, computed) | ('bad', path, problem).

    (BadInputError itself does not survive pickling back from a worker, so its parts travel.)
    """
    src, mask_src, settings, cache_dir = job
    try:
        return ("ok", *_cached_preprocess(src, settings, cache_dir, mask_src))
    except BadInputError as e:
        return ("bad", e.path, e.problem)


def preprocess_many(items, settings: PreprocessSettings = PreprocessSettings(), cache_dir=None,
                    workers: int | None = None, on_bad: str = "error", stats: dict | None = None):
    """Preprocess [(src, mask_src or None), ...] into the cache, in parallel.

    Returns (results, skipped): results[i] is (image png, mask png) or None for a skipped item;
    skipped lists the one-line BadInputError messages. on_bad="error" raises the first bad item's
    BadInputError instead. Items already in the cache are not recomputed (and start no process).
    If `stats` is a dict it receives counts: computed, cached, skipped.
    """
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad must be 'error' or 'skip', not {on_bad!r}")
    cache_dir = Path(cache_dir or default_cache_dir())
    items = [(Path(s), None if m is None else Path(m)) for s, m in items]
    results: list = [None] * len(items)
    skipped: list[str] = []
    todo = []
    for i, (src, mask_src) in enumerate(items):
        try:
            if is_cached(src, settings, cache_dir, mask_src):
                results[i] = cache_paths(src, settings, cache_dir, mask_src)
                continue
        except BadInputError:
            pass                                   # missing file: _work reports it in order
        todo.append(i)
    counts = {"computed": 0, "cached": len(items) - len(todo), "skipped": 0}
    jobs = [(items[i][0], items[i][1], settings, cache_dir) for i in todo]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = tqdm(total=len(items), initial=counts["cached"], desc="preprocess", unit="img", disable=None)
    pool = None
    try:
        if workers > 1:
            pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)
            outcomes = pool.imap(_work, jobs, chunksize=max(1, min(16, len(jobs) // (8 * workers))))
        else:
            outcomes = map(_work, jobs)
        for i, outcome in zip(todo, outcomes):
            bar.update(1)
            if outcome[0] == "bad":
                err = BadInputError(outcome[1], outcome[2])
                if on_bad == "error":
                    raise err
                skipped.append(str(err))
                counts["skipped"] += 1
                continue
            results[i] = (outcome[1], outcome[2])
            counts["computed"] += int(outcome[3])
            counts["cached"] += int(not outcome[3])
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    if stats is not None:
        stats.update(counts)
    return results, skipped
