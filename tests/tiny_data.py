"""A tiny synthetic camera network written as node folders, for node-side tests."""

from __future__ import annotations

from pathlib import Path

from dmnreid.data_prep.datasets import read_dataset
from dmnreid.data_prep.partition import write_partition
from dmnreid.data_prep.synthetic import SyntheticConfig, generate


def tiny_partition(root: Path, cameras: int, test_ids: int) -> Path:
    """6 training identities over ``cameras`` cameras, no distractors; returns the partition."""
    generate(root / "syn", SyntheticConfig(cameras=cameras, train_ids=6, test_ids=test_ids,
                                           distractors=0, junk=0), progress=False)
    write_partition(read_dataset("synthetic", root / "syn"), root / "parts", progress=False)
    return root / "parts"
