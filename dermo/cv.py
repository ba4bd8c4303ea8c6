"""`python -m dermo.cv --folds K --data DATA [train.py options] --out OUT` — see dermo.experiments.cv."""
import sys

from dermo.experiments.cv import main

if __name__ == "__main__":
    sys.exit(main())
