"""`python3 train.py ...` is `dermo train ...`: the code is dermo/training/cli.py."""
import sys

from dermo.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
