"""Decoding and augmenting the images of one batch, in this process or in a pool of worker processes.

    load_rows(rows, size)            -> uint8 images (b,S,S,3), uint8 masks (b,S,S)
    rows: [(image path, mask path, augmentation seed or None for the plain eval resize), ...]

Every row is augmented from its own seed, so a batch is the same whether it is made in one piece or split
across processes, and whatever the number of processes or their timing. Python threads share one
interpreter lock, and albumentations' Python glue holds it for a good part of each image (measured in
benchmarks/README.md), so `RowPool(n)` spreads the rows of each batch over n worker processes instead. The
workers are started with "spawn" (a forked copy of a process running TensorFlow or JAX threads can
deadlock) and import only this module, OpenCV and albumentations: no Keras, no TensorFlow, no JAX. A worker
that dies (killed, or by the out-of-memory killer) breaks the whole executor: the pool then starts a fresh one
and makes the batch again, once (the same rows and seeds, so the same batch), instead of ending the training
mid-epoch.
"""
from __future__ import annotations

import atexit
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from dermo.data.augment import apply, eval_transform, train_transform
from dermo.data.imageio import read_image, read_mask

_local = threading.local()      # one Compose per (kind, size) and thread: set_random_seed mutates it


def _transform(size: int, seed: int | None):
    cache = getattr(_local, "transforms", None)
    if cache is None:
        cache = _local.transforms = {}
    key = ("eval" if seed is None else "train", size)
    if key not in cache:
        cache[key] = eval_transform(size) if seed is None else train_transform(size, seed=0)
    t = cache[key]
    if seed is not None:
        t.set_random_seed(seed)
    return t


def load_row(image_path: str, mask_path: str, size: int, seed: int | None):
    """One cached image and its mask, augmented from `seed` (None: the eval resize) -> (S,S,3), (S,S) uint8."""
    image = read_image(image_path)
    mask = read_mask(mask_path, shape=image.shape[:2])
    return apply(_transform(size, seed), image, mask)


def load_rows(rows, size: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [load_row(image, mask, size, seed) for image, mask, seed in rows]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)        # one core per process: the pool is the parallelism


class RowPool:
    """`processes` worker processes sharing out the rows of each batch (contiguous chunks, reassembled in
    order). Started on first use, shut down at exit; shared by every LesionBatches with the same count."""

    _pools: dict[int, "RowPool"] = {}
    _lock = threading.Lock()

    def __init__(self, processes: int):
        self.processes = processes
        self._executor = self._start()
        self._count_lock = threading.Lock()
        self._busy = 0                      # processes already given a piece of some batch
        self.restarts = 0                   # executors replaced after a worker died

    def _start(self) -> ProcessPoolExecutor:
        import multiprocessing

        return ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker)

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        with self._count_lock:
            if self._executor is broken:    # the first of the threads that saw it break replaces it
                broken.shutdown(wait=False, cancel_futures=True)
                self._executor = self._start()
                self.restarts += 1

    def _pieces(self, executor: ProcessPoolExecutor, rows, bounds, size: int) -> list:
        futures = [executor.submit(load_rows, rows[a:b], size) for a, b in zip(bounds[:-1], bounds[1:])]
        return [f.result() for f in futures]

    @classmethod
    def get(cls, processes: int) -> "RowPool":
        with cls._lock:
            if processes not in cls._pools:
                cls._pools[processes] = cls(processes)
            return cls._pools[processes]

    def load_rows(self, rows, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows of one batch, in as many pieces as there are idle processes: split over all of them when this is
        the only batch asked for (a validation loop), whole to one process when other batches are already being
        made (the batches in flight that model.fit's threads ask for): one round trip per batch then."""
        rows = list(rows)
        with self._count_lock:
            pieces = max(1, self.processes - self._busy)
            self._busy += pieces
        try:
            n = min(pieces, len(rows))
            bounds = np.linspace(0, len(rows), n + 1).round().astype(int)
            executor = self._executor
            try:
                parts = self._pieces(executor, rows, bounds, size)
            except BrokenProcessPool:       # a worker died: a fresh pool, the same batch once more
                self._restart(executor)
                parts = self._pieces(self._executor, rows, bounds, size)
        finally:
            with self._count_lock:
                self._busy -= pieces
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    @classmethod
    def shutdown_all(cls) -> None:
        with cls._lock:
            for pool in cls._pools.values():
                pool._executor.shutdown(wait=True, cancel_futures=True)
            cls._pools.clear()


atexit.register(RowPool.shutdown_all)
