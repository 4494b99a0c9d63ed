"""The run directory keeps only usable states: a NaN never replaces the last good checkpoint,
and a damaged file is named when a run resumes or is re-evaluated."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dmnreid.checks import StateError
from dmnreid.config import RunConfig
from dmnreid.reid.model import build_model, walking_state
from dmnreid.run_dir import CHECKPOINT, FINAL_MODEL, RunDir
from dmnreid.server_app import resolve_config


def test_a_non_finite_state_never_replaces_the_checkpoint(tmp_path: Path):
    run = RunDir(tmp_path)
    good = walking_state(build_model("resnet18", None))
    run.save_checkpoint(good, {"phase": "walk", "hop": 3})
    bad = {k: v.clone() for k, v in good.items()}
    next(v for v in bad.values() if v.is_floating_point()).fill_(float("nan"))
    with pytest.raises(StateError, match="checkpoint weights: non-finite"):
        run.save_checkpoint(bad, {"phase": "walk", "hop": 4})
    with pytest.raises(StateError, match="final model: non-finite"):
        run.save_final_model(bad, {})
    state, info, head = run.load_checkpoint(like=good)
    assert info["hop"] == 3 and head is None
    assert all(torch.equal(state[k], good[k]) for k in good)
    assert not (tmp_path / FINAL_MODEL).exists()


def test_damaged_or_foreign_checkpoints_are_named(tmp_path: Path):
    run = RunDir(tmp_path)
    like = walking_state(build_model("resnet18", None))
    (tmp_path / CHECKPOINT).write_bytes(b"truncated")
    with pytest.raises(StateError, match=r"latest.pt is damaged or not a checkpoint"):
        run.load_checkpoint(like=like)
    torch.save({"weights": 1}, tmp_path / CHECKPOINT)
    with pytest.raises(StateError, match="not a checkpoint of this project"):
        run.load_checkpoint(like=like)
    run.save_checkpoint(walking_state(build_model("resnet34", None)), {"hop": 0})
    with pytest.raises(StateError, match=r"latest\.pt: (wrong shape or dtype|other)"):
        run.load_checkpoint(like=like)
    (tmp_path / FINAL_MODEL).write_bytes(b"")
    with pytest.raises(StateError, match=r"final\.pt is damaged"):
        run.load_final_model()


def test_a_resumed_run_keeps_its_saved_settings_and_a_bad_path_is_named(tmp_path: Path):
    saved = RunConfig(walk_hops=5, seed=7)
    run = RunDir(tmp_path / "run")
    run.write_json("config.json", saved.to_mapping())
    resumed = resolve_config(RunConfig(resume_from=str(run.path), walk_hops=9))
    assert (resumed.walk_hops, resumed.seed, resumed.resume_from) == (5, 7, str(run.path))
    with pytest.raises(FileNotFoundError, match=r"resume-from .*not a run directory"):
        resolve_config(RunConfig(resume_from=str(tmp_path / "nothing")))
    assert not (tmp_path / "nothing").exists()
