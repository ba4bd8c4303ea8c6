"""Augmented batches for Keras from prepared (cached) images.

    LesionBatches(prepared, ...) -> keras PyDataset yielding
        x (B,S,S,3) float32 0..255,  (y (B,K) float32 one-hot, masks (B,S,S,1) float32 0/1)

With a metadata encoding (`meta=MetaEncoding`, dermo.data.metadata) x is the dict {"image": (B,S,S,3),
"meta": (B,width) float32}: the items' raw metadata encoded (missing values -> their indicators); the meta
vector is not augmented. Without it x is the image array alone, exactly as before metadata existed.

With workers > 1 the images of each batch are decoded and augmented by that many worker processes
(dermo.pipeline.rows.RowPool; threads would share one interpreter lock), and as many batches are requested
at once. The epoch order depends only on (seed, epoch) and every image's augmentation draw only on
(seed, epoch, batch index, row), so results do not depend on the number of workers or their scheduling,
and `batch(index, epoch, shard=(k, n))` — the k-th of n equal slices of a batch, one per replica of a
multi-worker run — holds exactly those rows of the whole batch. The epoch of a request is counted per batch
index (the e-th request of index i belongs to epoch e): Keras' tf.data adapter prefetches the next
epoch's first batches before it calls on_epoch_end, so a shared "current epoch" would make those batches
depend on timing.
"""
from __future__ import annotations

import math
import threading

import keras
import numpy as np

from dermo.data.augment import apply
from dermo.data.imageio import read_image, read_mask
from dermo.data.metadata import MetaEncoding
from dermo.pipeline.paste import paste_onto_hosts
from dermo.pipeline.prepare import Prepared
from dermo.pipeline.rows import RowPool, load_rows


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class LesionBatches(keras.utils.PyDataset):
    """Batches of (image, (one-hot, mask)); `training` shuffles per epoch and augments; `paste_share` > 0 (training
    only) puts that share of each batch's lesions on another row's surroundings (dermo.pipeline.paste)."""

    def __init__(self, items: list[Prepared], num_classes: int, image_size: int, batch_size: int = 16,
                 training: bool = False, seed: int = 0, workers: int = 1, max_queue_size: int = 8,
                 meta: MetaEncoding | None = None, paste_share: float = 0.0):
        # Keras' enqueuer threads = batches in flight: two per process keep every process busy
        super().__init__(workers=2 * workers if workers > 1 else 1, use_multiprocessing=False,
                         max_queue_size=max(max_queue_size, 4 * workers))
        if not items:
            raise ValueError("no images to feed")
        self.items = list(items)
        self.num_classes = num_classes
        self.image_size = image_size
        self.batch_size = batch_size
        self.training = training
        self.seed = seed
        self.meta = meta
        self.paste_share = float(paste_share) if training else 0.0
        self._pool = RowPool.get(workers) if workers > 1 else None
        self._lock = threading.Lock()
        self._passes = np.zeros(len(self), dtype=np.int64)   # epoch of the next request, per index
        self._complete = 0                                    # epoch the counters last ended complete at

    def __len__(self) -> int:
        n = len(self.items)
        if self.training and n > self.batch_size:
            return n // self.batch_size          # drop the last partial batch (BatchNorm on 1 image)
        return math.ceil(n / self.batch_size)

    @property
    def epoch(self) -> int:
        """The epoch in progress (the lowest pass any batch index is at)."""
        return int(self._passes.min())

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.training:
            return np.arange(len(self.items))
        return np.random.default_rng(_seed(self.seed, epoch)).permutation(len(self.items))

    def set_epoch(self, epoch: int) -> None:
        """Make the next request of every batch index belong to `epoch` (a resumed run)."""
        with self._lock:
            self._passes[:] = epoch
            self._complete = epoch

    def on_epoch_end(self) -> None:
        """Forget an incomplete pass, keep a complete one (with any next-epoch batches already prefetched).

        model.fit (TF backend) requests the first 2 batches to probe their shapes, then calls this once
        before epoch 0: without the roll-back those 2 indices would stay one epoch ahead for the whole run,
        and every epoch would repeat some images and skip others.
        """
        with self._lock:
            if self._passes.min() == self._complete:
                self._passes[:] = self._complete
            else:
                self._complete = int(self._passes.min())

    def batch_items(self, index: int, epoch: int | None = None) -> list[Prepared]:
        order = self.epoch_order(self.epoch if epoch is None else epoch)
        return [self.items[i] for i in order[index * self.batch_size:(index + 1) * self.batch_size]]

    def load(self, item: Prepared, transform) -> tuple[np.ndarray, np.ndarray]:
        """One item through an albumentations transform (uint8 image (S,S,3), mask (S,S))."""
        image = read_image(item.image)
        return apply(transform, image, read_mask(item.mask, shape=image.shape[:2]))

    def row_seed(self, epoch: int, index: int, row: int) -> int:
        """The augmentation seed of row `row` of batch `index` in `epoch`."""
        return _seed(self.seed, epoch, index, row)

    def __getitem__(self, index: int):
        if self.training:
            with self._lock:
                epoch = int(self._passes[index])
                self._passes[index] += 1
        else:
            epoch = 0
        return self.batch(index, epoch)

    def batch(self, index: int, epoch: int = 0, shard: tuple[int, int] | None = None):
        """Batch `index` of `epoch` (or its slice `shard` = (k, n): rows k·b/n … (k+1)·b/n of its b rows);
        touches no epoch counter."""
        items = self.batch_items(index, epoch)
        first = 0
        if shard is not None:
            k, n = shard
            first, last = (len(items) * k) // n, (len(items) * (k + 1)) // n
            items = items[first:last]
        rows = [(it.image, it.mask, self.row_seed(epoch, index, first + r) if self.training else None)
                for r, it in enumerate(items)]
        if not rows:
            s = self.image_size
            images, masks = np.zeros((0, s, s, 3), np.uint8), np.zeros((0, s, s), np.uint8)
        elif self._pool is not None and len(rows) > 1:
            images, masks = self._pool.load_rows(rows, self.image_size)
        else:
            images, masks = load_rows(rows, self.image_size)
        x = images.astype("float32")                                                 # (B,S,S,3)
        masks = (masks[..., None] > 127).astype("float32")                           # (B,S,S,1)
        if self.paste_share > 0:                  # lesions on other rows' surroundings (labels, masks unchanged)
            rng = np.random.default_rng(_seed(self.seed, epoch, index, first, 1))
            x = paste_onto_hosts(x, masks, self.paste_share, rng)[0]
        y = np.zeros((len(items), self.num_classes), "float32")                     # (B,K)
        for row, it in enumerate(items):
            if it.label is not None:
                y[row, it.label] = 1.0
        if self.meta is not None:
            x = {"image": x, "meta": encode_items(self.meta, items)}
        return x, (y, masks)


def encode_items(meta: MetaEncoding, items) -> np.ndarray:
    """Prepared items (or Samples) -> their encoded metadata (N, width) float32."""
    return meta.encode([dict(it.meta or ()) for it in items])


def image_of(x) -> np.ndarray:
    """The image array of a batch's x (the array itself, or x["image"] with metadata)."""
    return x["image"] if isinstance(x, dict) else x


def labels_of(items: list[Prepared]) -> np.ndarray:
    return np.array([-1 if it.label is None else it.label for it in items])
