"""Usage: python3 benchmarks/occlusion_batchnorm.py RUN   (a run trained with --lambda-outside λ --outside-form logit|swap)

Occlusion forms of L_outside: BatchNorm statistics in training come from [x, x̃]; inference statistics (re-estimated
before each validation) from x only. Measure what that mismatch does to a trained run's val numbers."""
import json, sys
from pathlib import Path
import keras, numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dermo.data.datasets import load_dataset
from dermo.metrics import classification_metrics
from dermo.model.objective import with_occluded
from dermo.pipeline.batches import LesionBatches
from dermo.pipeline.prepare import prepare, settings_for
from dermo.run.config import TrainConfig
from dermo.run import splits
from dermo.training.setup import build_model

run = Path(sys.argv[1])
cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
classes = json.loads((run / "classes.json").read_text())["classes"]
model = build_model(cfg, len(classes))
model.load_weights(run / "best.weights.h5")
settings = settings_for(cfg.image_size, hair=cfg.hair_removal, color=cfg.color_constancy,
                        color_region=cfg.color_region, mask_grow=cfg.mask_grow)
tr, _ = prepare(splits.split_samples(run, classes, "train"), settings)
va, _ = prepare(splits.split_samples(run, classes, "val"), settings)
order = np.random.default_rng(cfg.seed).permutation(len(tr))
plain = LesionBatches([tr[i] for i in order], len(classes), cfg.image_size, cfg.batch_size)
val = LesionBatches(va, len(classes), cfg.image_size, 64)
bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]

def recalibrate(occluded: bool, n=8):
    for i in range(min(n, len(plain))):
        for l in bns:
            l.momentum = 1.0 - 1.0 / (i + 1)
        x, (y, m) = plain[i]
        model(with_occluded(x, m, cfg.outside_form) if occluded else x, training=True)

def scores():
    probs, labels = [], []
    for i in range(len(val)):
        x, (y, m) = val[i]
        probs.append(np.asarray(model(x, training=False)["probs"]))
        labels.append(y.argmax(1))
    m = classification_metrics(np.concatenate(labels), np.concatenate(probs), classes)
    return {k: round(float(m[k]), 4) for k in ("accuracy", "balanced_accuracy", "auc", "log_loss")}

for occluded in (False, True):
    recalibrate(occluded)
    print("BN statistics from", "[x, x~]" if occluded else "x only (as now)", scores())
# the training-mode view: per-batch statistics of [x, x~] on the val images themselves
probs, labels = [], []
for i in range(len(val)):
    x, (y, m) = val[i]
    probs.append(np.asarray(model.forward(x, m, training=True)["probs"]))
    labels.append(y.argmax(1))
m = classification_metrics(np.concatenate(labels), np.concatenate(probs), classes)
print("training mode on val [x, x~] batches", {k: round(float(m[k]), 4) for k in ("accuracy", "balanced_accuracy", "auc", "log_loss")})
