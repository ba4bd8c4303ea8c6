"""Devices line and unused-GPU warning, --jit-compile resolution, TF_CONFIG parsing (no training here)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dermo.errors import DermoError
from dermo.training.devices import GPU_INSTALL, device_lines, resolve_jit
from dermo.training.workers import SINGLE, WorkerError, this_worker

ROOT = Path(__file__).resolve().parents[1]


def test_device_line_and_one_warning_line_for_an_unused_gpu():
    assert device_lines(["CPU:0"], []) == [f"devices: {__import__('keras').backend.backend()} on CPU:0"]
    lines = device_lines(["CPU:0"], ["NVIDIA H100 80GB HBM3"])
    assert len(lines) == 2 and lines[1].startswith("warning: this machine has 1 GPU(s) (NVIDIA H100 80GB HBM3)")
    assert "\n" not in lines[1] and "pip install" in lines[1]
    assert len(device_lines(["GPU:0 (NVIDIA H100 80GB HBM3)"], ["NVIDIA H100 80GB HBM3"])) == 1


def test_gpu_install_commands_match_the_pinned_versions():
    pins = dict(re.findall(r"^([a-z]+)==([\d.]+)", (ROOT / "requirements.txt").read_text(), re.M))
    assert f'tensorflow[and-cuda]=={pins["tensorflow"]}' in GPU_INSTALL["tensorflow"]
    assert f'jax[cuda12]=={pins["jax"]}' in GPU_INSTALL["jax"] and pins["jax"] == pins["jaxlib"]
    readme = (ROOT / "docs" / "usage.md").read_text()                  # the README links its GPU section
    assert f'"tensorflow[and-cuda]=={pins["tensorflow"]}"' in readme and f'"jax[cuda12]=={pins["jax"]}"' in readme


def test_jit_auto_is_on_with_a_gpu_or_jax_and_off_for_tensorflow_on_a_cpu():
    assert resolve_jit("auto", ["GPU:0"], "tensorflow") and resolve_jit("auto", ["CUDA:0 (H100)"], "jax")
    assert not resolve_jit("auto", ["CPU:0"], "tensorflow") and resolve_jit("auto", ["CPU:0"], "jax")
    assert resolve_jit("on", ["CPU:0"], "tensorflow") and not resolve_jit("off", ["GPU:0"], "jax")


def _config(task_type="worker", index=0, workers=2, chief=0):
    cluster = {"worker": [f"127.0.0.1:{1000 + i}" for i in range(workers)]}
    if chief:
        cluster["chief"] = ["127.0.0.1:999"]
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})}


def test_tf_config_names_the_chief():
    assert this_worker("auto", {}) is SINGLE
    w0, w1 = this_worker("multiworker", _config(index=0)), this_worker("multiworker", _config(index=1))
    assert (w0.chief, w0.count, w1.chief, w1.index) == (True, 2, False, 1)
    c = this_worker("multiworker", _config("chief", 0, chief=1))
    assert c.chief and c.count == 3 and not this_worker("multiworker", _config("worker", 0, chief=1)).chief


@pytest.mark.parametrize("env,words", [({}, "needs TF_CONFIG"), ({"TF_CONFIG": "{not json"}, "not valid"),
                                       (_config(index=2), "not in the cluster"),
                                       (_config("ps", 0), "chief")])
def test_bad_tf_config_is_one_line(env, words):
    with pytest.raises(WorkerError) as e:
        this_worker("multiworker", env)
    assert isinstance(e.value, DermoError) and words in str(e.value) and "\n" not in str(e.value)
