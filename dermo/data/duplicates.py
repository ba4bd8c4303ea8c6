"""Exact duplicate images across train and val (same bytes): a validation image that is a copy of a training
image makes the validation numbers optimistic, so training refuses it unless `--allow-duplicates`.

    file_digest(path)                    the content hash used everywhere (split.csv's digest column too)
    cross_duplicates(a_paths, b_paths)   (a, b) pairs with identical content, one path from each list
    check_duplicates(dataset, allow)     refuse (one line: the count and a few pairs) or return the pairs

Cheap on real data: files are grouped by byte size first and only sizes found on both sides are hashed.
Files that cannot be read are left to the preprocessing step, which reports them.
"""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path

from dermo.data.datasets import Dataset
from dermo.data.manifest import DataError

SHOWN = 3     # pairs named in the error line


def _by_size(paths) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for p in dict.fromkeys(paths):
        try:
            size = os.stat(p).st_size
        except OSError:
            continue
        if size > 0:
            out[size].append(p)
    return out


def file_digest(path) -> str | None:
    """BLAKE2b (20 bytes, hex) of the file's bytes; None when it cannot be read."""
    h = hashlib.blake2b(digest_size=20)
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def cross_duplicates(a_paths, b_paths) -> list[tuple[str, str]]:
    """Sorted (a, b) pairs, a from `a_paths` and b from `b_paths`, whose files have the same bytes (a path
    on both lists pairs with itself)."""
    a_sizes, b_sizes = _by_size(a_paths), _by_size(b_paths)
    pairs = []
    for size in sorted(set(a_sizes) & set(b_sizes)):
        digest = {p: file_digest(p) for p in dict.fromkeys(a_sizes[size] + b_sizes[size])}
        by_digest = defaultdict(list)
        for p in a_sizes[size]:
            if digest[p] is not None:
                by_digest[digest[p]].append(p)
        pairs += [(p, q) for q in b_sizes[size] if digest[q] is not None for p in by_digest.get(digest[q], [])]
    return sorted(pairs)


def _short(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def check_duplicates(ds: Dataset, allow: bool = False) -> list[tuple[str, str]]:
    """The (train, val) exact-duplicate pairs of `ds`; a DataError naming them unless `allow`."""
    pairs = cross_duplicates([s.path for s in ds.train], [s.path for s in ds.val])
    if pairs and not allow:
        source = Path(ds.source)
        root = (source if source.is_dir() else source.parent).resolve()
        shown = "; ".join(f"{_short(a, root)} = {_short(b, root)}" for a, b in pairs[:SHOWN])
        more = f"; … {len(pairs) - SHOWN} more" if len(pairs) > SHOWN else ""
        raise DataError(f"{ds.source}: {len(pairs)} exact duplicate image pair(s) across train and val (same "
                        f"bytes; train = val: {shown}{more}); remove the copies or keep each on one side "
                        "(--group-column), or pass --allow-duplicates")
    return pairs
