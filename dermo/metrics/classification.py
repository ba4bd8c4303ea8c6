"""Classification metrics and the text report, from labels and probabilities (scikit-learn).

Shapes:
    y_true  int (N,)          class ids, index into class_names
    probs   float (N, K)      per-class probabilities (softmax rows); prediction = argmax
Undefined numbers (AUC with a class missing from y_true, kappa of a single class) are None, so the dicts
serialise to strict JSON.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, classification_report,
                             cohen_kappa_score, confusion_matrix, f1_score, precision_recall_fscore_support,
                             roc_auc_score)


def _check(y_true, probs, class_names):
    """Validate and return (y_true int (N,), probs float (N,K), y_pred int (N,), labels [0..K-1])."""
    y_true = np.asarray(y_true).astype(int).ravel()
    probs = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if probs.ndim != 2 or probs.shape[1] != k:
        raise ValueError(f"probs must have shape (N, {k}) for classes {list(class_names)}, "
                         f"got {probs.shape}")
    if probs.shape[0] != y_true.shape[0]:
        raise ValueError(f"{y_true.shape[0]} labels but {probs.shape[0]} probability rows")
    if y_true.size == 0:
        raise ValueError("no samples to evaluate")
    if y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(f"labels must lie in 0..{k - 1}, got {y_true.min()}..{y_true.max()}")
    return y_true, probs, probs.argmax(axis=1), list(range(k))


def _finite_or_none(x):
    x = float(x)
    return x if math.isfinite(x) else None


def auc_score(y_true, probs) -> float | None:
    """Binary (K=2): ROC AUC of probs[:, 1]; K>2: one-vs-rest macro AUC (the mean over classes of the AUC of
    column k for class k vs the rest, as sklearn's multi_class="ovr", but also for scores whose rows do not
    sum to 1, e.g. rank-averaged ensembles). None if a class is missing from y_true (AUC undefined)."""
    y_true = np.asarray(y_true).astype(int).ravel()
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    if len(np.unique(y_true)) < k:
        return None
    if k == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    return float(np.mean([roc_auc_score(y_true == c, probs[:, c]) for c in range(k)]))


def _balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall over the classes present in y_true (sklearn's definition); predictions of an
    absent class are simply errors, so sklearn's warning about them is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(y_true, y_pred))


def cross_entropy(y_true, probs) -> float:
    """Mean −log p of the true class: the training's cross-entropy, from probabilities (rows renormalised).

    Not sklearn's log_loss, which clips p at float64 eps (−log p ≤ 36) where the training loss, computed
    from logits, is not clipped; here p is only kept above float32's smallest normal (−log p ≤ 87.3)."""
    y_true = np.asarray(y_true).astype(int).ravel()
    probs = np.asarray(probs, np.float64)
    p = probs[np.arange(len(y_true)), y_true] / probs.sum(axis=1)
    return float(-np.mean(np.log(np.maximum(p, np.finfo(np.float32).tiny))))


def classification_metrics(y_true, probs, class_names) -> dict:
    """All headline numbers of one evaluation as a JSON-ready dict.

    y_true int (N,), probs (N, K), class_names list of K names (index = class id).
    Keys: accuracy, balanced_accuracy, kappa, auc, f1_macro, log_loss (mean −log p of the true class, the
    training's cross-entropy), n, per_class
    ({name: {precision, recall, f1, support}}), confusion_matrix (K x K list, rows = true class).
    """
    y_true, probs, y_pred, labels = _check(y_true, probs, class_names)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    per_class = {str(name): {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                 for i, name in enumerate(class_names)}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "kappa": _finite_or_none(cohen_kappa_score(y_true, y_pred, labels=labels)),
        "auc": auc_score(y_true, probs),
        "f1_macro": float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                   zero_division=0)),
        "log_loss": cross_entropy(y_true, probs),
        "n": int(y_true.size),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def fmt(x) -> str:
    """A number for reports: 4 decimals, or n/a for None."""
    return "n/a" if x is None else f"{x:.4f}"


def confusion_text(cm, class_names) -> str:
    """Confusion matrix as an aligned table: rows = true class, columns = predicted class."""
    cm = np.asarray(cm)
    names = [str(n) for n in class_names]
    width = max([len(n) for n in names] + [len(str(int(cm.max(initial=0)))), len("true\\pred")])
    rows = ["true\\pred".ljust(width) + " " + " ".join(n.rjust(width) for n in names)]
    for name, row in zip(names, cm):
        rows.append(name.ljust(width) + " " + " ".join(str(int(v)).rjust(width) for v in row))
    return "\n".join(rows)


def report_text(y_true, probs, class_names) -> str:
    """Human-readable report like the deck's: sklearn classification report, the headline
    numbers ("accuracy: 0.9355" ...) and the confusion matrix."""
    y_true, probs, y_pred, labels = _check(y_true, probs, class_names)
    m = classification_metrics(y_true, probs, class_names)
    report = classification_report(y_true, y_pred, labels=labels,
                                   target_names=[str(n) for n in class_names],
                                   digits=4, zero_division=0)
    lines = [f"accuracy: {fmt(m['accuracy'])}",
             f"balanced accuracy: {fmt(m['balanced_accuracy'])}",
             f"kappa: {fmt(m['kappa'])}",
             f"auc: {fmt(m['auc'])}",
             f"n: {m['n']}",
             "",
             "Classification report:",
             report.rstrip(),
             "",
             "Confusion matrix (rows = true, columns = predicted):",
             confusion_text(m["confusion_matrix"], class_names)]
    return "\n".join(lines) + "\n"


MAJORITY_SHARE = 0.95       # one class predicted for at least this share of the images: a one-class model


def majority_note(y_true, probs, class_names, what: str = "val images") -> str | None:
    """One line when the predictions are (almost) all one class — the model learnt the class prior, not the
    classes, whatever its accuracy says — else None."""
    y_true, probs, y_pred, _ = _check(y_true, probs, class_names)
    counts = np.bincount(y_pred, minlength=len(class_names))
    top = int(counts.argmax())
    if counts[top] < MAJORITY_SHARE * len(y_pred):
        return None
    return (f"note: the model predicts {class_names[top]} for {counts[top]} of {len(y_pred)} {what} (balanced "
            f"accuracy {_balanced_accuracy(y_true, y_pred):.3f}, chance {1 / len(class_names):.3f}): it has learnt "
            "the majority class, not the classes; try --class-weight balanced --monitor val_balanced_accuracy, "
            "more epochs or pretrained weights")


def outside_greyed(y_true, probs, probs_greyed) -> dict:
    """How much the decisions depend on the image outside the lesion: labels (N,), the original probabilities
    (N,K) and those of the same images with everything outside the lesion mask greyed (N,K) -> accuracy and
    balanced accuracy on the greyed images, their change from the original (greyed - original) and the share of
    images whose predicted class did not change. A model that reads the lesion loses little."""
    y_true = np.asarray(y_true)
    before, after = np.asarray(probs).argmax(axis=1), np.asarray(probs_greyed).argmax(axis=1)
    acc, bal = float(np.mean(after == y_true)), _balanced_accuracy(y_true, after)
    return {"accuracy": acc, "accuracy_change": acc - float(np.mean(before == y_true)),
            "balanced_accuracy": bal, "balanced_accuracy_change": bal - _balanced_accuracy(y_true, before),
            "unchanged": float(np.mean(before == after))}
