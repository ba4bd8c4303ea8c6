"""benchmarks/throughput.py runs end to end with tiny settings on the CPU (the CI check of the GPU benchmark)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_prints_its_table_with_tiny_settings():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--backend", "tensorflow",
                           "--size", "32", "--batch", "2", "--steps", "2", "--precision", "fp32", "--jit", "off",
                           "--workers", "2", "--pipeline-images", "8"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "devices: tensorflow on CPU:0" in out
    assert re.search(r"^\| plain \| fp32 \| off \| [\d.]+ \|  \|$", out, re.M), out
    assert re.search(r"^\| cam \| fp32 \| off \| [\d.]+ \| [\d.]+ \|$", out, re.M), out
    assert re.search(r"^\| input pipeline \(2 workers, 8 images\) \| \| \| [\d.]+ \| \|$", out, re.M), out
    assert re.search(r"^pipeline / training: [\d.]+ ", out, re.M), out
