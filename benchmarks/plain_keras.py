"""The reference a user would write instead of dermo: plain Keras fine-tuning of the same ImageNet EfficientNet-Lite0.

    train(manifest, out, task_classes, ...)   model.fit on the manifest's split=="train" rows; the epoch with the
                                              best balanced accuracy on its split=="val" rows is kept
    predict(out, manifest)                    -> predictions (N,K) of any labelled CSV (image, label)

What it does (the recipe measured in issue 33 as a user's first try): images read and squashed to SIZE x SIZE
(cv2 INTER_AREA; no hair removal, colour constancy or masks), random horizontal/vertical flips and 90° rotations,
Lite0 (ImageNet, include_top=False) -> GAP -> Dropout 0.2 -> Dense(K) softmax, categorical cross-entropy with
sklearn's balanced class weights, Adam 1e-3 with cosine decay over all steps, batch 32, `model.fit`. The epoch is
chosen on the val rows by balanced accuracy (a callback keeps its weights) — never on a test set.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

BATCH = 32
LR = 1e-3


def load_images(paths, size: int) -> np.ndarray:
    """(N,S,S,3) uint8 RGB, squashed to S x S."""
    import cv2

    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{p}: unreadable image")
        out[i] = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)[..., ::-1]
    return out


def build(num_classes: int, size: int):
    import keras

    from dermo.model import efficientnet_lite

    base = efficientnet_lite("lite0", weights="imagenet", include_top=False, input_shape=(size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(base.input, keras.layers.Dense(num_classes, activation="softmax")(x))


def _augmented(x: np.ndarray, y: np.ndarray, seed: int):
    """An endless tf.data stream of shuffled batches with random flips and 90° rotations."""
    import tensorflow as tf

    def aug(img, label):
        img = tf.image.random_flip_left_right(img)
        img = tf.image.random_flip_up_down(img)
        img = tf.image.rot90(img, tf.random.uniform([], 0, 4, tf.int32))
        return tf.cast(img, tf.float32), label

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(2)


def train(manifest, out, classes: list[str], size: int = 128, epochs: int = 6, seed: int = 0,
          label_column: str = "label") -> dict:
    import keras
    import pandas as pd
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.utils.class_weight import compute_class_weight

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(manifest, dtype=str)
    index = {c: i for i, c in enumerate(classes)}
    parts = {s: frame[frame["split"] == s] for s in ("train", "val")}
    x = {s: load_images(f["image"], size) for s, f in parts.items()}
    y = {s: f[label_column].map(index).to_numpy(int) for s, f in parts.items()}
    keras.utils.set_random_seed(seed)
    model = build(len(classes), size)
    steps = int(np.ceil(len(y["train"]) / BATCH))
    schedule = keras.optimizers.schedules.CosineDecay(LR, epochs * steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="categorical_crossentropy", metrics=["accuracy"])
    weights = compute_class_weight("balanced", classes=np.arange(len(classes)), y=y["train"])
    history = []

    class BestBalancedAccuracy(keras.callbacks.Callback):
        best = -1.0

        def on_epoch_end(self, epoch, logs=None):
            pred = self.model.predict(x["val"].astype("float32"), batch_size=64, verbose=0).argmax(1)
            ba = float(balanced_accuracy_score(y["val"], pred))
            history.append({"epoch": epoch, "loss": float(logs["loss"]), "val_balanced_accuracy": ba})
            print(f"epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f}, val balanced accuracy {ba:.4f}", flush=True)
            if ba > self.best:
                self.best = ba
                self.model.save_weights(out / "best.weights.h5")

    start = time.time()
    model.fit(_augmented(x["train"], keras.utils.to_categorical(y["train"], len(classes)), seed), epochs=epochs,
              steps_per_epoch=steps, class_weight=dict(enumerate(weights)), callbacks=[BestBalancedAccuracy()],
              verbose=0)
    seconds = time.time() - start
    pd.DataFrame(history).to_csv(out / "history.csv", index=False)
    best = max(history, key=lambda h: h["val_balanced_accuracy"])
    info = {"classes": classes, "image_size": size, "epochs": epochs, "seed": seed, "train_seconds": round(seconds, 1),
            "best_epoch": best["epoch"], "val_balanced_accuracy": best["val_balanced_accuracy"],
            "n_train": int(len(y["train"])), "n_val": int(len(y["val"])), "recipe": __doc__.split("What it does")[1]}
    (out / "config.json").write_text(json.dumps(info, indent=2))
    return info


def write_inner(out, manifest, label_column: str = "label") -> Path:
    """The best epoch's probabilities on the manifest's val rows as out/eval-inner/predictions.csv (path, label,
    predicted, one column per class): the inner-split decisions, as dermo evaluate writes them."""
    import pandas as pd

    out = Path(out)
    classes = json.loads((out / "config.json").read_text())["classes"]
    val = pd.read_csv(manifest, dtype=str)
    val = val[val["split"] == "val"]
    probs = predict(out, list(val["image"]))
    frame = pd.DataFrame(probs, columns=classes)
    frame.insert(0, "predicted", [classes[k] for k in probs.argmax(1)])
    frame.insert(0, "label", list(val[label_column]))
    frame.insert(0, "path", list(val["image"]))
    (out / "eval-inner").mkdir(exist_ok=True)
    frame.to_csv(out / "eval-inner" / "predictions.csv", index=False)
    return out / "eval-inner" / "predictions.csv"


def predict(out, paths) -> np.ndarray:
    """(N,K) probabilities of the run in `out` (its best epoch) for image paths."""
    out = Path(out)
    info = json.loads((out / "config.json").read_text())
    model = build(len(info["classes"]), info["image_size"])
    model.load_weights(out / "best.weights.h5")
    return model.predict(load_images(paths, info["image_size"]).astype("float32"), batch_size=64, verbose=0)
