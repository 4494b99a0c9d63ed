"""Entry point of ``python -m dmnreid.experiments``."""

import sys

from dmnreid.experiments.cli import main

sys.exit(main())
