"""A finished run's final model rebuilt outside Flower, as the server scores it, so a run can
be inspected after the fact (notebooks/explore_run.ipynb)."""

from __future__ import annotations

from dmnreid.config import RunConfig
from dmnreid.reid.model import ReidNet, build_model, load_walking_state
from dmnreid.run_dir import RunDir
from dmnreid.server_app import pretrained_file


def final_model(run: RunDir) -> tuple[RunConfig, ReidNet]:
    """The run's saved settings and its model: the pretrained stem under checkpoints/final.pt's
    walking weights. With bn-mode = "camera" its BN statistics are still the pretrained ones;
    ``Evaluator.embed`` estimates each camera's own, as the run did."""
    cfg = RunConfig.from_mapping(run.read_json("config.json"))
    state, _ = run.load_final_model()
    model = build_model(cfg.arch, pretrained_file(cfg), 1, cfg.freeze_stem)
    load_walking_state(model, state, cfg.freeze_stem, cfg.bn_mode)
    return cfg, model
