"""``python -m betavae_lib.sweep``: the command line (:mod:`betavae_lib.sweep.cli`)."""

import sys

from .cli import main

sys.exit(main())
