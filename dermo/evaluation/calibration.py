"""Temperature scaling of a trained run (docs/method.md §7, §8): fit T on labelled predictions of the model's
own (uncalibrated) probabilities and store it with the model, so that Predictor, dermo evaluate, dermo ensemble and
dermo.export all give softmax(log p / T).

    temperature_record(labels, raw_probs, fitted_on, tta)  fit T; {"temperature", "fitted_on", "n", "tta",
                                                           "bins", "before": {ece, brier, nll}, "after": ...}
    store_temperature(run_dir, record)   the record's T into the contract of model.keras and model.h5, and the
                                         whole record as "calibration" in config.json

dermo evaluate --calibrate fits on a run's val split; cross-validation can fit one T on its out-of-fold
predictions and store it in every fold's run with the same two calls.
"""
from __future__ import annotations

from pathlib import Path

from dermo import metrics
from dermo.metrics.calibration import BINS
from dermo.run import folder as runs
from dermo.run.contract import update_contract

CALIBRATION_KEY = "calibration"           # config.json entry


def _rounded(d: dict) -> dict:
    return {k: round(float(v), 6) for k, v in d.items()}


def temperature_record(labels, raw_probs, fitted_on: str, tta: int = 1) -> dict:
    """Fit a temperature on labelled raw probabilities (N,K) and report ECE, Brier and NLL before and after."""
    temperature = round(metrics.fit_temperature(labels, raw_probs), 6)      # the T stored is the T scored
    after = metrics.apply_temperature(raw_probs, temperature).astype("float32")   # exactly what gets written
    return {"temperature": temperature, "fitted_on": fitted_on, "n": int(len(labels)),
            "tta": int(tta), "bins": BINS,
            "before": _rounded(metrics.calibration_metrics(labels, raw_probs)),
            "after": _rounded(metrics.calibration_metrics(labels, after))}


def store_temperature(run_dir, record: dict) -> list[Path]:
    """Write record["temperature"] into the run's model files' contracts and the record into config.json;
    returns the files changed."""
    run_dir = Path(run_dir)
    changed = []
    for name in (runs.MODEL_KERAS, runs.MODEL_H5):
        if (run_dir / name).is_file():
            update_contract(run_dir / name, {"temperature": record["temperature"]})
            changed.append(run_dir / name)
    config = runs.read_json(run_dir / runs.CONFIG)
    config[CALIBRATION_KEY] = record
    runs.write_json(run_dir / runs.CONFIG, config)
    return changed + [run_dir / runs.CONFIG]
