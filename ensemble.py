"""`python3 ensemble.py ...` is `dermo ensemble ...`: the code is dermo/evaluation/ensemble.py."""
import sys

from dermo.evaluation.ensemble import main

if __name__ == "__main__":
    sys.exit(main())
