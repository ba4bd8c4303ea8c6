"""The one error type users see, and the wrapper that turns it into a one-line message."""
from __future__ import annotations

import sys


class DermoError(Exception):
    """A problem with the user's input or setup; str() is one line naming the file/option and the fix."""


def run_cli(fn, prog: str) -> int:
    """Call fn(); a DermoError or Ctrl-C becomes one line on stderr and exit status 2 (130 for Ctrl-C).

    The CLIs import TensorFlow lazily, inside fn: its start-up lines (CUDA probing, oneDNN, CPU features) and
    the library log lines a user cannot act on are silenced here (dermo.console), so that an error really is the
    one line on stderr (set TF_CPP_MIN_LOG_LEVEL=0 to see TensorFlow's)."""
    from dermo.console import quiet_backend_logs, quiet_python_logs

    quiet_backend_logs()
    quiet_python_logs()
    try:
        return fn()
    except DermoError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        if e.name not in ("tensorflow", "jax"):
            raise
        print(f"{prog}: error: Keras' {e.name} backend is not installed: pip install 'dermo[tf]' (TensorFlow) or "
              "'dermo[jax]' with KERAS_BACKEND=jax (or python3 -m pip install -r requirements.txt)", file=sys.stderr)
        return 2
