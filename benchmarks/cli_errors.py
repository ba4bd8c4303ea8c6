"""How fast a mistaken command is answered: each command below in a fresh process (as a user types it), its one
error line and the seconds until it exits; whether TensorFlow was imported by then.

    python3 benchmarks/cli_errors.py [--repeat 3]

Goal (issue 34): data, path and option mistakes answered before TensorFlow loads (well under a second, against
~8 s with TensorFlow). The tests check the no-TensorFlow part (tests/test_cli.py); the seconds are measured here.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [["train", "--epochs", "abc"], ["train", "--data", "nowhere", "--epochs", "0"],
         ["train", "--backbone", "lite9", "--data", "x"], ["evaluate", "--run", "runs/nothere"],
         ["evaluate", "--run", "README.md", "--tta", "0"], ["evaluate", "--model", "gone.keras"],
         ["export", "--run", "runs/nothere", "--format", "onnx"]]
PROBE = ("import sys\nfrom dermo.cli import main\ntry:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n"
         "    rc = e.code\nprint('tensorflow imported' if 'tensorflow' in sys.modules else 'no tensorflow', "
         "file=sys.stderr)\nsys.exit(rc)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    print("| command | seconds (best of {}) | TensorFlow | the line |".format(args.repeat))
    print("|---|---|---|---|")
    for case in CASES:
        best, out = float("inf"), None
        for _ in range(args.repeat):
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", PROBE, *case], cwd=ROOT, capture_output=True, text=True)
            best = min(best, time.perf_counter() - start)
        lines = out.stderr.strip().splitlines()
        print(f"| dermo {' '.join(case)} | {best:.2f} | {lines[-1]} | {lines[0] if len(lines) > 1 else ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
