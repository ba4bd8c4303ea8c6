"""The custom train_step under tf.distribute.MirroredStrategy on two logical CPU devices (subprocess:
logical devices must be configured before TensorFlow initialises)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, {root!r})
    import train
    from dermo.data.synthetic import write_dataset
    data = write_dataset({data!r}, "binary", n=32, seed=5, size=72, workers=1)
    sys.exit(train.main(["--data", str(data), "--task", "binary", "--image-size", "64", "--batch-size", "8",
                         "--epochs", "2", "--weights", "none", "--workers", "1", "--out", {out!r},
                         "--strategy", "mirrored"]))
""")


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpu_replicas(tmp_path):
    out = tmp_path / "run"
    code = SCRIPT.format(root=str(ROOT), data=str(tmp_path / "data"), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                          env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MirroredStrategy, 2 replica(s)" in proc.stdout
    h = pd.read_csv(out / "history.csv")
    assert len(h) == 2
    for col in ("loss", "cls_loss", "center_loss", "cskl_loss", "mask_loss"):
        assert h[col].notna().all() and (h[col] != 0).all(), col
    assert (out / "model.keras").exists()
