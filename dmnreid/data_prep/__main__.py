"""Entry point of ``python -m dmnreid.data_prep``."""

import sys

from dmnreid.data_prep.cli import main

sys.exit(main())
