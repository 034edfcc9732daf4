"""``python -m fabric_core`` runs the ``fabric`` command line."""

import sys

from fabric_core.cli import main

sys.exit(main())
