"""Writing a generated dataset folder (dermo.data.synthetic, dermo.data.shortcut): claiming the folder safely,
running the per-image jobs in worker processes, and the `.complete` marker of a finished set.

    claim_folder(out, header, subfolders)  refuse a non-empty folder that is not ours; clear our old set
    run_jobs(fn, jobs, workers)            fn(job) for each job, in spawned processes when workers > 1
    MARKER                                 written last: the parameters of a complete set (JSON)
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

MARKER = ".complete"
README = "README.txt"


def is_generated(out: Path, header: str) -> bool:
    """A folder written by a generator whose README starts with `header` (or one holding a marker)."""
    readme = out / README
    return (out / MARKER).exists() or (readme.exists() and readme.read_text().startswith(header))


def claim_folder(out, header: str, subfolders, what: str = "dermo demo dataset") -> Path:
    """Make `out` ready for a new set: refuse a file, or a non-empty folder that is not a set of ours; drop
    an earlier set's marker and `subfolders`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not is_generated(out, header):
        raise ValueError(f"{out}: folder is not empty and is not a {what}; refusing to overwrite")
    (out / MARKER).unlink(missing_ok=True)
    for name in subfolders:
        shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def default_workers(n: int) -> int:
    return 1 if n < 100 else min(2, os.cpu_count() or 1)


def run_jobs(fn, jobs: list, workers: int | None = None) -> None:
    """fn(job) for every job; in `workers` spawned processes (safe beside TensorFlow's threads, but a calling
    script then needs an `if __name__ == "__main__"` guard). Results do not depend on the worker count."""
    workers = default_workers(len(jobs)) if workers is None else workers
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(fn, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                pass
    else:
        for job in jobs:
            fn(job)
