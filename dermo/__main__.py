"""`python -m dermo COMMAND ...`: the `dermo` command (dermo.cli)."""
import sys

from dermo.cli import main

sys.exit(main())
