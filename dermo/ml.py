"""`python -m dermo.ml --task T --data DIR|CSV --out DIR` — see dermo.experiments.ml."""
import sys

from dermo.experiments.ml import main

if __name__ == "__main__":
    sys.exit(main())
