"""Which devices the Keras backend trains on, whether a GPU sits unused, and the --jit-compile choice.

    backend_devices()    -> ["CPU:0"] or ["GPU:0 (NVIDIA H100 80GB HBM3)", ...] as the backend sees them
    nvidia_gpus()        -> the NVIDIA GPUs the machine has, from the driver (whatever Python packages exist)
    device_lines()       -> the line(s) dermo train prints: the devices, plus one warning line when a GPU is
                            present but the backend sees none (a CPU-only TensorFlow or jaxlib, or
                            CUDA_VISIBLE_DEVICES hiding it)
    resolve_jit(option, devices) -> bool: "on"/"off" as given; "auto" = on with a GPU; on a CPU, off under
                            TensorFlow (XLA's CPU step of EfficientNet is ~20x slower than TensorFlow's own
                            kernels) but on under JAX, whose only other mode runs op by op, slower still
                            (benchmarks/README.md)

TensorFlow is imported only under the TensorFlow backend, JAX only under JAX.
"""
from __future__ import annotations

import os
from pathlib import Path

import keras

GPU_INSTALL = {"tensorflow": 'pip install "tensorflow[and-cuda]==2.20.0"',
               "jax": 'pip install "jax[cuda12]==0.7.2"'}   # the versions of requirements.txt


def backend_devices() -> list[str]:
    """The devices the current Keras backend will place the model on."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        if not gpu_driver_present():
            return ["CPU:0"]         # asking TensorFlow would only log a cuInit error line
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            names = []
            for i, gpu in enumerate(gpus):
                detail = tf.config.experimental.get_device_details(gpu).get("device_name", "")
                names.append(f"GPU:{i}" + (f" ({detail})" if detail else ""))
            return names
        return ["CPU:0"]
    if backend == "jax":
        import jax

        return [f"{d.platform.upper()}:{d.id}" + (f" ({d.device_kind})" if d.platform != "cpu" else "")
                for d in jax.devices()]
    return ["CPU:0"]


def gpu_driver_present() -> bool:
    """An NVIDIA or ROCm kernel driver is loaded: only then can a backend find a GPU."""
    return bool(nvidia_gpus()) or Path("/dev/kfd").exists()


def uses_gpu(devices: list[str]) -> bool:
    return any(d.startswith(("GPU", "CUDA", "ROCM")) for d in devices)


def nvidia_gpus() -> list[str]:
    """NVIDIA GPUs known to the kernel driver (Linux), e.g. ["NVIDIA H100 80GB HBM3"]; [] without one."""
    root = Path("/proc/driver/nvidia/gpus")
    found = []
    if root.is_dir():
        for info in sorted(root.glob("*/information")):
            try:
                model = next((line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
                              if line.startswith("Model:")), "NVIDIA GPU")
            except OSError:
                model = "NVIDIA GPU"
            found.append(model)
    if not found and any(Path("/dev").glob("nvidia[0-9]*")):
        found.append("NVIDIA GPU")
    return found


def device_lines(devices: list[str] | None = None, hardware: list[str] | None = None) -> list[str]:
    """What dermo train prints about devices: one line, plus one warning line for a present but unused GPU."""
    backend = keras.backend.backend()
    devices = backend_devices() if devices is None else devices
    hardware = nvidia_gpus() if hardware is None else hardware
    lines = [f"devices: {backend} on {', '.join(devices)}"]
    if hardware and not uses_gpu(devices):
        hidden = " (CUDA_VISIBLE_DEVICES hides it)" if os.environ.get("CUDA_VISIBLE_DEVICES") == "" else ""
        lines.append(f"warning: this machine has {len(hardware)} GPU(s) ({hardware[0]}) but {backend} trains on "
                     f"the CPU{hidden}; install the CUDA build: {GPU_INSTALL.get(backend, '')} "
                     "(docs/usage.md: GPU installation)")
    return lines


def resolve_jit(option: str, devices: list[str], backend: str | None = None) -> bool:
    if option in ("on", "off"):
        return option == "on"
    return uses_gpu(devices) or (backend or keras.backend.backend()) == "jax"
