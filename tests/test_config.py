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


@pytest.mark.parametrize(("values", "named"), [
    ({"lr-head": -0.1}, "lr-head"),
    ({"lr-head": float("inf")}, "lr-head"),
    ({"lr-backbone": float("nan")}, "lr-backbone"),
    ({"style-lr-generator": float("inf")}, "style-lr-generator"),
    ({"momentum": 1.0}, "momentum"),
    ({"momentum": -0.5}, "momentum"),
    ({"weight-decay": -1e-4}, "weight-decay"),
    ({"seed": -1}, "seed"),
    ({"node-timeout": 0.0}, "node-timeout"),
    ({"node-timeout": -5.0}, "node-timeout"),
    ({"image-height": 100_000}, "image-height"),
    ({"image-width": 4}, "image-width"),
    ({"top1-max-distance": float("inf")}, "top1-max-distance"),
    ({"top1-max-distance": float("nan")}, "top1-max-distance"),
    ({"synthetic-cameras": 1}, "synthetic-cameras"),
    ({"synthetic-style-strength": 1.5}, "synthetic-style-strength"),
    ({"synthetic-style-strength": -0.1}, "synthetic-style-strength"),
    ({"style-generator-filters": 10**6}, "style-generator-filters"),
    ({"target-camera": 7}, "target-camera"),
    ({"target-camera": 0}, "target-camera"),
    ({"synthetic-train-ids": 9000, "synthetic-test-ids": 1000}, "synthetic-train-ids"),
    ({"run-name": "../elsewhere"}, "run-name"),
    ({"evaluate-run": "/runs/a", "resume-from": "/runs/b"}, "evaluate-run"),
])
def test_unusable_values_are_refused_naming_the_key_and_what_it_allows(values, named):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_mapping(values)
    message = str(err.value)
    assert message.startswith(named) or f" {named}" in message or f"({named})" in message, \
        message
    assert "--" not in message  # a config key, not a command-line flag


def test_ranges_say_what_is_allowed():
    with pytest.raises(ConfigError, match=r"momentum = 1\.0: must be a finite number in "
                                          r"\[0, 1\)"):
        RunConfig.from_mapping({"momentum": 1.0})
    with pytest.raises(ConfigError, match=r"node-timeout = 0\.0: must be a finite number > 0"):
        RunConfig.from_mapping({"node-timeout": 0})
    with pytest.raises(ConfigError, match=r"cameras 1\.\.6"):
        RunConfig.from_mapping({"target-camera": 7})
    # the limits themselves are allowed
    edge = RunConfig.from_mapping({"momentum": 0.0, "lr-head": 0.0, "seed": 0,
                                   "synthetic-cameras": 2, "target-camera": 2,
                                   "synthetic-style-strength": 1.0, "image-height": 16})
    assert edge.synthetic_cameras == edge.target_camera == 2
    # a real dataset's cameras are only known once it is read
    assert RunConfig.from_mapping({"dataset": "msmt17", "data-root": "/d",
                                   "target-camera": 15}).target_camera == 15
