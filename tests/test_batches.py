"""dermo.pipeline.batches: LesionBatches' shapes, order, determinism through Keras and model.fit, and image/mask
alignment under augmentation. Data: the pipeline_set fixture (tests/conftest.py)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import PIPELINE_SIZE

from dermo.data.augment import MASK_RESIZE
from dermo.data.imageio import read_image, read_mask, write_png
from dermo.pipeline.batches import LesionBatches
from dermo.pipeline.prepare import Prepared

S = PIPELINE_SIZE   # training size of the batches tested here
B = 5               # batch size: 18 training images -> 3 full batches + 3 left over


@pytest.fixture(scope="module")
def train_items(pipeline_set):
    return pipeline_set.train_items


def _check_batch(batch, n: int, k: int = 2):
    x, (y, masks) = batch
    assert x.shape == (n, S, S, 3) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 255 and x.max() > 1          # 0..255, not normalised
    assert y.shape == (n, k) and y.dtype == np.float32
    np.testing.assert_array_equal(y.sum(1), 1)
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert masks.shape == (n, S, S, 1) and masks.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0}


def test_batch_shapes_dtypes_and_lengths(train_items):
    train = LesionBatches(train_items, 2, S, B, training=True)
    evalb = LesionBatches(train_items, 2, S, B)
    assert len(train) == 3 and len(evalb) == 4                      # 18 // 5 vs ceil(18 / 5)
    for i in range(len(train)):
        _check_batch(train[i], B)
    for i in range(3):
        _check_batch(evalb[i], B)
    _check_batch(evalb[3], 3)                                        # eval keeps the partial batch
    # a set no larger than one batch still gives one (partial) training batch
    small = LesionBatches(train_items[:4], 2, S, B, training=True)
    assert len(small) == 1
    _check_batch(small[0], 4)
    assert len(LesionBatches(train_items[:B], 2, S, B, training=True)) == 1
    with pytest.raises(ValueError):
        LesionBatches([], 2, S, B)


def test_eval_batches_are_in_order_and_plain_resizes(train_items):
    a, b = LesionBatches(train_items, 2, S, B), LesionBatches(train_items, 2, S, B)
    for i in range(len(a)):
        items = train_items[i * B:(i + 1) * B]
        assert a.batch_items(i) == items
        x, (y, masks) = a[i]
        x2, (y2, masks2) = b[i]
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(masks, masks2)
        np.testing.assert_array_equal(y.argmax(1), [it.label for it in items])
        for j, it in enumerate(items):
            ref = cv2.resize(read_image(it.image), (S, S), interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(x[j], ref.astype(np.float32))
            ref_m = cv2.resize(read_mask(it.mask), (S, S), interpolation=MASK_RESIZE) > 127
            np.testing.assert_array_equal(masks[j, ..., 0], ref_m.astype(np.float32))
    a.on_epoch_end()                                                 # no shuffling outside training
    assert a.batch_items(0) == train_items[:B]


def _batches(ds, indices=None):
    return [ds[i] for i in (range(len(ds)) if indices is None else indices)]


def _assert_same(got, want):
    assert len(got) == len(want)
    for (x, (y, m)), (x2, (y2, m2)) in zip(got, want):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(m, m2)


def test_training_batches_depend_only_on_seed_epoch_and_index(train_items):
    a = LesionBatches(train_items, 2, S, B, training=True, seed=3)
    b = LesionBatches(train_items, 2, S, B, training=True, seed=3)
    first = _batches(a)
    _assert_same(_batches(b, [2, 0, 1]), [first[2], first[0], first[1]])   # any call order
    a.set_epoch(0)
    _assert_same(_batches(a), first)                                       # and repeatable
    # every epoch is a permutation: no image twice, n % B left out
    seen = [it.source for i in range(len(a)) for it in a.batch_items(i)]
    assert len(seen) == len(set(seen)) == 15
    other_seed = LesionBatches(train_items, 2, S, B, training=True, seed=4)
    assert [a.batch_items(i) for i in range(3)] != [other_seed.batch_items(i) for i in range(3)]
    # each batch draws its own augmentations: one image repeated gives different batches at different indices
    same_image = LesionBatches([train_items[0]] * 2 * B, 2, S, B, training=True, seed=3)
    x0, x1 = same_image[0][0], same_image[1][0]
    assert not any(np.array_equal(x0[j], x1[j]) for j in range(B))


def test_epochs_shuffle_differently_and_set_epoch_reproduces(train_items):
    a = LesionBatches(train_items, 2, S, B, training=True, seed=1)
    order0 = [a.batch_items(i) for i in range(len(a))]
    first = _batches(a)                   # a full pass: the next requests belong to epoch 1
    assert a.epoch == 1 and [a.batch_items(i) for i in range(len(a))] != order0
    a.set_epoch(2)
    epoch2 = _batches(a)
    a.set_epoch(0)
    _assert_same(_batches(a), first)
    fresh = LesionBatches(train_items, 2, S, B, training=True, seed=1)
    fresh.set_epoch(2)
    _assert_same(_batches(fresh), epoch2)
    # the same images in the same batch slot of another epoch are augmented differently
    same = LesionBatches([train_items[0]] * 2 * B, 2, S, B, training=True, seed=1)
    epoch0, epoch1 = same[0][0], same[0][0]       # the second request of index 0 is epoch 1
    assert not np.array_equal(epoch0, epoch1)


def test_next_epoch_requested_early_keeps_its_own_epoch(train_items):
    """Keras' tf.data adapter asks for the next epoch's first batches before on_epoch_end: they must
    still be that epoch's batches, whatever the timing."""
    a = LesionBatches(train_items, 2, S, B, training=True, seed=5)
    early = [a[i] for i in range(len(a))] + [a[0]]       # epoch 0, then epoch 1's first batch early
    a.on_epoch_end()
    rest = [a[i] for i in range(1, len(a))]
    ref = LesionBatches(train_items, 2, S, B, training=True, seed=5)
    ref.set_epoch(1)
    _assert_same([early[-1]] + rest, _batches(ref))


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("training", [True, False])
def test_keras_iteration_gives_the_same_batches(train_items, workers, training):
    """Through Keras' own PyDataset adapter (thread enqueuer when workers > 1), two epochs."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    ds = LesionBatches(train_items, 2, S, B, training=training, seed=7, workers=workers, max_queue_size=2)
    adapter = PyDatasetAdapter(ds, shuffle=False)
    assert (adapter.enqueuer is not None) == (workers > 1)
    for epoch in range(2):
        adapter.on_epoch_begin()
        got = [(x, (y, m)) for x, (y, m) in adapter.get_numpy_iterator()]
        adapter.on_epoch_end()
        ref = LesionBatches(train_items, 2, S, B, training=training, seed=7)
        ref.set_epoch(epoch if training else 0)
        _assert_same(got, _batches(ref))
    assert ds.epoch == (2 if training else 0)


def _fit_batches(items, epochs: int, workers: int, shuffle: bool, initial_epoch: int = 0) -> dict[int, list[bytes]]:
    """model.fit over training LesionBatches (TF backend: tf.data adapter, shape probe, prefetch)
    -> {fit epoch: [digest of each x the train step received, in order]}."""
    import keras

    class Recorder(keras.Model):
        def train_step(self, data):
            seen.append(hashlib.sha1(np.asarray(data[0]).tobytes()).digest())
            return {"batches": keras.ops.convert_to_tensor(float(len(seen)))}

    seen: list = []
    inp = keras.Input((S, S, 3))
    model = Recorder(inp, keras.layers.GlobalAveragePooling2D()(inp))
    model.compile(run_eagerly=True)
    mark = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(e))
    batches = LesionBatches(items, 2, S, B, training=True, seed=9, workers=workers)
    batches.set_epoch(initial_epoch)                                 # as a resumed run does
    model.fit(batches, epochs=epochs, initial_epoch=initial_epoch, shuffle=shuffle, verbose=0, callbacks=[mark])
    per_epoch: dict = {}
    for s in seen:
        if isinstance(s, int):
            per_epoch[s] = []
        else:
            per_epoch[max(per_epoch)].append(s)
    return per_epoch


@pytest.mark.parametrize("workers,shuffle,start", [(1, False, 0), (2, True, 0), (1, True, 2)])
def test_model_fit_trains_each_epoch_on_that_epochs_batches(train_items, workers, shuffle, start):
    """Keras' TF adapter requests 2 batches to probe their shapes before training, prefetches the next epoch
    early, and (shuffle=True) permutes the batch indices: every fit epoch must still see exactly the batches
    of its own epoch, i.e. every image once; a resumed run (start > 0) continues with the same batches."""
    got = _fit_batches(train_items, start + 3, workers, shuffle, initial_epoch=start)
    assert sorted(got) == list(range(start, start + 3))
    ref = LesionBatches(train_items, 2, S, B, training=True, seed=9)
    for epoch in range(start, start + 3):
        ref.set_epoch(epoch)
        want = [hashlib.sha1(ref[i][0].tobytes()).digest() for i in range(len(ref))]
        assert (sorted(got[epoch]) if shuffle else got[epoch]) == (sorted(want) if shuffle else want), epoch


def _mean_contrast(x: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(B,S,S,3), (B,S,S,1) -> (B,) mean brightness inside the mask minus outside (nan if one side is tiny)."""
    grey = x.mean(-1)
    m = masks[..., 0] > 0.5
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        if 0.05 < m[i].mean() < 0.95:
            out[i] = grey[i][m[i]].mean() - grey[i][~m[i]].mean()
    return out


def test_augmented_masks_stay_on_the_synthetic_lesions(train_items):
    """Lesions are darker than skin: inside-minus-outside brightness keeps its sign and size after augmentation,
    while a mask flipped away from its image loses most of it."""
    plain = LesionBatches(train_items, 2, S, len(train_items))
    x0, (_, m0) = plain[0]
    base = {it.source: c for it, c in zip(train_items, _mean_contrast(x0, m0)) if c < -20}  # clearly dark lesions
    assert len(base) >= 12
    aug = LesionBatches(train_items, 2, S, B, training=True, seed=5)
    ratios, flipped = [], []
    for epoch in range(3):
        aug.set_epoch(epoch)
        for i in range(len(aug)):
            x, (_, m) = aug[i]
            for it, c, cf in zip(aug.batch_items(i, epoch), _mean_contrast(x, m), _mean_contrast(x, m[:, ::-1, ::-1])):
                if it.source not in base:
                    continue
                if np.isfinite(c):
                    ratios.append(c / base[it.source])
                if np.isfinite(cf):
                    flipped.append(cf / base[it.source])
    ratios = np.array(ratios)
    print(f"contrast kept: min {ratios.min():.2f} median {np.median(ratios):.2f}; flipped mask: "
          f"median {np.median(flipped):.2f}")
    assert len(ratios) >= 25
    assert ratios.min() > 0.5 and np.median(ratios) > 0.8
    assert np.median(flipped) < 0.5 * np.median(ratios)


def _blob_item(folder: Path, seed: int) -> Prepared:
    """A cached pair whose image is white exactly on an asymmetric blob mask, black elsewhere."""
    rng = np.random.default_rng(seed)
    h, w = 48, 60
    field = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 4)
    ell = np.zeros((h, w), np.float32)
    cv2.ellipse(ell, (22, 18), (14, 10), int(rng.integers(0, 180)), 0, 360, 1.0, -1)
    field = field / field.max() + ell
    mask = np.where(field > np.quantile(field, 0.7), 255, 0).astype(np.uint8)
    write_png(folder / f"b{seed}.png", np.repeat(mask[..., None], 3, axis=2))
    write_png(folder / f"b{seed}_mask.png", mask)
    return Prepared(str(folder / f"b{seed}.png"), str(folder / f"b{seed}_mask.png"), seed % 2, f"blob{seed}")


def test_augmented_masks_match_their_images_pixelwise(tmp_path):
    items = [_blob_item(tmp_path, s) for s in range(8)]
    ds = LesionBatches(items, 2, S, 4, training=True, seed=2)
    ious = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            x, (_, m) = ds[i]
            white, lesion = x.mean(-1) > 127, m[..., 0] > 0.5
            for a, b in zip(white, lesion):
                ious.append((a & b).sum() / max((a | b).sum(), 1))
    print(f"blob IoU min {min(ious):.3f} mean {np.mean(ious):.3f}")
    assert min(ious) > 0.85 and np.mean(ious) > 0.93


def test_a_killed_worker_process_costs_no_batch(train_items):
    """A worker of the row pool dies (killed, as the out-of-memory killer would): the pool starts a fresh executor
    and makes the batch again — the batch one process makes — instead of ending the training mid-epoch."""
    import os
    import signal

    from dermo.pipeline.rows import RowPool, load_rows

    ds = LesionBatches(train_items, 2, S, B, training=True, seed=3)
    rows = [(it.image, it.mask, ds.row_seed(0, 0, r)) for r, it in enumerate(ds.batch_items(0, 0))]
    want = load_rows(rows, S)
    pool = RowPool(2)                                    # its own, not the shared RowPool.get(2)
    try:
        first = pool.load_rows(rows, S)                  # the workers are up
        for pid in list(pool._executor._processes):
            os.kill(pid, signal.SIGKILL)
        after = pool.load_rows(rows, S)
        assert pool.restarts == 1
        for got in (first, after):
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
    finally:
        pool._executor.shutdown(wait=True, cancel_futures=True)
