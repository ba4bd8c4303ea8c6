"""`python -m dermo.preprocess` — the same command as `python -m dermo.preprocessing` (dermo.preprocessing.cli)."""
import sys

from dermo.preprocessing.cli import main

if __name__ == "__main__":
    sys.exit(main())
