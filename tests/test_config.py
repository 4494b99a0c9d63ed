"""Run configuration: one set of defaults, typed values, clear errors."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest

from dmnreid.config import ConfigError, RunConfig, defaults

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_lists_every_key_with_the_same_default():
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert config == defaults()
    assert RunConfig.from_mapping(config) == RunConfig()


def test_readme_documents_every_key():
    readme = (PYPROJECT.parent / "README.md").read_text()
    undocumented = [key for key in defaults() if f"`{key}`" not in readme]
    assert undocumented == []


def test_values_are_typed_and_checked():
    cfg = RunConfig.from_mapping({"walk-hops": 4, "lr-head": 1, "freeze-stem": "false"})
    assert cfg.walk_hops == 4 and cfg.lr_head == 1.0 and cfg.freeze_stem is False
    with pytest.raises(ConfigError, match="walk-hops"):
        RunConfig.from_mapping({"walk-hops": "many"})
    with pytest.raises(ConfigError, match="unknown run-config key"):
        RunConfig.from_mapping({"walk-hop": 3})
    with pytest.raises(ConfigError, match="walk-order"):
        RunConfig.from_mapping({"walk-order": "spiral"})
    with pytest.raises(ConfigError, match="data-root"):
        RunConfig.from_mapping({"dataset": "market1501"})
    with pytest.raises(ConfigError, match="batch-size"):
        RunConfig.from_mapping({"batch-size": 1})


def test_conf_variants_are_valid_paper_settings():
    epochs = {"market1501": 6, "dukemtmc": 8, "msmt17": 3, "mars": 6}
    for name, local_epochs in epochs.items():
        values = tomllib.loads((PYPROJECT.parent / "conf" / f"{name}.toml").read_text())
        cfg = RunConfig.from_mapping(values)
        assert (cfg.dataset, cfg.arch, cfg.local_epochs) == (name, "resnet50", local_epochs)
        assert (cfg.image_height, cfg.image_width) == (256, 128)
