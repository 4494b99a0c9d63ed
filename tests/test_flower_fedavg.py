"""``walk-strategy = "fedavg"`` through Flower's real simulation engine.

The project's ClientApp behind a mod that keeps, for every ``train.walk`` message, the
weights the node received, the weights it sent back and its image count: the test computes
the weighted mean by hand and finds it in the next round's message. Camera BN, so no BN
statistic may be on the wire either way; the privacy audit covers every reply.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from dmnreid.config import ConfigError, RunConfig
from dmnreid.data_prep.partition import read_partition
from dmnreid.reid.camera_bn import is_bn_statistic
from dmnreid.reid.model import build_model, walking_state
from dmnreid.style.networks import ResnetGenerator
from tests.conftest import CAMERAS, TINY, started_link
from tests.flower_harness import FlowerLink, client_app_folder
from tests.privacy import audit_entries, check_replies

RECORDING_CLIENT = '''"""The project's ClientApp, keeping what every train.walk message carried (by
test_flower_fedavg.py)."""

from pathlib import Path

import torch
from flwr.clientapp import ClientApp

from dmnreid import client_app as real
from dmnreid.data_prep.partition import load_node
from dmnreid.messages import CONFIG, WEIGHTS, audit_mod, metrics_of, record_state
from dmnreid.node_state import node_dir

KEPT = Path({kept!r})


def keep(msg, context, call_next):
    reply = call_next(msg, context)
    if msg.metadata.message_type == "train.walk":
        config = msg.content[CONFIG]
        camera = load_node(node_dir(context.node_config, str(config["partition-dir"]))).camera
        torch.save({{"received": record_state(msg.content[WEIGHTS]),
                    "returned": record_state(reply.content[WEIGHTS]),
                    "images": int(metrics_of(reply.content)["images"]),
                    "records": sorted(msg.content.keys())}},
                   KEPT / f"{{config['phase']}}-{{int(config['hop'])}}-{{camera}}.pt")
    return reply


app = ClientApp(mods=[keep, audit_mod])
for kind, action, handler in (("query", "info", real.info), ("train", "walk", real.walk),
                              ("query", "memory", real.memory), ("query", "top1", real.top1),
                              ("query", "triangle", real.triangle),
                              ("query", "flood", real.flood),
                              ("query", "weights", real.weights),
                              ("query", "embed", real.embed),
                              ("query", "pretrained", real.pretrained)):
    getattr(app, kind)(action)(handler)
'''

# 6 hops over 3 cameras: 2 FedAvg rounds per phase
FEDAVG = {**TINY, "walk-strategy": "fedavg", "walk-hops": 6, "incremental-hops": 6,
          "recluster-every": 0, "style-transfer": False, "eval-mode": "server",
          "transfer-dtype": "float32", "eval-every": 6, "unify": "average"}
ROUNDS = 2


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowerLink]:
    yield from started_link(tmp_path_factory, "flwr-fedavg")


@pytest.fixture(scope="module")
def fedavg_run(link: FlowerLink, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("fedavg")
    kept = out / "kept"
    kept.mkdir()
    app = client_app_folder(out / "app", "recording", RECORDING_CLIENT.format(kept=str(kept)))
    config = {**FEDAVG, "output-dir": str(out / "runs"), "run-name": "fedavg",
              "partitions-dir": str(out / "parts"), "message-audit": str(out / "audit")}
    run_id, log = link.start_run(config, supernodes=CAMERAS, app=app)
    status = link.wait(run_id)
    run_dirs = sorted((out / "runs").glob("*-fedavg"))
    messages = {path.stem: torch.load(path, weights_only=True) for path in kept.glob("*.pt")}
    return {"status": status, "log": log, "dir": run_dirs[0] if run_dirs else None,
            "messages": messages, "parts": out / "parts", "audit": out / "audit"}


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_camera_trains_every_round(fedavg_run):
    assert fedavg_run["status"] == "finished:completed", fedavg_run["log"][-3000:]
    hops = read_lines(fedavg_run["dir"] / "hops.jsonl")
    cameras = set(range(1, CAMERAS + 1))
    for phase in ("walk", "incremental"):
        rounds = [h for h in hops if h["phase"] == phase]
        assert [h["hop"] for h in rounds] == [r for r in range(ROUNDS) for _ in cameras]
        for r in range(ROUNDS):
            assert {h["camera"] for h in rounds if h["hop"] == r} == cameras
        assert all("loss" in h and h["images"] > 0 for h in rounds)
    metrics = json.loads((fedavg_run["dir"] / "metrics.json").read_text())
    assert set(metrics) == {"baseline", "walk", "incremental", "final", "provenance"}


def test_the_server_sends_the_image_weighted_mean_of_the_last_round(fedavg_run):
    messages = fedavg_run["messages"]
    steps = [(phase, r) for phase in ("walk", "incremental") for r in range(ROUNDS)]
    assert set(messages) == {f"{p}-{r}-{c}" for p, r in steps for c in range(1, CAMERAS + 1)}
    for (phase, r), (next_phase, next_r) in pairwise(steps):
        sent = [messages[f"{phase}-{r}-{c}"] for c in range(1, CAMERAS + 1)]
        total = sum(m["images"] for m in sent)
        assert len({m["images"] for m in sent}) > 1  # unequal weights: the weighting shows
        for c in range(1, CAMERAS + 1):
            received = messages[f"{next_phase}-{next_r}-{c}"]["received"]
            for key, value in received.items():
                mean = sum(m["returned"][key].double() * m["images"] for m in sent) / total
                torch.testing.assert_close(value.double(), mean, rtol=1e-5, atol=1e-6)
        # a real average: not any one node's weights
        first_key = next(iter(sent[0]["returned"]))
        assert not any(torch.equal(messages[f"{next_phase}-{next_r}-1"]["received"][first_key],
                                    m["returned"][first_key]) for m in sent)


def test_heads_and_camera_statistics_stay_on_the_nodes(fedavg_run):
    messages = fedavg_run["messages"]
    for kept in messages.values():
        for state in (kept["received"], kept["returned"]):
            assert not any(is_bn_statistic(key) for key in state)
        assert "head" not in kept["records"]
    # each node kept its own head per phase: its local classes, then the global clusters
    parts = fedavg_run["parts"]
    run_key = fedavg_run["dir"].name
    clusters = json.loads((fedavg_run["dir"] / "clustering.json").read_text())
    for node in read_partition(parts)["nodes"]:
        state = parts / node["node"] / "runs" / run_key
        walk_head = torch.load(state / "head-walk-0.pt", weights_only=True)
        assert walk_head["weight"].shape[0] == node["tracklets"]
        inc_head = torch.load(state / "head-incremental-0.pt", weights_only=True)
        assert inc_head["weight"].shape[0] == clusters["clusters"]
    entries = audit_entries(fedavg_run["audit"])
    assert sum(e["message_type"] == "train.walk" for e in entries) == 2 * ROUNDS * CAMERAS
    check_replies(entries, walking_state(build_model("resnet18", None, 1), bn_mode="camera"),
                  ResnetGenerator(TINY["style-generator-filters"],
                                  TINY["style-generator-blocks"]).state_dict())


def test_a_travelling_head_is_refused_under_fedavg():
    with pytest.raises(ConfigError, match="walk-strategy = 'fedavg' with incremental-head"):
        RunConfig.from_mapping({"walk-strategy": "fedavg", "incremental-head": "travel"})


def test_the_in_process_driver_averages_as_the_flower_run_did(
        fedavg_run, link: FlowerLink, monkeypatch: pytest.MonkeyPatch):
    """The experiments' driver, given the run's settings and node folders, trains the same
    rounds and reaches the same scores after each phase."""
    from dmnreid.experiments.driver import Network

    monkeypatch.setenv("DMNREID_CACHE", link.env["DMNREID_CACHE"])
    cfg = RunConfig.from_mapping(json.loads((fedavg_run["dir"] / "config.json").read_text()))
    network = Network(cfg)
    walked = network.first_walk(network.initial_state())
    assert [(h["hop"], h["camera"]) for h in walked.hops] == [
        (r, c) for r in range(ROUNDS) for c in range(1, CAMERAS + 1)]
    incremental, _ = network.incremental(walked.state)
    metrics = json.loads((fedavg_run["dir"] / "metrics.json").read_text())
    for stage, state in (("walk", walked.state), ("incremental", incremental.state)):
        scores = network.score(state)
        assert all(abs(scores[k] - metrics[stage][k]) < 1e-5
                   for k in ("rank1", "rank5", "rank10", "mAP")), (stage, scores)
