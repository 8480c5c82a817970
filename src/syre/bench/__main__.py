"""``python -m syre.bench list | run ID ... | table DIR``: the same as ``syre bench ...``."""
import sys

from .cli import main

sys.exit(main())
