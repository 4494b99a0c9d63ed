"""``incremental-loss = "prototype"`` through Flower's simulation engine (issue 17).

With ``incremental-labels = "oracle"``: the memory travels with the walking weights in the
messages, the run is marked as an oracle run, no node sends anything but weights, centroids
and ids, and the in-process driver trains the same model. With the clusters: a run stopped in
the middle of the incremental walk resumes from its checkpointed weights and memory and ends
with the model an uninterrupted run trains.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from dmnreid.config import ConfigError, RunConfig
from dmnreid.memory.prototypes import build_memory
from dmnreid.messages import state_record
from dmnreid.reid.model import build_model, walking_state
from dmnreid.strategies.clustering import check_oracle
from tests.conftest import CAMERAS, TINY
from tests.flower_harness import FlowerLink
from tests.privacy import audit_entries, check_replies

PROTOTYPE = {**TINY, "style-transfer": False, "walk-hops": 2, "incremental-hops": 3,
             "recluster-every": 0, "incremental-labels": "oracle",
             "incremental-loss": "prototype", "eval-mode": "server", "eval-every": 10,
             "unify": "pick-one"}
SCORES = ("rank1", "rank5", "rank10", "mAP")


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def prototype_run(link: FlowerLink, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("prototype")
    run_id, log = link.start_run({**PROTOTYPE, "output-dir": str(out / "outputs"),
                                  "run-name": "proto", "message-audit": str(out / "audit")},
                                 supernodes=CAMERAS)
    status = link.wait(run_id)
    assert status == "finished:completed", log[-3000:]
    (run_dir,) = (out / "outputs").glob("*-proto")
    return {"dir": run_dir, "audit": out / "audit", "cache": link.env["DMNREID_CACHE"]}


def test_the_memory_travels_with_every_incremental_hop(prototype_run):
    run = prototype_run["dir"]
    labels = json.loads((run / "clustering.json").read_text())
    assert labels["labels"] == "oracle" and "not a federated method" in labels["note"]
    assert labels["rounds"] == 1 and labels["cameras"] == list(range(1, CAMERAS + 1))
    assert labels["clusters"] == TINY["synthetic-train-ids"]  # the true identities
    saved = np.load(run / "clusters.npz")
    sizes = dict(zip(saved["ids_cameras"].tolist(), saved["ids_sizes"].tolist(), strict=True))
    ends = np.cumsum(list(sizes.values()))
    banks = dict(zip(sizes, np.split(saved["banks"], ends[:-1]), strict=True))
    classes = dict(zip(sizes, np.split(saved["classes"], ends[:-1]), strict=True))
    memory = build_memory(banks, classes, camera_aware=True)
    assert saved["banks"].shape == (sum(sizes.values()), 512)
    memory_bytes = state_record(memory.to_state(), "float16").count_bytes()

    hops = read_lines(run / "hops.jsonl")
    walk = [h for h in hops if h["phase"] == "walk"]
    incremental = [h for h in hops if h["phase"] == "incremental"]
    assert len(incremental) == PROTOTYPE["incremental-hops"]
    assert all("loss" in h and h["num_classes"] == labels["clusters"] for h in incremental)
    # the memory comes back with each hop: the reply's extra bytes are the memory's (and
    # a few bytes of metrics written differently)
    for hop in incremental:
        assert abs(hop["bytes_received"] - walk[0]["bytes_received"] - memory_bytes) < 100
        assert hop["bytes_sent"] > walk[0]["bytes_sent"] + memory_bytes  # + the classes
    config = json.loads((run / "config.json").read_text())
    assert config["incremental-labels"] == "oracle"


def test_privacy_covers_the_memory_on_the_wire(prototype_run):
    entries = audit_entries(prototype_run["audit"])
    sent = [e for e in entries if "prototypes" in e["records"]]
    assert len(sent) == PROTOTYPE["incremental-hops"]
    check_replies(entries, walking_state(build_model("resnet18", None, 1), bn_mode="camera"),
                  {})


def same_as_the_driver(run: Path) -> None:
    """The in-process driver, given the run's config, visits the same cameras and trains a
    model that scores the same after the walk and after the incremental walk."""
    from dmnreid.experiments.driver import Network

    network = Network(RunConfig.from_mapping(json.loads((run / "config.json").read_text())))
    walked = network.first_walk(network.initial_state())
    incremental, _ = network.incremental(walked.state)
    assert [h["camera"] for h in incremental.hops] == [
        h["camera"] for h in read_lines(run / "hops.jsonl") if h["phase"] == "incremental"]
    metrics = json.loads((run / "metrics.json").read_text())
    for stage, state in (("walk", walked.state), ("incremental", incremental.state)):
        scores = network.score(state)
        assert all(abs(scores[k] - metrics[stage][k]) < 1e-5 for k in SCORES), (stage, scores)


def test_the_in_process_driver_trains_the_same_model(prototype_run,
                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DMNREID_CACHE", str(prototype_run["cache"]))
    same_as_the_driver(prototype_run["dir"])


def test_a_run_on_the_clusters_resumes_with_its_memory(link: FlowerLink, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    """Stopped after its first incremental hop, resumed: the finished hops are kept, the
    clusters and memory are read back rather than recomputed, and the model equals the
    driver's uninterrupted one."""
    hops = 4
    config = {**PROTOTYPE, "incremental-labels": "clusters", "incremental-hops": hops,
              "local-epochs": 3, "output-dir": str(tmp_path), "run-name": "proto-resume"}
    run_id, _ = link.start_run(config, supernodes=CAMERAS, stream=False)
    deadline, run = time.monotonic() + 600, None
    while time.monotonic() < deadline and run is None:
        found = list(tmp_path.glob("*-proto-resume/hops.jsonl"))
        if found and any(h["phase"] == "incremental" for h in read_lines(found[0])):
            run = found[0].parent
        time.sleep(0.5)
    assert run is not None, "the run never finished an incremental hop"
    link.stop_run(run_id)
    assert link.wait(run_id) != "finished:completed"
    before = [h for h in read_lines(run / "hops.jsonl") if h["phase"] == "incremental"]
    assert 1 <= len(before) < hops
    clusters = (run / "clusters.npz").read_bytes()

    resumed, log = link.start_run({"resume-from": str(run)}, supernodes=CAMERAS)
    assert link.wait(resumed) == "finished:completed", log[-3000:]
    after = [h for h in read_lines(run / "hops.jsonl") if h["phase"] == "incremental"]
    assert [h["hop"] for h in after] == list(range(hops))
    # finished hops kept (the last may be redone: stopped between its record and checkpoint)
    assert after[: len(before) - 1] == before[: len(before) - 1]
    assert (run / "clusters.npz").read_bytes() == clusters  # not clustered again
    assert json.loads((run / "clustering.json").read_text())["labels"] == "clusters"
    monkeypatch.setenv("DMNREID_CACHE", link.env["DMNREID_CACHE"])
    same_as_the_driver(run)


def test_the_oracle_is_refused_without_ground_truth(tmp_path: Path):
    with pytest.raises(ConfigError, match="holds no partitions"):
        check_oracle(None)
    with pytest.raises(ConfigError, match=r"train_identities\.csv does not exist"):
        check_oracle(tmp_path)
    with pytest.raises(ConfigError, match="incremental-labels = 'clusters' or 'oracle'"):
        RunConfig(incremental_loss="prototype", incremental_labels="local").validate()
