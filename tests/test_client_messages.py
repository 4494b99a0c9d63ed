"""A node names what is missing from a message instead of failing with a KeyError."""

from __future__ import annotations

import subprocess
import sys

import pytest
from flwr.app import ConfigRecord

from dmnreid.messages import required


def test_required_settings_are_named_with_the_message_type():
    config = ConfigRecord({"hop": 3, "run-key": "20261129-run", "alpha": 1.0, "flag": True})
    assert required(config, "hop", int, "train.walk") == 3
    assert required(config, "alpha", int, "query.triangle") == 1
    assert required(config, "run-key", str, "query.weights") == "20261129-run"
    with pytest.raises(ValueError, match=r"train\.walk message: config 'num-classes' is missing; "
                                         r"expected an integer"):
        required(config, "num-classes", int, "train.walk")
    with pytest.raises(ValueError, match="config 'flag' is True; expected an integer"):
        required(config, "flag", int, "train.walk")
    with pytest.raises(ValueError, match="config 'hop' is 3; expected a string"):
        required(config, "hop", str, "query.weights")
    with pytest.raises(ValueError, match=r"config 'x' is 2\.5"):
        required(ConfigRecord({"x": 2.5}), "x", int, "train.walk")


def test_clustering_rounds_start_without_torch():
    """In deployment every message starts a fresh ClientApp process: loading the app must not
    import torch (seconds per message), only the handlers that train or embed do."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, dmnreid.client_app, dmnreid.memory.protocol; "
         "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"],
        capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
