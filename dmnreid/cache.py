"""Where generated data, partitions and pretrained weights are cached between runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """``$DMNREID_CACHE``, or ``~/.cache/dmnreid``."""
    return Path(os.environ.get("DMNREID_CACHE", Path.home() / ".cache" / "dmnreid"))
