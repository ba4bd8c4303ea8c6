"""`python3 evaluate.py ...` is `dermo evaluate ...`: the code is dermo/evaluation/cli.py."""
import sys

from dermo.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
