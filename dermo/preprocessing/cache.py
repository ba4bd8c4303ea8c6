"""Preprocessing with an on-disk cache, for many images in parallel, and its command line.

    python -m dermo.preprocess INPUT OUTPUT [--size N] [--no-hair] [--no-color] [--workers N]
                               [--on-bad-image error|skip] [--cache-dir DIR]

INPUT is an image folder (searched recursively; `<stem>_mask.png` beside an image is its given
lesion mask) or a CSV manifest with an `image` column (paths relative to the CSV's folder or to an
`images/` folder beside it) and an optional `mask` column. For every image it writes
`OUTPUT/<relative path>/<stem>.png` (preprocessed, see dermo.lesion.preprocess_image) and
`<stem>_mask.png` (uint8 0/255).

The cache (`$DERMO_CACHE`, else ~/.cache/dermo) holds one (image, mask) PNG pair per source file,
keyed by its absolute path, mtime and size, the settings and the given mask's file, so training
epochs and repeated runs never redo the work.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from dermo import imageio
from dermo.imageio import BadInputError
from dermo.lesion import preprocess_image

VERSION = "1"        # bump whenever dermo.lesion's output changes: old cache entries are then ignored


@dataclass(frozen=True)
class PreprocessSettings:
    size: int = 320       # shorter side of the output, px
    hair: bool = True     # hair removal
    color: bool = True    # Shades-of-Gray colour constancy
    p: int = 6            # Minkowski norm of Shades of Gray

    def key(self) -> str:
        """Short hash of the settings and the algorithm VERSION."""
        text = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True)
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
    out, mask = preprocess_image(img, settings.size, settings.hair, settings.color, given, settings.p)
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


# ----------------------------------------------------------------------------- command line

def _resolve(base: Path, name: str) -> Path:
    """A manifest path: as given (absolute), beside the CSV, or in images/ beside it; extension optional."""
    p = Path(name)
    candidates = [p] if p.is_absolute() else [base / p, base / "images" / p]
    for c in candidates:
        if c.is_file():
            return c
        if not c.suffix:
            for ext in imageio.IMAGE_EXTENSIONS:
                if c.with_suffix(ext).is_file():
                    return c.with_suffix(ext)
    return candidates[0]


def output_rel(name: str) -> Path:
    """Where a manifest entry's outputs go, relative to OUTPUT, without suffix: its path as written, or
    only its file name when that path is absolute or climbs with '..' (outputs never leave OUTPUT)."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        rel = Path(rel.name)
    return rel.with_suffix("") if rel.suffix else rel


def list_inputs(inp: Path, exclude: Path | None = None) -> list[tuple[Path, Path | None, Path]]:
    """INPUT folder or CSV -> [(image, given mask or None, output path without suffix), ...].

    Raises BadInputError for a CSV without an `image` column or a folder without images.
    """
    if inp.is_dir():
        ex = exclude.resolve() if exclude is not None else None
        out = []
        for f in sorted(inp.rglob("*")):
            if not f.is_file() or not imageio.is_image_file(f):
                continue
            if ex is not None and (ex == f.resolve().parent or ex in f.resolve().parents):
                continue                           # a previous run's outputs inside INPUT
            m = imageio.mask_path_for(f)
            out.append((f, m if m.is_file() else None, f.relative_to(inp).with_suffix("")))
        if not out:
            raise BadInputError(inp, "no images found in this folder")
        return out
    if inp.suffix.lower() != ".csv":
        raise BadInputError(inp, "INPUT must be an image folder or a .csv manifest")
    import pandas as pd

    try:
        df = pd.read_csv(inp, dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001 - any parse problem is one line
        raise BadInputError(inp, f"not a readable CSV ({type(e).__name__}: {e})") from None
    if "image" not in df.columns:
        raise BadInputError(inp, f"CSV has no 'image' column (columns: {', '.join(df.columns)})")
    base = inp.parent
    out = []
    for row in df.itertuples(index=False):
        name = str(getattr(row, "image")).strip()
        if not name:
            continue
        img = _resolve(base, name)
        mask_name = str(getattr(row, "mask", "") or "").strip()
        mask = _resolve(base, mask_name) if mask_name else None
        out.append((img, mask, output_rel(name)))
    if not out:
        raise BadInputError(inp, "CSV lists no images")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dermo.preprocess", description=__doc__.split("\n")[0])
    ap.add_argument("input", type=Path, help="image folder (recursive) or CSV manifest")
    ap.add_argument("output", type=Path, help="folder for <stem>.png and <stem>_mask.png")
    ap.add_argument("--size", type=int, default=PreprocessSettings.size, help="shorter side in px")
    ap.add_argument("--no-hair", action="store_true", help="skip hair removal")
    ap.add_argument("--no-color", action="store_true", help="skip Shades-of-Gray colour constancy")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--on-bad-image", choices=("error", "skip"), default="error")
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: $DERMO_CACHE or ~/.cache/dermo")
    args = ap.parse_args(argv)
    if args.size < 8:
        ap.error("--size must be at least 8")
    t0 = time.perf_counter()
    settings = PreprocessSettings(size=args.size, hair=not args.no_hair, color=not args.no_color)
    try:
        if not args.input.exists():
            raise BadInputError(args.input, "INPUT not found")
        entries = list_inputs(args.input, exclude=args.output)
        seen: dict[Path, Path] = {}
        root = args.output.resolve()
        for src, _, rel in entries:
            if root not in (root / rel).resolve().parents:
                raise BadInputError(src, f"output name {rel} would lie outside {args.output}")
            if rel in seen:
                raise BadInputError(src, f"same output name as {seen[rel]} ({rel}.png)")
            seen[rel] = src
        results, skipped = preprocess_many([(s, m) for s, m, _ in entries], settings, args.cache_dir,
                                           args.workers, args.on_bad_image)
        written = 0
        for (_, _, rel), res in zip(entries, results):
            if res is None:
                continue
            dst = args.output / rel
            imageio.atomic_write_bytes(dst.with_name(dst.name + ".png"), res[0].read_bytes())
            imageio.atomic_write_bytes(dst.with_name(dst.name + "_mask.png"), res[1].read_bytes())
            written += 1
    except BadInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {written} images + masks to {args.output}, skipped {len(skipped)}, "
          f"in {time.perf_counter() - t0:.1f} s")
    for msg in skipped:
        print(f"  skipped {msg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
