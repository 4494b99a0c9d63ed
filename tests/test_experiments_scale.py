"""``python -m dmnreid.experiments scale``: its pure helpers (input, settings, the row of one
run directory, growth exponents, tables), its memory sampling on a real process, and one
tiny real call through Flower's simulation for two sizes, called twice."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from dmnreid.config import ConfigError
from dmnreid.experiments import scale
from dmnreid.experiments.cli import main
from dmnreid.messages import CONFIG, METRICS, WEIGHTS, state_record
from dmnreid.rounds import added, reply_counts, sent_counts
from dmnreid.run_dir import RunDir
from dmnreid.strategies.hops import Hop, SkippedHop
from tests.conftest import TINY

HOP = RecordDict({WEIGHTS: state_record({"middle.w": torch.ones(4, 8)}, "float16"),
                  CONFIG: ConfigRecord({"phase": "walk", "hop": 0})})
HOP_REPLY = RecordDict({WEIGHTS: HOP[WEIGHTS], METRICS: MetricRecord({"loss": 0.5})})
INFO = RecordDict({CONFIG: ConfigRecord({"partition-dir": "/data/net"})})
INFO_REPLY = RecordDict({METRICS: MetricRecord({"camera": 1, "tracklets": 7})})
MEASURED = {"wall_seconds": 40.0, "rss_server_mb": 900.0, "rss_worker_mb": 700.0,
            "workers": 2, "rss_tree_mb": 2500.0}


def fabricated_run(root: Path, cameras: int, hops: int) -> Path:
    """A run directory written as the ServerApp writes one (RunDir, the grid's counting
    functions, Hop records), for ``cameras`` cameras and ``hops`` walk hops (cameras 1, 2,
    1, 2, ...) and two incremental hops, the second skipped."""
    run = RunDir.create(root, f"fake-{cameras}")
    run.write_json("config.json", {"synthetic-cameras": cameras, "synthetic-test-ids": 6})
    run.write_json("network.json", {"cameras": {str(c): 5 for c in range(1, cameras + 1)},
                                    "nodes": {}, "left_out": {}, "events": []})
    rounds, messages = {}, {}
    for _ in range(cameras):
        messages = added(added(messages, sent_counts("query.info", INFO, "set-up")),
                         reply_counts("query.info", INFO_REPLY, "set-up"))
    rounds = added(rounds, {"set-up": {"rounds": 1, "messages": cameras, "seconds": 2.0}})
    for i in range(hops):
        messages = added(added(messages, sent_counts("train.walk", HOP, "walk")),
                         reply_counts("train.walk", HOP_REPLY, "walk"))
        rounds = added(rounds, {"walk": {"rounds": 1, "messages": 1, "seconds": 1.5}})
        run.append("hops.jsonl", Hop("walk", i, i, 0, 7, 1 + i % 2, 1.0, 0.5, 10, 0.1, 3, 0,
                                     1.5, 100, 100, "d").__dict__)
    messages = added(added(messages, sent_counts("train.walk", HOP, "incremental")),
                     reply_counts("train.walk", HOP_REPLY, "incremental"))
    messages = added(added(messages, sent_counts("train.walk", HOP, "incremental")),
                     reply_counts("train.walk", None, "incremental"))
    rounds = added(rounds, {"incremental": {"rounds": 2, "messages": 2, "seconds": 3.0}})
    run.append("hops.jsonl", Hop("incremental", hops, hops, 0, 7, 2, 1.0, 0.5, 10, 0.1, 3,
                                 0, 1.5, 100, 100, "d").__dict__)
    run.append("hops.jsonl", SkippedHop("incremental", hops + 1, hops + 1, 0, 8, 1, "timeout",
                                        2.0, 100, 0, "d").__dict__)
    run.write_json("rounds.json", rounds)
    run.write_json("messages.json", messages)
    run.write_json("clustering.json", {"clusters": 4, "diagnostics": {"triangle": {
        "true_ids": 5, "precision": 0.75, "recall": 0.5, "nmi": 0.8}}})
    run.write_json("metrics.json", {"final": {"rank1": 50.0, "mAP": 40.0}})
    return run.path


# --- input and settings -------------------------------------------------------------------

def test_cameras_are_parsed_sorted_and_bad_lists_refused() -> None:
    assert scale.parse_cameras("15, 6,60") == [6, 15, 60]
    for text, says in (("6,x", "comma-separated integers"), ("", "at least one"),
                       ("1,6", "2..99"), ("6,100", "2..99"), ("6,6", "twice")):
        with pytest.raises(ConfigError, match=says):
            scale.parse_cameras(text)


def test_sets_take_toml_values_and_refuse_what_the_command_sets() -> None:
    assert scale.parse_sets(["local-epochs=1", "eval-mode='none'", "alpha = 2"]) == \
        {"local-epochs": 1, "eval-mode": "none", "alpha": 2}
    for item, says in (("local-epochs", "KEY=VALUE"), ("=3", "KEY=VALUE"),
                       ("synthetic-cameras=5", "--cameras"),
                       ("synthetic-train-ids=50", "synthetic-ids-per-camera"),
                       ("output-dir='x'", "OUT/runs")):
        with pytest.raises(ConfigError, match=says):
            scale.parse_sets([item])


def test_size_settings_keep_identities_per_camera_and_grow_the_test_split() -> None:
    small, large = scale.size_settings(6, {}), scale.size_settings(60, {})
    for settings, cameras in ((small, 6), (large, 60)):
        assert settings["synthetic-cameras"] == cameras
        assert settings["synthetic-ids-per-camera"] == scale.SCALE["synthetic-ids-per-camera"]
        assert settings["style-transfer"] is False
    assert large["synthetic-test-ids"] > 5 * small["synthetic-test-ids"]
    styled = scale.size_settings(6, {"synthetic-test-ids": 9, "local-epochs": 1}, style=True)
    assert styled["style-transfer"] is True and styled["style-iterations"] == 200
    assert styled["synthetic-test-ids"] == 9 and styled["local-epochs"] == 1
    with pytest.raises(ConfigError, match="local-epochs"):
        scale.size_settings(6, {"local-epochs": -1})
    with pytest.raises(ConfigError, match="synthetic-ids-per-camera"):  # beyond 9,999 ids
        scale.size_settings(90, {"synthetic-ids-per-camera": 5000})


# --- tabulation and fitting -------------------------------------------------------------------

def test_growth_exponent_recovers_a_known_slope() -> None:
    cameras = [6, 15, 30, 60]
    for k in (0.0, 1.0, 1.5, 2.0):
        assert scale.growth_exponent(cameras, [2.5 * m**k for m in cameras]) == \
            pytest.approx(k, abs=1e-9)
    noisy = [3.0 * m**1.2 * f for m, f in zip(cameras, (1.05, 0.95, 1.02, 0.98), strict=True)]
    assert scale.growth_exponent(cameras, noisy) == pytest.approx(1.2, abs=0.1)
    # zeros (a phase a size lacks) are left out; fewer than two sizes: no exponent
    assert scale.growth_exponent([3, 6, 12], [0.0, 6.0, 12.0]) == pytest.approx(1.0)
    assert math.isnan(scale.growth_exponent([6], [1.0]))
    assert math.isnan(scale.growth_exponent([6, 15], [0.0, 1.0]))


def test_row_of_a_run_directory(tmp_path: Path) -> None:
    run_dir = fabricated_run(tmp_path, 3, 3)
    row = scale.size_row(run_dir, MEASURED)
    messages = json.loads((run_dir / "messages.json").read_text())
    walk = messages["train.walk"]["phases"]["walk"]
    assert row["cameras"] == 3 and row["tracklets"] == 15 and row["tracklets_per_camera"] == 5
    assert row["train_ids"] == 5 and row["test_ids"] == 6
    assert (row["walk_hops"], row["walk_cameras"]) == (3, 2)
    assert (row["incremental_hops"], row["incremental_cameras"]) == (2, 1)  # one skipped
    assert (row["precision"], row["recall"], row["nmi"], row["mAP"]) == (0.75, 0.5, 0.8, 40.0)
    assert row["rounds:walk"] == 3 and row["seconds:walk"] == 4.5
    assert row["rounds:incremental"] == 2 and row["rounds:set-up"] == 1
    assert row["bytes:walk"] == walk["bytes_sent"] + walk["bytes_received"] > 0
    assert row["type-bytes:train.walk"] == messages["train.walk"]["bytes_sent"] + \
        messages["train.walk"]["bytes_received"]
    assert row["bytes:all"] == sum(row[f"type-bytes:{t}"] for t in messages)
    assert row["bytes:all"] == sum(row[f"bytes:{p}"] for p in ("set-up", "walk",
                                                                 "incremental"))
    assert row["seconds:other"] == pytest.approx(40.0 - 2.0 - 4.5 - 3.0)
    assert row["rss_server_mb"] == 900.0 and row["workers"] == 2


def test_tables_and_plot_of_two_sizes(tmp_path: Path) -> None:
    rows = [scale.size_row(fabricated_run(tmp_path, m, m), {**MEASURED, "wall_seconds": 10.0 * m})
            for m in (6, 3)]
    frame = scale.scale_frame(rows)
    assert list(frame["cameras"]) == [3, 6]
    assert scale.exponents(frame, "bytes")["walk"] == pytest.approx(1.0)  # a hop per camera
    assert scale.exponents(frame, "bytes")["set-up"] == pytest.approx(1.0)
    assert scale.exponents(frame, "rounds")["incremental"] == pytest.approx(0.0)
    phases = scale.phase_table(frame).set_index("phase")
    assert phases.loc["walk", "M=3"] == f"4.5 s, 3 r, {scale._mb(frame['bytes:walk'][0])} MB"
    assert (scale._mb(1.51e9), scale._mb(63.14e6), scale._mb(669)) == ("1,510", "63.1",
                                                                       "0.000669")
    assert phases.loc["walk", "k bytes"] == "1.00"
    assert phases.loc["all (wall time of flwr run)", "k seconds"] == "1.00"
    text = scale.markdown(frame, "python -m dmnreid.experiments scale --cameras 3,6",
                          scale.size_settings(3, {}))
    assert "`python -m dmnreid.experiments scale --cameras 3,6`" in text
    assert "| train.walk |" in text and "| 3 (2) |" in text
    scale.plot(frame, tmp_path / "scale.png")
    assert (tmp_path / "scale.png").stat().st_size > 0


def test_process_roles() -> None:
    bin_ = "/venv/bin/"
    assert scale.process_role(["python3", bin_ + "flwr-simulation", "--token", "x"]) == "server"
    assert scale.process_role(["python3", "/ray/_private/workers/default_worker.py"]) == \
        "worker"
    assert scale.process_role(["ray::ClientAppActor.run"]) == "worker"
    assert scale.process_role(["python3", bin_ + "flower-superlink", "--simulation"]) == "link"
    assert scale.process_role(["/ray/core/src/ray/raylet/raylet", "--x"]) == "ray"


def test_sampler_measures_a_child_process_peak() -> None:
    """A child that holds 200 MB for a moment and frees it: its peak is seen, not its end."""
    code = ("import time; a = bytearray(200_000_000); a[::4096] = b'x' * len(a[::4096]); "
            "time.sleep(1.5); del a; time.sleep(1.5)")
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys; subprocess.run([sys.executable, "
                               f"'-c', {code!r}])"])
    with scale.TreeSampler(parent.pid, interval=0.2) as sampler:
        parent.wait(timeout=60)
    assert max(sampler.peaks.values()) >= 200e6
    assert sampler.tree_peak >= 200e6
    assert scale.high_water_mark(os.getpid()) > 0 or not Path("/proc").is_dir()


# --- one real, tiny call through Flower ------------------------------------------------------

TINY_SETS = [f"{k}={json.dumps(TINY[k])}" for k in (
    "image-height", "image-width", "pretrained-weights", "bn-statistics", "local-epochs",
    "batch-size", "alpha", "bn-mode")] + [
    "walk-passes=1", "incremental-passes=1", "synthetic-ids-per-camera=4",
    "synthetic-test-ids=6", "eval-mode='none'"]


def test_scale_end_to_end_and_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("DMNREID_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "scale"
    # 8 cameras: the one Flower simulation of the tests on a network larger than the default
    argv = ["scale", "--cameras", "3,8", "--out", str(out),
            *[arg for item in TINY_SETS for arg in ("--set", item)]]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert "phase " in first.err and "M=8" in first.err and "finished in" in first.err
    frame = pd.read_csv(out / "scale.csv")
    assert list(frame["cameras"]) == [3, 8]
    for phase in ("set-up", "walk", "clustering", "incremental", "unification"):
        assert (frame[f"rounds:{phase}"] > 0).all(), phase
        assert (frame[f"bytes:{phase}"] > 0).all(), phase
        assert (frame[f"seconds:{phase}"] > 0).all(), phase
    assert (frame["rss_server_mb"] > 0).all() and (frame["rss_worker_mb"] > 0).all()
    assert (frame["workers"] >= 1).all() and (frame["wall_seconds"] > 0).all()
    assert list(frame["walk_hops"]) == [3, 8] and list(frame["incremental_hops"]) == [3, 8]
    for phase in ("walk", "incremental"):
        assert (frame[f"{phase}_cameras"] >= 1).all()
        assert (frame[f"{phase}_cameras"] <= frame["cameras"]).all()
    assert frame["precision"].between(0, 1).all() and frame["nmi"].between(0, 1).all()
    assert np.isfinite(frame["type-bytes:train.walk"]).all()
    text = (out / "scale.md").read_text()
    assert "scale --cameras 3,8" in text and "| walk |" in text
    assert (out / "scale.png").stat().st_size > 0
    runs = sorted(out.glob("runs/cameras-*/outputs/*"))
    assert [p.parent.parent.name for p in runs] == ["cameras-3", "cameras-8"]

    # again: both sizes reused, nothing run
    assert main(argv) == 0
    again = capsys.readouterr()
    assert again.err.count("finished before: reused") == 2 and "flwr run" not in again.err
    assert sorted(out.glob("runs/cameras-*/outputs/*")) == runs
    pd.testing.assert_frame_equal(pd.read_csv(out / "scale.csv"), frame)
    # with other settings a finished size is refused, not mixed in
    assert main([*argv, "--set", "seed=1"]) == 2
    assert "other settings (seed)" in capsys.readouterr().err
