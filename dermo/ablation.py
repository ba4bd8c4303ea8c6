"""`python -m dermo.ablation [train.py options] --out DIR` — see dermo.experiments.ablation."""
import sys

from dermo.experiments.ablation import main

if __name__ == "__main__":
    sys.exit(main())
