"""python -m dermo.preprocessing INPUT OUTPUT [--size N] ...: see dermo.preprocessing.cli."""
import sys

from dermo.preprocessing.cli import main

sys.exit(main())
