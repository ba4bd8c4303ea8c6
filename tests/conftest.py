"""Shared fixtures: repo root on sys.path, quiet TF, a per-session preprocessing cache, tiny datasets."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ISIC = SHARED / "data" / "isic-uda1"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

# a finished single-process run folder (checked on a real one in test_training.py) and its history.csv columns
RUN_FILES = {"config.json", "classes.json", "split.csv", "resume_config.json", "model.keras", "model.h5", "backup",
             "best.weights.h5", "history.csv", "curves.png"}
HISTORY_COLUMNS = ["epoch", "accuracy", "center_loss", "cls_loss", "cskl_loss", "learning_rate", "loss", "mask_loss",
                   "outside_loss", "rrr_loss",
                   "val_accuracy", "val_auc", "val_balanced_accuracy", "val_center_loss", "val_cls_loss",
                   "val_counterfactual_accuracy",
                   "val_cskl_loss", "val_kappa", "val_loss", "val_mask_loss", "val_outside_loss", "val_rrr_loss",
                   "val_worst_accuracy"]
PIPELINE_SIZE = 32      # training size of the batches in test_prepare.py / test_batches.py
# what a training command may print: each line says something the user can act on or needs to read (issue 20);
# NOISE: what it must never print (CUDA probe errors, Keras' HDF5 advice, retracing warnings, raw progress bars)
ACTIONABLE_LINES = [r"data: ", r"preprocessing \(cached", r"devices: tensorflow on CPU:0; XLA off$",
                    r"resuming \S+ after epoch \d+$", r"epoch \d+/\d+ · \d+ s · loss ",
                    r"restored the weights of the best epoch, ", r"stopped early after epoch ",
                    r"done in \d+ s \(\d+ s of training( over all its processes)?\): best val accuracy",
                    r"note: the model predicts "]
NOISE = ("cuInit", "legacy", "retracing", "\r", "Traceback", "WARNING", "I0000", "E0000", "W0000", "oneDNN")


def pytest_collection_modifyitems(config, items):
    """Modules with the most `slow` tests (end-to-end trainings) first, the rest in collection order: xdist
    (--dist loadscope --no-loadscope-reorder, pytest.ini) hands whole modules to the workers in this order, so the
    long ones start early instead of leaving one worker busy alone at the end (xdist's own order, by number of
    tests, put the few-test, minutes-long modules last: ~2.5 min of 22 with one worker idle)."""
    from collections import Counter

    def module(item):
        return item.nodeid.split("::")[0]

    slow = Counter(module(item) for item in items if item.get_closest_marker("slow"))
    order = {item.nodeid: i for i, item in enumerate(items)}
    items.sort(key=lambda item: (-slow[module(item)], order[item.nodeid]))


def assert_only_actionable_lines(text: str) -> list[str]:
    """Every line of a command's output matches ACTIONABLE_LINES and holds none of NOISE; returns the lines."""
    import re

    lines = text.splitlines()
    noisy = [line for line in lines if any(n in line for n in NOISE)]
    assert not noisy, noisy
    unknown = [line for line in lines if not any(re.match(p, line) for p in ACTIONABLE_LINES)]
    assert not unknown, unknown
    return lines


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Never touch the user's ~/.cache/dermo from tests."""
    os.environ["DERMO_CACHE"] = str(tmp_path_factory.mktemp("dermo-cache"))


@pytest.fixture(scope="session")
def isic_dir():
    if not (ISIC / "metadata.csv").exists():
        pytest.skip("../shared/data/isic-uda1 not available")
    return ISIC


@pytest.fixture(scope="session")
def pipeline_set(tmp_path_factory):
    """test_prepare.py / test_batches.py data: dermo.data.synthetic's binary set (24 images of 80 px with exact
    <stem>_mask.png masks) and its training split prepared for 32 px batches (PIPELINE_SIZE)."""
    from types import SimpleNamespace

    from dermo.data.datasets import load_folder
    from dermo.data.synthetic import write_dataset
    from dermo.pipeline.prepare import prepare, settings_for

    synth = write_dataset(tmp_path_factory.mktemp("pipe") / "syn", "binary", n=24, size=80, workers=1)
    dataset = load_folder(synth, task="binary")
    items, skipped = prepare(dataset.train, settings_for(PIPELINE_SIZE), workers=1)
    assert skipped == []
    return SimpleNamespace(synth=synth, dataset=dataset, train_items=items)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The one finished training run of the session, shared by every test that needs a trained model
    (Predictor, evaluate round trips, export, viewer): the headline path `train.py --task multiclass
    --backbone B0` (bcc/mel/scc, focal loss) from scratch at 64 px, 2 epochs of 27 generated images, with
    --class-weight balanced and --monitor val_balanced_accuracy. Returns the run folder; treat it as
    read-only (write evaluations elsewhere with --out)."""
    from dermo.training import cli as train
    from dermo.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("tiny-run")
    data = write_dataset(root / "multiclass", "multiclass", n=36, size=64, seed=1, workers=1)
    out = root / "run"
    rc = train.main(["--data", str(data), "--task", "multiclass", "--backbone", "B0", "--image-size", "64",
                     "--batch-size", "8", "--epochs", "2", "--weights", "none", "--workers", "1",
                     "--class-weight", "balanced", "--monitor", "val_balanced_accuracy", "--out", str(out)])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def lite_run(tmp_path_factory):
    """The session's one pretrained run: EfficientNet-Lite0 with its packaged ImageNet weights, fine-tuned 1 epoch
    at 64 px on 27 generated bcc/mel/scc images with the deck's loss (focal + centre + CSKL + mask), in-process so
    the trained in-memory model is at hand. Returns (run folder, config, in-memory CAMModel, val images (N,64,64,3),
    val labels (N,)); treat all of it as read-only."""
    from types import SimpleNamespace

    from dermo.data.datasets import load_dataset
    from dermo.data.synthetic import write_dataset
    from dermo.pipeline.batches import LesionBatches
    from dermo.pipeline.prepare import prepare, settings_for
    from dermo.run.config import TrainConfig
    from dermo.training import trainer

    root = tmp_path_factory.mktemp("lite-run")
    data = write_dataset(root / "multiclass", "multiclass", n=36, size=64, seed=1, workers=1)
    cfg = TrainConfig(data=str(data), task="multiclass", backbone="lite0", image_size=64, batch_size=8, epochs=1,
                      weights="imagenet", workers=1, class_weight="balanced", monitor="val_balanced_accuracy",
                      out=str(root / "run"))
    run_dir, model = trainer.train_model(cfg, log=lambda *a: None)
    items, _ = prepare(load_dataset(data, "multiclass").val, settings_for(64), workers=1)
    x, (y, _) = LesionBatches(items, 3, 64, batch_size=len(items))[0]
    return SimpleNamespace(dir=run_dir, cfg=cfg, data=data, model=model, x=x, y=y.argmax(1))


@pytest.fixture(scope="session")
def tiny_eval(tiny_run, tmp_path_factory):
    """`evaluate.py --run` of tiny_run (its 9 val images), written outside the run folder; read-only."""
    from dermo.evaluation import cli as evaluate

    out = tmp_path_factory.mktemp("tiny-eval")
    assert evaluate.main(["--run", str(tiny_run), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def cam_model64():
    """A B0 CAMModel at 64 px (2x2 feature maps, the smallest grid where the CAM terms are defined),
    random weights, random centres; one per test module."""
    import keras
    import numpy as np

    from dermo.model.cam_model import CAMModel, LossConfig
    from dermo.model.network import build_graph

    keras.utils.set_random_seed(0)
    inputs, outputs = build_graph("B0", 2, 64, "none")
    m = CAMModel(inputs, outputs, LossConfig())
    m.set_centers(np.random.default_rng(1).normal(size=tuple(m.centers.shape)).astype("float32"))
    return m


# ---------------------------------------------------------------- helpers shared by several test modules
# (plain functions: `from conftest import ...`)

def rel_l2(a: list, b: list) -> float:
    """||b − a|| / ||a|| over all arrays of the lists: one number per quantity, not the single worst of millions of
    elements (tensors whose gradient is ~0 differ by up to 100 % between reduction orders or backends)."""
    import numpy as np

    num = sum(float(((np.asarray(y, np.float64) - x) ** 2).sum()) for x, y in zip(a, b))
    return float(np.sqrt(num / sum(float((np.asarray(x, np.float64) ** 2).sum()) for x in a)))


def one_line_error(capsys, main, argv, prog) -> str:
    """Run a CLI main in-process; assert exit 2 and exactly one '<prog>: error: ...' line on stderr, no
    traceback; return the message after the prefix."""
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert rc == 2, f"exit {rc}; stderr: {cap.err}"
    assert "Traceback" not in cap.err and "\n" not in err, cap.err
    assert err.startswith(f"{prog}: error: "), err
    return err.removeprefix(f"{prog}: error: ")


def random_classifier(num_classes: int, size: int, seed: int, data):
    """Random-weight B0 classifier (image -> probs) whose logits vary by a few units across the val images of
    `data` (a random-init B0 has tiny features, which would leave every probability at 1/K)."""
    import keras
    import numpy as np

    from dermo.data.datasets import load_dataset
    from dermo.model.network import build_graph, inference_model
    from dermo.pipeline.batches import LesionBatches
    from dermo.pipeline.prepare import prepare, settings_for

    keras.utils.set_random_seed(seed)
    inputs, out = build_graph("B0", num_classes, size, weights="none")
    pooled = out["pooled"]
    model = inference_model(keras.Model(inputs, out["probs"]))
    items, _ = prepare(load_dataset(data).val, settings_for(size))
    x = LesionBatches(items, num_classes, size, batch_size=len(items))[0][0]
    g = np.asarray(keras.Model(inputs, pooled)(x, training=False), np.float64)     # (N,C), eager: no trace
    dense = model.get_layer("classifier")
    kernel = np.random.default_rng(seed).normal(size=dense.kernel.shape) * 3 / np.sqrt(g.shape[1])
    kernel /= g.std(0).mean() + 1e-12                          # logits vary by a few units across images
    dense.kernel.assign(kernel.astype("float32"))
    dense.bias.assign((-g.mean(0) @ kernel).astype("float32"))  # centred: no class wins everywhere
    return model


def fake_run(folder, model, data, task, classes):
    """A run folder around `model` (config.json, classes.json, model.keras) as train.py would leave it."""
    import json

    from dermo.run.config import TrainConfig

    folder.mkdir()
    cfg = TrainConfig(data=str(data), task=task, image_size=int(model.inputs[0].shape[1]), weights="none",
                      out=str(folder))
    (folder / "config.json").write_text(cfg.to_json())
    (folder / "classes.json").write_text(json.dumps({"classes": classes}))
    model.save(folder / "model.keras")
    return folder


def write_notop_weights(path, layout: str, backbone: str = "B0", normalization=None):
    """A no-top EfficientNet weights .h5 in a real file layout with random values (no download needed):
    "keras"        keras.applications' imagenet file (Keras-2 h5 weights layout). The download stores the
                   ImageNet mean and, as the Normalization *variance*, the ImageNet std (not std²): the comment
                   in keras/src/applications/efficientnet.py ("Build stem") and TensorFlow issue #49930, which
                   is why Keras adds Rescaling(1/sqrt(std)) after that layer for weights="imagenet".
                   `normalization=(mean, variance)` stores other values (a file saved from another model);
    "efficientnet" the `efficientnet` package's files (e.g. its noisy-student download)."""
    import h5py
    import keras
    import numpy as np
    from keras.src.legacy.saving import legacy_h5_format

    from dermo.model.backbones import normalization_layer

    keras.utils.set_random_seed(1)
    if layout == "keras":
        model = getattr(keras.applications, f"EfficientNet{backbone}")(include_top=False, weights=None,
                                                                        input_shape=(64, 64, 3))
        mean, variance = normalization or ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # as the download
        norm = normalization_layer(model)
        norm.set_weights([np.asarray(mean, "float32"), np.asarray(variance, "float32")] + norm.get_weights()[2:])
    else:
        import efficientnet.tfkeras as efn

        model = getattr(efn, f"EfficientNet{backbone}")(include_top=False, weights=None, input_shape=(64, 64, 3))
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def kill_after_first_epoch(procs, run_dir: Path, timeout: float = 600) -> None:
    """SIGKILL the training process(es) once run_dir's checkpoint says epoch 1 is done (a crash mid-run)."""
    state = Path(run_dir) / "backup" / "state.json"
    deadline = time.time() + timeout
    while not (state.exists() and json.loads(state.read_text())["epoch"] >= 1):
        assert all(p.poll() is None for p in procs) and time.time() < deadline, "training ended early"
        time.sleep(0.1)
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()
