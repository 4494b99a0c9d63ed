"""Run configuration: one set of defaults, typed values, clear errors."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from dataclasses import replace

import pytest

from dmnreid.config import CHOICES, PASSES, ConfigError, RunConfig, Schedule, defaults
from dmnreid.data_prep.synthetic import CAMERAS_PER_ID

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
    cameras = {"market1501": 6, "dukemtmc": 8, "msmt17": 15, "mars": 6}
    for name, local_epochs in epochs.items():
        values = tomllib.loads((PYPROJECT.parent / "conf" / f"{name}.toml").read_text())
        cfg = RunConfig.from_mapping(values)
        assert (cfg.dataset, cfg.arch, cfg.local_epochs) == (name, "resnet50", local_epochs)
        assert (cfg.image_height, cfg.image_width) == (256, 128)
        # in passes, the walks they had in hops: 4 cameras' worth, evaluated after each pass
        plan = cfg.schedule(cameras[name])
        assert (plan.walk, plan.eval_every) == (4 * cameras[name], cameras[name])


def test_hops_default_to_passes_over_the_cameras():
    cfg = RunConfig()
    assert cfg.schedule(6) == Schedule(walk=18, incremental=18, eval_every=6, recluster_every=18)
    assert cfg.schedule(15) == Schedule(walk=45, incremental=45, eval_every=15,
                                        recluster_every=45)
    assert cfg.schedule(60).walk == 180 and cfg.incremental_walk
    # FedAvg trains every camera each round: a pass is one round, whatever the cameras
    fedavg = replace(cfg, walk_strategy="fedavg")
    assert fedavg.schedule(6) == fedavg.schedule(60) == Schedule(3, 3, 1, 3)
    # the same phases as hops given as numbers, converted to rounds as they always were
    assert replace(fedavg, walk_hops=18, incremental_hops=18, eval_every=6).schedule(6) == \
        fedavg.schedule(6)


def test_evaluation_and_clustering_scale_with_the_cameras():
    """A 60-camera run evaluates once per pass (2 times within a phase), not every 6 hops."""
    evaluated = RunConfig().schedule(60).eval_every
    assert [hop for hop in range(1, 180) if hop % evaluated == 0] == [60, 120]
    cfg = RunConfig.from_mapping({"eval-passes": 2, "recluster-passes": 1})
    assert cfg.schedule(15) == Schedule(walk=45, incremental=45, eval_every=30,
                                        recluster_every=15)
    fedavg = replace(cfg, walk_strategy="fedavg")
    assert fedavg.schedule(15) == Schedule(walk=3, incremental=3, eval_every=2,
                                           recluster_every=1)
    assert RunConfig.from_mapping({"incremental-passes": 0}).schedule(15).incremental == 0
    assert not RunConfig.from_mapping({"incremental-passes": 0}).incremental_walk


def test_hops_given_as_numbers_win_over_default_passes():
    cfg = RunConfig.from_mapping({"walk-hops": 10, "incremental-hops": 0, "eval-every": 5,
                                  "recluster-every": 4})
    assert cfg.schedule(15) == Schedule(walk=10, incremental=0, eval_every=5, recluster_every=4)
    assert not cfg.incremental_walk


@pytest.mark.parametrize("hops", sorted(PASSES))
def test_hops_beside_changed_passes_are_refused_naming_both(hops: str):
    passes = PASSES[hops]
    with pytest.raises(ConfigError) as err:
        RunConfig.from_mapping({RunConfig.key(hops): 12, RunConfig.key(passes): 2})
    assert f"{RunConfig.key(hops)} = 12 and {RunConfig.key(passes)} = 2 both set" in \
        str(err.value)


def test_a_config_saved_before_the_passes_keeps_its_hops(tmp_path: Path):
    """A run's config.json from before the passes keys (hops as numbers, no passes keys) is
    what resume-from reads: its phases stay as they were, on any number of cameras."""
    from dmnreid.run_dir import RunDir
    from dmnreid.server_app import resolve_config

    before = {**{k: v for k, v in defaults().items() if not k.endswith("-passes")},
              "walk-hops": 18, "incremental-hops": 18, "eval-every": 6, "recluster-every": 0}
    for incremental, plan in ((18, Schedule(18, 18, 6, 18)), (0, Schedule(18, 0, 6, 0))):
        run = RunDir(tmp_path / f"run-{incremental}")
        run.write_json("config.json", {**before, "incremental-hops": incremental})
        resumed = resolve_config(RunConfig(resume_from=str(run.path)))
        assert resumed.schedule(15) == plan
        assert resumed.incremental_walk == bool(incremental)


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
    ({"walk-hops": 0}, "walk-hops"),
    ({"walk-passes": 0}, "walk-passes"),
    ({"eval-every": 0}, "eval-every"),
    ({"incremental-hops": -2}, "incremental-hops"),
    ({"recluster-passes": -1}, "recluster-passes"),
    ({"synthetic-cameras-per-id": "normal"}, "synthetic-cameras-per-id"),
    ({"synthetic-min-cameras-per-id": 0}, "synthetic-min-cameras-per-id"),
    ({"synthetic-max-cameras-per-id": 7}, "synthetic-max-cameras-per-id"),
    ({"synthetic-max-cameras-per-id": 1}, "synthetic-max-cameras-per-id"),
    ({"synthetic-min-cameras-per-id": 5, "synthetic-max-cameras-per-id": 4},
     "synthetic-min-cameras-per-id"),
    ({"synthetic-ids-per-camera": 50, "synthetic-train-ids": 200}, "synthetic-ids-per-camera"),
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


def test_synthetic_layout_settings():
    assert CHOICES["synthetic_cameras_per_id"] == CAMERAS_PER_ID  # the generator's choices
    cfg = RunConfig.from_mapping({"synthetic-cameras": 15, "synthetic-cameras-per-id": "poisson",
                                  "synthetic-min-cameras-per-id": 1,
                                  "synthetic-max-cameras-per-id": 15,
                                  "synthetic-ids-per-camera": 67})
    assert (cfg.synthetic_min_cameras_per_id, cfg.synthetic_ids_per_camera) == (1, 67)
    with pytest.raises(ConfigError, match="synthetic-ids-per-camera = 67 and "
                                          "synthetic-train-ids = 99 both set"):
        RunConfig.from_mapping({"synthetic-ids-per-camera": 67, "synthetic-train-ids": 99})
