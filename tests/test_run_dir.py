"""The run directory keeps only usable states: a NaN never replaces the last good checkpoint,
and a damaged file is named when a run resumes or is re-evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dmnreid.checks import StateError
from dmnreid.config import RunConfig
from dmnreid.reid.model import build_model, walking_state
from dmnreid.rounds import RoundsGrid
from dmnreid.run_dir import CHECKPOINT, FINAL_MODEL, RunDir
from dmnreid.server_app import Network, Session, resolve_config
from dmnreid.strategies.roster import Roster


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


def test_record_counts_are_kept_not_reread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A checkpoint after every hop asks how many records hops.jsonl and evaluations.jsonl
    hold: counted from the file once, then kept as records are appended or dropped, so a
    run's bookkeeping grows with its hops, not with their square. A resumed run (another
    RunDir on the folder) counts what the file holds."""
    run = RunDir(tmp_path)
    for hop in range(3):
        run.append("hops.jsonl", {"hop": hop})
    assert run.count_lines("hops.jsonl") == 3 and run.count_lines("evaluations.jsonl") == 0
    opened: list[str] = []  # the mode of every file opened from here on
    real_open = Path.open

    def recording_open(self: Path, mode: str = "r", *args, **kwargs):
        opened.append(mode)
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", recording_open)
    for hop in range(3, 50):
        run.append("hops.jsonl", {"hop": hop})
        assert run.count_lines("hops.jsonl") == hop + 1
    run.append("evaluations.jsonl", {"hop": 49})
    assert run.count_lines("evaluations.jsonl") == 1
    assert "r" not in opened and opened.count("a") == 48
    monkeypatch.undo()
    run.truncate_lines("hops.jsonl", 20)  # a resume drops what its checkpoint does not hold
    assert run.count_lines("hops.jsonl") == 20
    run.append("hops.jsonl", {"hop": 20})
    assert run.count_lines("hops.jsonl") == 21 == len(run.read_lines("hops.jsonl"))
    again = RunDir(tmp_path)
    assert again.count_lines("hops.jsonl") == 21 and again.count_lines("evaluations.jsonl") == 1


def test_network_json_is_written_when_the_roster_changes(tmp_path: Path):
    """network.json grows with the failures and returns: it is written when one happens, not
    after every hop; rounds.json and messages.json (a fixed size) every time."""
    roster = Roster({1: 11, 2: 12}, retries=0)
    session = Session(grid=RoundsGrid(None, 0.5), cfg=RunConfig(), run=RunDir(tmp_path),
                      network=Network([(11, 1), (12, 2)], {1: 5, 2: 7}), roster=roster,
                      model=None, evaluator=None, base_config={})
    network = tmp_path / "network.json"
    session.save_network()
    assert json.loads(network.read_text()) == {"cameras": {"1": 5, "2": 7},
                                               "nodes": {"1": 11, "2": 12}, "left_out": {},
                                               "events": []}
    network.unlink()
    (tmp_path / "rounds.json").unlink()
    session.save_network()  # a hop that changed nothing
    assert not network.exists() and (tmp_path / "rounds.json").is_file()
    roster.failed(2, "walk", "node 12 did not answer")
    session.save_network()
    saved = json.loads(network.read_text())
    assert saved["left_out"] == {"2": "node 12 did not answer"}
    assert [(e["camera"], e["event"]) for e in saved["events"]] == [(2, "failed")]
