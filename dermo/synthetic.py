"""`python -m dermo.synthetic OUT --task binary|multiclass [--n N] [--seed S]` — see dermo.data.synthetic."""
import sys

from dermo.data.synthetic import main

if __name__ == "__main__":
    sys.exit(main())
