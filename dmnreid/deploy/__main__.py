"""``python -m dmnreid.deploy``: credentials for a camera network (see docs/deployment.md)."""

import sys

from dmnreid.deploy.cli import main

sys.exit(main())
