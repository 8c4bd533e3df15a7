"""``python -m negmine.cli``: the `negmine` command line (as torchrun runs it, too)."""

import sys

from negmine.cli import main

sys.exit(main())
