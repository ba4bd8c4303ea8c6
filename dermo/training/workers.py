"""Training on several machines: --strategy multiworker (TensorFlow's MultiWorkerMirroredStrategy).

Every machine runs the same `dermo train` command with its own TF_CONFIG (docs/usage.md: several machines):

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'

`this_worker` reads it: the chief is task "chief" 0, or "worker" 0 when the cluster has no "chief". As the Keras
multi-worker guide prescribes, every worker runs every callback (saving reads distributed variables, which
takes all workers), but only the chief writes into the run folder; the others write into a temporary folder
that is deleted when they finish. `--resume` reads the chief's run folder on every worker (it must be at
the same path on each: a shared file system, or a copy of the chief's folder).

`distributed_batches` feeds each replica its own slice of every global batch: replica r of R gets rows
r·B/R … (r+1)·B/R of batch i (dermo.pipeline.batches.LesionBatches.batch), built on its own worker from
(seed, epoch, index) alone, so no worker decodes another's images and the union over the replicas is exactly
the batch a single process trains on. (tf.distribute's own sharding of a Python dataset would make every
worker decode the whole batch and keep its part.)
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermo.errors import DermoError


class WorkerError(DermoError, ValueError):
    """A multi-worker setup that cannot train; one line naming the fix."""


RECIPE = "see docs/usage.md, several machines"


@dataclass(frozen=True)
class Worker:
    task: str = "worker"
    index: int = 0
    count: int = 1
    chief: bool = True

    def write_dir(self, run_dir: Path) -> Path:
        """Where this process writes its run folder: the run folder itself on the chief, else a new temporary
        folder."""
        if self.chief:
            run_dir.mkdir(parents=True, exist_ok=True)
            return run_dir
        return Path(tempfile.mkdtemp(prefix=f"dermo-{self.task}{self.index}-"))

    def cleanup(self, write_dir: Path) -> None:
        if not self.chief:
            shutil.rmtree(write_dir, ignore_errors=True)


SINGLE = Worker()


def this_worker(strategy: str, environ=None) -> Worker:
    """This process's place in the cluster (TF_CONFIG) with --strategy multiworker, else the single worker."""
    if strategy != "multiworker":
        return SINGLE
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not raw.strip():
        raise WorkerError(f"--strategy multiworker needs TF_CONFIG (the cluster and this worker's task; {RECIPE})")
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        kind, index = str(task["type"]), int(task["index"])
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise WorkerError(f"TF_CONFIG is not valid ({type(e).__name__}: {e}); it needs "
                          f'{{"cluster": {{"worker": [...]}}, "task": {{"type": "worker", "index": N}}}} '
                          f"({RECIPE})") from None
    tasks = {"chief": chiefs, "worker": workers}
    if kind not in tasks:
        raise WorkerError(f'TF_CONFIG task type "{kind}": dermo runs "chief" and "worker" tasks only')
    if not 0 <= index < len(tasks[kind]) or len(chiefs) > 1:
        raise WorkerError(f"TF_CONFIG: task {kind} {index} is not in the cluster ({len(chiefs)} chief, "
                          f"{len(workers)} worker address(es); at most 1 chief)")
    chief = kind == "chief" or (kind == "worker" and index == 0 and not chiefs)
    return Worker(kind, index, len(chiefs) + len(workers), chief)


def check_batch_size(batch_size: int, replicas: int) -> None:
    if batch_size % replicas:
        raise WorkerError(f"--batch-size {batch_size} does not split evenly over {replicas} replicas; use a "
                          f"multiple of {replicas}")


def distributed_batches(strategy, batches, epochs: tuple[int, int] | None = None):
    """A tf.distribute dataset of `batches` (LesionBatches) in which each replica gets its slice of each global
    batch. Training batches: every batch of epochs [first, last) in order (fit with steps_per_epoch =
    len(batches)); otherwise one pass (validation, repeated by Keras each epoch)."""
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    n = len(batches)
    first, last = epochs if epochs is not None else (0, 1)
    size, k = batches.image_size, batches.num_classes

    def dataset_fn(context):
        per_worker = replicas // context.num_input_pipelines
        offset = context.input_pipeline_id * per_worker

        def fetch(j):
            step, local = divmod(int(j), per_worker)
            epoch, index = divmod(step, n)
            x, (y, masks) = batches.batch(index, epoch if batches.training else 0, (offset + local, replicas))
            weight = np.ones(len(x), "float32")
            if not len(x):      # a last validation batch smaller than the replica count: a stand-in, weight 0
                x, (y, masks) = batches.batch(index, 0, (0, len(batches.batch_items(index, 0))))
                weight = np.zeros(len(x), "float32")
            return x, y, masks, weight

        def load(j):
            x, y, masks, weight = tf.numpy_function(fetch, [j], (tf.float32,) * 4)
            x.set_shape((None, size, size, 3))
            y.set_shape((None, k))
            masks.set_shape((None, size, size, 1))
            weight.set_shape((None,))
            return (x, (y, masks)) if batches.training else (x, (y, masks), weight)

        ds = tf.data.Dataset.range(first * n * per_worker, last * n * per_worker)
        ds = ds.map(load, num_parallel_calls=max(1, batches.workers), deterministic=True).prefetch(2)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return ds.with_options(options)

    return strategy.distribute_datasets_from_function(dataset_fn)


def synchronise_batchnorm(model, replicas: int) -> int:
    """With several replicas, BatchNorm normalises with the statistics of the whole global batch (as one
    process would) and its moving averages stay equal on every worker. Returns the number of layers set."""
    import keras

    if replicas <= 1:
        return 0
    layers = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = True
    return len(layers)


@contextlib.contextmanager
def plain_batchnorm(model):
    """Within: every BatchNormalization layer unsynchronised, so a model saved here loads on every backend and
    device (a `synchronized` layer needs TensorFlow with a distribution strategy; its inference is the same)."""
    import keras

    layers = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization) and l.synchronized]
    for layer in layers:
        layer.synchronized = False
    try:
        yield model
    finally:
        for layer in layers:
            layer.synchronized = True


def keras_multiworker_fixes(model) -> None:
    """Two workarounds for Keras 3.12's TensorFlow trainer under MultiWorkerMirroredStrategy (tensorflow#72388),
    for this model only. Call inside `strategy.scope()`.

    - fit/evaluate first reduce one input batch over the replicas to build the model symbolically, and that
      reduce fails on a nested batch ((x, (y, masks))). A CAMModel needs no such build (a functional graph; its
      optimizer is built here, in the strategy scope): skipped.
    - the logs of each step are averaged over the workers with strategy.reduce(MEAN, v, axis=0), which fails on
      scalars: the steps return each log as a 1-vector, which that reduce turns back into the scalar.
    """
    from keras import ops

    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model._maybe_symbolic_build = lambda *args, **kwargs: None

    def vector_logs(step):
        def run(data):
            return {name: ops.reshape(value, (1,)) for name, value in step(data).items()}
        return run

    model.train_step = vector_logs(model.train_step)
    model.test_step = vector_logs(model.test_step)
