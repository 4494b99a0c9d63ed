"""Bad replies never poison a run, through Flower's real simulation engine.

A diverging walk (learning rates far too high, accepted by the settings) skips every hop and
stops once every camera has failed, keeping the last good checkpoint. A network with faulty
nodes (the project's own ClientApp with a mod that replaces camera 2's hop weights and camera
3's model copy by NaN ones) completes: the faulty hops are recorded as skipped and the weights
after each skipped hop are those before it; unification leaves out the broken copy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from dmnreid.checks import non_finite
from dmnreid.data_prep.partition import read_partition
from dmnreid.data_prep.synthetic import SyntheticConfig, generate
from dmnreid.memory.reference import cluster_centralised
from dmnreid.node_state import load_memory_bank
from dmnreid.strategies.unification import pick_one
from tests.conftest import started_link
from tests.flower_harness import FlowerLink, client_app_folder

CAMERAS = 3
TINY = {
    "synthetic-cameras": CAMERAS, "synthetic-train-ids": 12, "synthetic-test-ids": 8,
    "image-height": 32, "image-width": 16, "pretrained-weights": "none",
    "bn-statistics": "update", "local-epochs": 1, "batch-size": 8, "seed": 3,
    "style-transfer": False, "walk-order": "permutation", "eval-mode": "server",
}

FAULTY_CLIENT = '''"""The project's ClientApp with faulty nodes (by test_flower_faults.py)."""

import hashlib
import json
from itertools import pairwise
from pathlib import Path

import torch
from flwr.clientapp import ClientApp

from dmnreid import client_app as real
from dmnreid.data_prep.partition import load_node
from dmnreid.messages import CONFIG, WEIGHTS, record_state, state_record
from dmnreid.node_state import node_dir

FAULTS = {faults}
DOWN = {down}
RECEIVED = Path({received!r})


def digest(state) -> str:
    sha = hashlib.sha256()
    for key in sorted(state):
        sha.update(key.encode() + state[key].numpy().tobytes())
    return sha.hexdigest()


def faults(msg, context, call_next):
    """Log the weights each hop receives; fail the messages DOWN names (``type`` or
    ``type@phase``: camera ids); poison the replies FAULTS names."""
    config = msg.content[CONFIG]
    camera = load_node(node_dir(context.node_config, str(config["partition-dir"]))).camera
    kind = msg.metadata.message_type
    if kind == "train.walk":
        with (RECEIVED / f"camera-{{camera}}.jsonl").open("a") as fh:
            fh.write(json.dumps({{"phase": str(config["phase"]), "hop": int(config["hop"]),
                                  "digest": digest(record_state(msg.content[WEIGHTS]))}}) + "\\n")
    if camera in DOWN.get(kind, []) + DOWN.get(f"{{kind}}@{{config.get('phase')}}", []):
        raise RuntimeError(f"camera {{camera}} is down (test)")
    reply = call_next(msg, context)
    if camera in FAULTS.get(kind, ()) and reply.has_content() and WEIGHTS in reply.content:
        state = record_state(reply.content[WEIGHTS])
        key = next(k for k, v in state.items() if v.is_floating_point())
        state[key] = torch.full_like(state[key], float("nan"))
        reply.content[WEIGHTS] = state_record(state)
    return reply


app = ClientApp(mods=[faults])
for kind, action, handler in (("query", "info", real.info), ("train", "walk", real.walk),
                              ("query", "memory", real.memory), ("query", "top1", real.top1),
                              ("query", "triangle", real.triangle),
                              ("query", "flood", real.flood),
                              ("query", "weights", real.weights),
                              ("query", "embed", real.embed)):
    getattr(app, kind)(action)(handler)
'''


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowerLink]:
    yield from started_link(tmp_path_factory, "flwr-faults")


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def faulty_app(folder: Path, faults: dict[str, list[int]], received: Path,
               down: dict[str, list[int]] | None = None) -> Path:
    """A Flower app folder: the project's ServerApp, the faulty ClientApp, the same config."""
    received.mkdir(parents=True)
    return client_app_folder(folder, "faulty", FAULTY_CLIENT.format(
        faults=json.dumps(faults), down=json.dumps(down or {}), received=str(received)))


def test_a_diverging_walk_stops_with_the_last_good_checkpoint(link: FlowerLink, tmp_path: Path):
    config = {**TINY, "lr-head": 1e30, "lr-backbone": 1e30, "walk-hops": 6, "node-retries": 0,
              "incremental-hops": 0, "eval-every": 6, "output-dir": str(tmp_path),
              "run-name": "diverging", "message-audit": str(tmp_path / "audit")}
    run_id, log = link.start_run(config, supernodes=CAMERAS)
    assert link.wait(run_id) == "finished:failed", log[-3000:]
    assert "every camera is left out of the walk" in log, log[-3000:]
    run_dir = next(tmp_path.glob("*-diverging"))
    hops = read_lines(run_dir / "hops.jsonl")
    assert [h["hop"] for h in hops] == [0, 1, 2]  # a permutation: all three cameras failed
    assert {h["camera"] for h in hops} == {1, 2, 3}
    assert all("training diverged" in h["skipped"] for h in hops)
    checkpoint = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert checkpoint["info"]["hop"] == 2 and not non_finite(checkpoint["state"])
    # privacy: a diverged hop's reply is two integers, no weights
    replies = [e for f in (tmp_path / "audit").glob("*.jsonl") for e in read_lines(f)
               if e["message_type"] == "train.walk"]
    assert len(replies) == 3
    for reply in replies:
        metrics = reply["records"]["metrics"]["entries"]
        assert set(reply["records"]) == {"metrics"}
        assert set(metrics) == {"diverged", "diverged-step"}
        assert all(m["type"] == "int" for m in metrics.values())
        assert metrics["diverged"]["value"] == 1 and metrics["diverged-step"]["value"] >= 1

def test_faulty_nodes_are_skipped_and_nothing_trained_elsewhere_is_lost(link: FlowerLink,
                                                                         tmp_path: Path):
    received = tmp_path / "received"
    app = faulty_app(tmp_path / "app", {"train.walk": [2], "query.weights": [3]}, received)
    config = {**TINY, "walk-hops": 6, "incremental-hops": 3, "alpha": 0, "unify": "average",
              "eval-every": 3, "output-dir": str(tmp_path / "out"), "run-name": "faulty"}
    run_id, log = link.start_run(config, supernodes=CAMERAS, app=app)
    assert link.wait(run_id) == "finished:completed", log[-3000:]
    run_dir = next((tmp_path / "out").glob("*-faulty"))

    hops = read_lines(run_dir / "hops.jsonl")
    assert [(h["phase"], h["hop"]) for h in hops] == [
        *(("walk", i) for i in range(6)), *(("incremental", i) for i in range(3))]
    skipped = [h for h in hops if "skipped" in h]
    assert skipped and {h["camera"] for h in skipped} == {2}
    assert all(h["camera"] == 2 for h in hops if "skipped" in h)
    assert all("non-finite" in h["skipped"] for h in skipped)
    assert all("loss" in h for h in hops if h["camera"] != 2)

    # the weights each hop received: unchanged across a skipped hop, changed by a good one
    digests = {(r["phase"], r["hop"]): r["digest"]
               for f in received.glob("*.jsonl") for r in read_lines(f)}
    for phase, count in (("walk", 6), ("incremental", 3)):
        for hop in range(count - 1):
            before, after = digests[(phase, hop)], digests[(phase, hop + 1)]
            record = next(h for h in hops if (h["phase"], h["hop"]) == (phase, hop))
            assert (before == after) == ("skipped" in record), (phase, hop)

    unification = json.loads((run_dir / "unification.json").read_text())
    # camera 2 finished no incremental hop, so its copy is not asked for; 3's is broken
    assert unification["trained"] == [1, 3] and unification["cameras"] == [1]
    assert set(unification["rejected"]) == {"3"}
    assert "non-finite" in unification["rejected"]["3"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"baseline", "walk", "incremental", "final", "provenance"}
    final = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)
    assert not non_finite(final["state"])


def test_cameras_that_drop_out_are_left_out_and_rejoin(link: FlowerLink, tmp_path: Path):
    """Camera 2's node errs on every hop of the first walk, camera 3's on the triangle round,
    and the camera pick-one chooses on ``query.weights``: the run completes on the others."""
    chosen = pick_one([1, 2], TINY["seed"])  # cameras 1 and 2 will hold model copies
    down = {"train.walk@walk": [2], "query.triangle": [3], "query.weights": [chosen]}
    received = tmp_path / "received"
    app = faulty_app(tmp_path / "app", {}, received, down)
    parts = tmp_path / "parts"
    config = {**TINY, "walk-hops": 6, "incremental-hops": 4, "alpha": 0, "unify": "pick-one",
              "node-retries": 0, "probe-interval": 600.0, "eval-mode": "federated",
              "partitions-dir": str(parts), "output-dir": str(tmp_path / "out"),
              "run-name": "dropouts"}
    run_id, log = link.start_run(config, supernodes=CAMERAS, app=app)
    assert link.wait(run_id) == "finished:completed", log[-3000:]
    run_dir = next((tmp_path / "out").glob("*-dropouts"))
    hops = read_lines(run_dir / "hops.jsonl")
    walk = [h for h in hops if h["phase"] == "walk"]
    assert len(walk) == 6 and any(h["camera"] == 2 for h in walk)
    for hop in walk:  # every hop camera 2 got is skipped with its cause, the others train
        assert ("skipped" in hop) == (hop["camera"] == 2), hop
    assert all("camera 2 is down" in h["skipped"] for h in walk if "skipped" in h)
    digests = {(r["phase"], r["hop"]): r["digest"]
               for f in received.glob("*.jsonl") for r in read_lines(f)}
    for before, after in pairwise(walk):  # nothing trained elsewhere is lost
        same = digests[("walk", before["hop"])] == digests[("walk", after["hop"])]
        assert same == ("skipped" in before), before

    network = json.loads((run_dir / "network.json").read_text())
    events = [(e["camera"], e["event"], e["phase"]) for e in network["events"]]
    failed = events.index((2, "failed", "walk"))  # erred, so out for the rest of the walk
    assert next(e for e in events[failed:] if e[:2] == (2, "rejoined"))[2] != "walk"
    assert (3, "failed", "clustering") in events

    clustering = json.loads((run_dir / "clustering.json").read_text())
    assert clustering["cameras"] == [1, 2]
    assert clustering["missing"]["3"]["round"] == "triangle"
    assert "camera 3 is down" in clustering["missing"]["3"]["cause"]
    # the labels come only from cameras 1 and 2: the centralised reference on their banks
    node_of = {n["camera"]: n["node"] for n in read_partition(parts)["nodes"]}
    banks = {c: load_memory_bank(parts / node_of[c], run_dir.name) for c in (1, 2)}
    reference = cluster_centralised(banks, alpha=0)
    saved = np.load(run_dir / "clusters.npz")
    assert np.array_equal(saved["cluster_of"], reference.cluster_of)

    incremental = [h for h in hops if h["phase"] == "incremental"]
    assert len(incremental) == 4 and all("loss" in h for h in incremental)
    assert {h["camera"] for h in incremental} <= {1, 2}  # camera 3 has no global labels

    unification = json.loads((run_dir / "unification.json").read_text())
    other = ({1, 2} - {chosen}).pop()
    assert unification["cameras"] == [other] and set(unification["rejected"]) == {str(chosen)}
    evaluations = read_lines(run_dir / "evaluations.jsonl")
    assert {e["stage"] for e in evaluations} >= {"baseline", "walk", "incremental", "final"}
    assert all(set(e.get("missing-cameras", [])) <= {2, 3} for e in evaluations)
    assert set(json.loads((run_dir / "metrics.json").read_text())) == {
        "baseline", "walk", "incremental", "final", "provenance"}


def test_refused_settings_leave_no_run_directory(link: FlowerLink, tmp_path: Path):
    """A value out of range, and a target camera the data does not have (known once the
    data is read): the run fails naming the key, and no run directory is created."""
    data = tmp_path / "market-layout"
    generate(data, SyntheticConfig(cameras=CAMERAS, train_ids=6, test_ids=4, distractors=0,
                                   junk=0), progress=False)
    cases = (({"momentum": 1.0}, "momentum = 1.0: must be a finite number in [0, 1)"),
             ({"dataset": "market1501", "data-root": str(data), "target-camera": 5},
              "target-camera 5 has no training images"))
    for config, message in cases:
        out = tmp_path / "out"
        run_id, log = link.start_run({**TINY, **config, "output-dir": str(out)},
                                     supernodes=CAMERAS)
        assert link.wait(run_id) == "finished:failed"
        assert message in log, log[-3000:]
        assert not out.exists() or not any(out.iterdir())
