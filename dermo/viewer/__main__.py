"""`python -m dermo.viewer`: the viewer's command line (dermo.viewer.cli)."""
import sys

from dermo.viewer.cli import main

sys.exit(main())
