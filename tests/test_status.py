"""``python -m dmnreid.status``: the operator's view of a run directory, finished or being
written, and a clear error for a folder that is not one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dmnreid.status import main, run_status
from tests.conftest import TINY

WALK, INCREMENTAL = TINY["walk-hops"], TINY["incremental-hops"]


def test_a_finished_run(tiny_run, capsys: pytest.CaptureFixture):
    assert main([str(tiny_run["dir"])]) == 0
    text = capsys.readouterr().out
    assert "phase: finished" in text
    assert f"walk: hop {WALK}/{WALK}, step {WALK}/{WALK}" in text
    # one clustering per incremental hop (recluster-every = 1): a step each
    assert f"incremental: hop {INCREMENTAL}/{INCREMENTAL}" in text
    final = json.loads((tiny_run["dir"] / "metrics.json").read_text())["final"]
    assert f"mAP {final['mAP']:.1f}" in text and "resume" not in text
    messages = json.loads((tiny_run["dir"] / "messages.json").read_text())
    total = sum(m["bytes_sent"] + m["bytes_received"] for m in messages.values())
    assert f"{total / 1e6:,.1f} MB" in text


def test_a_run_being_written(tiny_run, tmp_path: Path, capsys: pytest.CaptureFixture):
    """The tiny run's files as they stood mid-walk: three hops written, the fourth line half
    written, two evaluations, no final model."""
    run = tmp_path / "20261208-000000-tiny"
    run.mkdir()
    for name in ("config.json", "network.json", "messages.json", "rounds.json"):
        shutil.copy(tiny_run["dir"] / name, run / name)
    lines = (tiny_run["dir"] / "hops.jsonl").read_text().splitlines()
    (run / "hops.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])
    evaluations = (tiny_run["dir"] / "evaluations.jsonl").read_text().splitlines()
    (run / "evaluations.jsonl").write_text("\n".join(evaluations[:2]) + "\n")
    status = run_status(run)
    assert status.stage == "walk" and not status.finished
    walk = status.walks[0]
    assert (walk.hops, walk.total_hops, walk.steps, walk.total_steps) == (3, WALK, 3, WALK)
    trips = [json.loads(line)["round_trip_seconds"] for line in lines[:3]]
    assert walk.eta == pytest.approx(sum(trips) / 3 * (WALK - 3))
    assert main([str(run)]) == 0
    text = capsys.readouterr().out
    assert f"resume with: flwr run . [FEDERATION] --run-config \"resume-from='{run}'\"" in text
    # the incremental walk's steps estimated from the walk's; its clusterings cannot be
    assert "ETA of the walks: unknown" not in text
    assert "(plus the clustering's rounds: unknown)" in text
    assert f"last evaluation: {json.loads(evaluations[1])['stage']}" in text


def test_a_folder_that_is_not_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main([str(tmp_path)]) == 2
    assert "not a run directory of dmnreid (no readable config.json)" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().out
