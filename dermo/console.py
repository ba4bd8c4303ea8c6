"""What a user of the commands sees on the terminal: help that shows every default, the options given on the
command line, and quiet libraries (stage 0: no TensorFlow, Keras or NumPy import here).

    parser(prog, doc)        the commands' argparse parser: HelpFormatter, and a mistake answered in one line
    HelpFormatter            argparse formatter: the module docstring as written, "(default: X)" after each help
    given_options(p, argv)   the dests the user typed (not defaults): --resume compares only these
    quiet_backend_logs()     before TensorFlow is imported: its C++ start-up lines off (all of them, the cuInit
                             error included, where no GPU driver is loaded; INFO only where one is)
    quiet_python_logs()      Keras' HDF5 "legacy" advice and TensorFlow's retracing warnings off; everything
                             else (the user's own warnings included) stays visible
    library_chatter_held()   a block whose native stderr (TFLite, XLA) is shown only if it fails
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path

NOT_GIVEN = object()


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; every option's help followed by its default, unless the help already says
    what the default is ("default ..." in the text) or the option takes no value."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.nargs == 0 or action.default is argparse.SUPPRESS or "default" in text or action.required
                or action.option_strings == []):
            return text
        return f"{text} (default: {action.default})".strip()


class OneLineParser(argparse.ArgumentParser):
    """A mistake on the command line is one line — what is wrong and where the options are listed — not the
    usage block first (argparse's own error() prints up to 34 lines of usage before the message)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    return OneLineParser(prog=prog, description=doc, formatter_class=HelpFormatter)


def given_options(p: argparse.ArgumentParser, argv) -> set[str]:
    """The dests whose option appears in `argv` (whatever its value, also when it equals the default)."""
    saved = {a.dest: a.default for a in p._actions}
    try:
        for a in p._actions:
            a.default = NOT_GIVEN
        seen = p.parse_args(argv)
    finally:
        for a in p._actions:
            a.default = saved[a.dest]
    return {k for k, v in vars(seen).items() if v is not NOT_GIVEN}


def gpu_driver_present() -> bool:
    """An NVIDIA or ROCm kernel driver is loaded: only then can a backend find a GPU."""
    return (Path("/proc/driver/nvidia/gpus").is_dir() or any(Path("/dev").glob("nvidia[0-9]*"))
            or Path("/dev/kfd").exists())


def quiet_backend_logs() -> None:
    """TensorFlow's C++ log level, unless the user set one: 3 without a GPU driver (the CUDA probe's "failed
    call to cuInit" error line says nothing a CPU user can act on), else 1 (INFO off, warnings and errors on)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if gpu_driver_present() else "3")


class _Drop(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f in message for f in self.fragments)


def quiet_python_logs() -> None:
    """Library log lines a dermo user cannot act on: Keras' advice against the HDF5 format of model.h5 (dermo
    writes model.keras too; model.h5 is for older tools), TensorFlow's tf.function retracing warnings (each model
    of a cross-validation or ablation traces its own steps) and tf2onnx's conversion chatter."""
    logging.getLogger("absl").addFilter(_Drop("This file format is considered legacy"))
    logging.getLogger("tensorflow").addFilter(_Drop("triggered tf.function retracing"))
    for name in ("tf2onnx", "tf2onnx.tfonnx", "tf2onnx.optimizer", "tf2onnx.shape_inference"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def library_chatter_held():
    """Within: what native code writes to file descriptor 2 (TensorFlow Lite's converter and interpreter, XLA's
    absl logging) and TensorFlow's Python warnings are held back; they are written out only if the block fails,
    so a working conversion prints nothing the user cannot act on and a failing one keeps its diagnostics."""
    sys.stderr.flush()
    saved = os.dup(2)
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        tf_logger.setLevel(logging.ERROR)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            tf_logger.setLevel(level)
            os.dup2(saved, 2)
            os.close(saved)
