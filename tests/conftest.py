"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmnreid.data_prep.synthetic import SyntheticConfig, generate


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset (3 cameras, distractors and junk included), per module."""
    root = tmp_path_factory.mktemp("syn") / "net"
    generate(root, SyntheticConfig(cameras=3, train_ids=10, test_ids=6, distractors=3, junk=1),
             progress=False)
    return root
