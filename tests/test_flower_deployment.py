"""Deployment: a real SuperLink with TLS and SuperNode authentication, one real SuperNode per
camera on 127.0.0.1, each started as a device would be.

Every SuperNode runs in its own working folder with its own cache, and holds only its own
camera folder (a copy, not a path into the server's partition) and its own key. The whole
pipeline runs: pretrained weights sent by the server (one device has its own copy instead,
checked by sha256), style transfer, walk, clustering, incremental walk, unification and
federated evaluation. Its metrics equal those of the same run in simulation. Unregistered,
unencrypted and unverified SuperNodes are refused. Every process is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from dmnreid.deploy.credentials import make_node_key
from dmnreid.memory.reference import cluster_centralised
from dmnreid.reid.model import build_model, walking_state, weights_digest
from dmnreid.strategies.walk_strategy import hop_order
from dmnreid.style.networks import ResnetGenerator
from tests.flower_harness import FlowerLink, camera_network, deployed_link, start_device
from tests.privacy import MESSAGE_TYPES, audit_entries, check_replies

CAMERAS = 3
RUN = {
    "synthetic-cameras": CAMERAS, "synthetic-train-ids": 12, "synthetic-test-ids": 8,
    "image-height": 32, "image-width": 16, "pretrained-weights": "synthetic-source",
    "source-ids": 12, "source-epochs": 1, "walk-hops": 3, "local-epochs": 1, "batch-size": 8,
    "eval-every": 3, "seed": 5, "node-timeout": 180.0, "incremental-hops": 2, "alpha": 0,
    "flood-reach": "sets", "unify": "average", "style-iterations": 6, "style-height": 32,
    "style-width": 16, "style-batch-size": 2, "style-generator-filters": 8,
    "style-generator-blocks": 1, "style-discriminator-filters": 8, "bn-mode": "camera",
    "eval-mode": "federated",
}


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory):
    """The server's data and weights, credentials, and one device folder per camera."""
    return camera_network(tmp_path_factory.mktemp("deploy"), RUN)


@pytest.fixture(scope="module")
def deployed(network: dict):
    """The SuperLink and the registered, authenticated SuperNodes, for every test here."""
    link = deployed_link(network)
    try:
        yield link, link.ids
    finally:
        link.stop()
        assert all(proc.poll() is not None for proc in link.supernodes)  # stopped by PID


@pytest.fixture(scope="module")
def deployed_run(network: dict, deployed):
    link, _ = deployed
    out = network["root"] / "deployed-out"
    config = {**RUN, "partitions-dir": str(network["partitions"]), "output-dir": str(out),
              "message-audit": str(network["root"] / "audit")}
    run_id, log = link.start_run(config)
    return {"status": link.wait(run_id), "log": log,
            "dir": next(iter(sorted(out.glob("*"))), None)}


def test_the_whole_pipeline_runs_on_authenticated_tls_supernodes(deployed_run, deployed):
    assert deployed_run["status"] == "finished:completed", deployed_run["log"][-3000:]
    link, ids = deployed
    assert set(link.nodes().items()) >= {(i, "online") for i in ids.values()}
    run_dir = deployed_run["dir"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"baseline", "walk", "incremental", "final", "provenance"}
    hops = read_lines(run_dir / "hops.jsonl")
    assert [h["phase"] for h in hops] == ["walk"] * 3 + ["incremental"] * 2
    assert all("loss" in h for h in hops)
    assert json.loads((run_dir / "clustering.json").read_text())["rounds"] >= 4
    assert json.loads((run_dir / "unification.json").read_text())["mode"] == "average"
    style = json.loads((run_dir / "style.json").read_text())
    assert set(style["per_camera"]) == {"2", "3"}


def test_devices_use_only_their_own_files(deployed_run, network: dict):
    assert deployed_run["status"] == "finished:completed", deployed_run["log"][-3000:]
    sha = weights_digest(network["weights"])
    for camera, device in network["devices"].items():
        data = device / "data"
        received = sorted((data / "pretrained").glob("*.pt"))
        # camera 1 brought its own copy (checked by sha256); the others were sent the weights
        assert received == ([] if camera == 1 else [data / "pretrained" / f"{sha}.pt"])
        if camera != 1:  # each trained its CycleGAN in its own folder
            assert any((data / "style").glob("*/generator.pt"))
    hops = read_lines(deployed_run["dir"] / "hops.jsonl")
    visited = {h["camera"] for h in hops if h["phase"] == "incremental"}
    for camera in visited:  # each kept its own copy of the model for unification
        assert any((network["devices"][camera] / "data" / "runs").glob("*/model.pt"))
        assert not (device / "cache").exists() or not any((device / "cache").iterdir())


def test_privacy_over_the_deployed_pipeline(deployed_run, network: dict):
    assert deployed_run["status"] == "finished:completed", deployed_run["log"][-3000:]
    entries = audit_entries(network["root"] / "audit")
    assert {e["message_type"] for e in entries} == MESSAGE_TYPES
    check_replies(entries, walking_state(build_model("resnet18", None, 1), bn_mode="camera"),
                  ResnetGenerator(RUN["style-generator-filters"],
                                  RUN["style-generator-blocks"]).state_dict())


def test_deployment_equals_simulation(deployed_run, tmp_path: Path):
    """The same settings in simulation, with its own caches: the same figures."""
    assert deployed_run["status"] == "finished:completed", deployed_run["log"][-3000:]
    simulated = FlowerLink(tmp_path / "flwr-home", {"DMNREID_CACHE": str(tmp_path / "cache")})
    try:
        run_id, log = simulated.start_run({**RUN, "output-dir": str(tmp_path / "out")},
                                          supernodes=CAMERAS)
        assert simulated.wait(run_id) == "finished:completed", log[-3000:]
    finally:
        simulated.stop()
    run_dir = next((tmp_path / "out").iterdir())
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(
        (deployed_run["dir"] / "metrics.json").read_text())
    assert [h["loss"] for h in read_lines(run_dir / "hops.jsonl")] == [
        h["loss"] for h in read_lines(deployed_run["dir"] / "hops.jsonl")]


def test_only_registered_verified_supernodes_join(network: dict, deployed, tmp_path: Path):
    """A SuperNode with an unregistered key, one without TLS (plaintext, no key: Flower
    refuses a key over plaintext itself) and one that does not verify the SuperLink against
    ca.crt (the system's roots only) are all refused; the registered ones stay the only
    nodes."""
    link, ids = deployed
    rogue_key, _ = make_node_key(tmp_path / "keys", "rogue")
    attempts = {"unregistered key": {"key": rogue_key},
                "no TLS": {"tls": "insecure", "key": None}, "no CA": {"tls": "system"}}
    for why, options in attempts.items():
        proc = start_device(link, network, 2, cwd=tmp_path / why, retries=1, **options)
        assert proc.wait(timeout=120) != 0, (why, proc.log_path.read_text()[-2000:])
    assert set(link.nodes()) == set(ids.values())
    assert all(status == "online" for status in link.nodes().values())


def wait_for(condition, what: str, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise TimeoutError(f"{what} after {timeout} s")


def kill_device(link: FlowerLink, camera: int) -> None:
    """SIGKILL a camera's SuperNode and everything it started: a device that loses power."""
    os.killpg(link.devices[camera].pid, signal.SIGKILL)
    link.devices[camera].wait(timeout=30)


def test_a_server_without_data_keeps_going_when_nodes_drop_out(network: dict, deployed):
    """Last in this module (it kills SuperNodes).

    ``dataset = "devices"``: the server holds no partition, learns the cameras and their
    tracklet counts from the devices, and (``eval-mode = "none"``) evaluates nothing.

    One camera's SuperNode is killed during the walk and restarted with its key; another is
    killed during the clustering rounds. The run completes: the hop to the dead node is
    skipped with the weights kept, the restarted node rejoins and trains again, the labels
    come from the cameras that answered every round, and pick-one unification picks one of
    them; the walking weights travel in float16 both ways, half the bytes of the float32
    run, and so do the memory banks (feature-dtype = float16)."""
    link, _ = deployed
    out = network["root"] / "dropout-out"
    config = {**RUN, "dataset": "devices", "cameras": CAMERAS, "output-dir": str(out),
              "walk-hops": 6, "walk-order": "permutation", "incremental-hops": 3,
              "eval-mode": "none", "unify": "pick-one", "hop-timeout": 60.0,
              "node-retries": 0, "probe-interval": 5.0, "transfer-dtype": "float16",
              "feature-dtype": "float16"}
    cameras = sorted(network["devices"])
    planned = [cameras[i] for i in hop_order(len(cameras), 6, "permutation", RUN["seed"])]
    walker, clustered_out = planned[2], min(c for c in cameras if c != planned[2])
    run_id, _ = link.start_run(config, stream=False)
    hops_file = wait_for(lambda: next(out.glob("*/hops.jsonl"), None), "no hop")
    run_dir = hops_file.parent
    kill_device(link, walker)  # hop 0 is done, hop 1 under way: hop 2 goes to a dead node
    wait_for(lambda: len(read_lines(hops_file)) >= 3, "hop 2 never ended")
    link.devices[walker] = start_device(link, network, walker)  # same key, same node id
    bank = network["devices"][clustered_out] / "data" / "runs" / run_dir.name / "memory.npy"
    wait_for(bank.is_file, "no memory round")
    time.sleep(1.0)
    kill_device(link, clustered_out)
    assert link.wait(run_id) == "finished:completed"

    hops = read_lines(hops_file)
    walk = [h for h in hops if h["phase"] == "walk"]
    assert [h["hop"] for h in walk if "skipped" in h] == [2]
    assert walk[2]["camera"] == walker  # the SuperLink may have noticed the missed heartbeats
    assert any(why in walk[2]["skipped"] for why in ("did not answer within 60 s",
                                                     "Node Unavailable")), walk[2]["skipped"]
    assert walk[3]["sent_digest"] == walk[2]["sent_digest"] != walk[1]["sent_digest"]
    assert all("loss" in h for h in hops if "skipped" not in h)
    assert any(h["camera"] == walker and "loss" in h for h in hops[3:])  # visited again
    events = json.loads((run_dir / "network.json").read_text())["events"]
    assert any(e["camera"] == walker and e["event"] == "rejoined" for e in events)

    clustering = json.loads((run_dir / "clustering.json").read_text())
    kept = [c for c in cameras if c != clustered_out]
    assert clustering["cameras"] == kept and list(clustering["missing"]) == [str(clustered_out)]
    banks = {c: np.load(network["devices"][c] / "data" / "runs" / run_dir.name / "memory.npy")
             for c in kept}
    reference = cluster_centralised(banks, alpha=RUN["alpha"])
    assert np.array_equal(np.load(run_dir / "clusters.npz")["cluster_of"],
                          reference.cluster_of)
    assert {h["camera"] for h in hops if h["phase"] == "incremental"} <= set(kept)
    unification = json.loads((run_dir / "unification.json").read_text())
    assert unification["mode"] == "pick-one" and len(unification["cameras"]) == 1
    assert set(unification["cameras"]) <= set(kept)
    assert (run_dir / "checkpoints" / "final.pt").is_file()
    # nothing to score on: only what the run computed from
    assert set(json.loads((run_dir / "metrics.json").read_text())) == {"provenance"}
    assert not (run_dir / "evaluations.jsonl").exists()
    style = json.loads((run_dir / "style.json").read_text())  # trained, reused, not measured
    assert set(style["per_camera"]) == {"2", "3"} and "mean" not in style
    assert "diagnostics" not in clustering  # no ground truth on the server

    full = json.loads((run_dir / "walking.json").read_text())["bytes"]  # in float32
    half = [h[k] for h in hops if "skipped" not in h for k in ("bytes_sent", "bytes_received")]
    assert all(abs(b / full - 0.5) < 0.005 for b in half), (half, full)
    memory = clustering["per_round"][0]
    answered = kept + ([clustered_out] if clustering["missing"][str(clustered_out)]["round"]
                       != "memory" else [])
    all_banks = sum(len(np.load(network["devices"][c] / "data" / "runs" / run_dir.name /
                                "memory.npy")) for c in answered)
    assert clustering["memories"] == sum(len(banks[c]) for c in kept)
    assert memory["name"] == "memory" and memory["messages"] == len(cameras)
    assert 0 <= memory["bytes_received"] - all_banks * 512 * 2 < 2_000, memory  # + metrics
