"""The whole pipeline end to end through Flower's real simulation engine.

One tiny run (3 cameras, small images, no pretrained weights: walk, clustering, incremental
walk, averaging unification; camera BN statistics, federated evaluation) is shared by most
tests; a second run (shared BN statistics, server-side evaluation) is stopped mid-walk and
resumed. Finished runs are evaluated again in the other modes. A SuperLink is started per
module and stopped by its PID.
"""

from __future__ import annotations

import itertools
import json
import time
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest
import torch

from dmnreid.config import ConfigError, RunConfig
from dmnreid.data_prep.partition import read_partition
from dmnreid.reid.camera_bn import state_bytes
from dmnreid.reid.model import build_model, stem_digest, walking_state, weights_digest
from dmnreid.server_app import reevaluate
from dmnreid.strategies.walk_strategy import hop_order
from dmnreid.style.networks import ResnetGenerator
from tests.conftest import CAMERAS, TINY
from tests.flower_harness import FlowerLink
from tests.privacy import MESSAGE_TYPES, audit_entries, check_replies

SHARED = {"bn-mode": "shared", "eval-mode": "server"}
WALK, INCREMENTAL = TINY["walk-hops"], TINY["incremental-hops"]
HOP_KEYS = {"phase", "hop", "node", "camera", "loss", "accuracy", "images", "seconds",
            "num_classes", "stem_digest", "round_trip_seconds", "bytes_sent", "bytes_received",
            "sent_digest", "step", "walker"}
SCORES = {"rank1", "rank5", "rank10", "mAP"}


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_finishes(tiny_run):
    # `flwr run` can exit 0 when the ServerApp failed: the status is what counts.
    assert tiny_run["status"] == "finished:completed", tiny_run["log"][-3000:]
    assert tiny_run["dir"] is not None


def test_hops_follow_the_seeded_order_and_are_well_formed(tiny_run):
    hops = read_lines(tiny_run["dir"] / "hops.jsonl")
    assert [(h["phase"], h["hop"]) for h in hops] == [
        *(("walk", i) for i in range(WALK)), *(("incremental", i) for i in range(INCREMENTAL))]
    assert all(set(h) == HOP_KEYS for h in hops)
    assert all(h["step"] == h["hop"] and h["walker"] == 0 for h in hops)  # one walker
    cameras = list(range(1, CAMERAS + 1))
    expected = [cameras[i] for i in hop_order(CAMERAS, WALK, "random", TINY["seed"])]
    expected += [cameras[i] for i in hop_order(CAMERAS, INCREMENTAL, "random", TINY["seed"] + 1)]
    assert [h["camera"] for h in hops] == expected
    assert all(a["camera"] != b["camera"] for a, b in pairwise(hops)
               if a["phase"] == b["phase"])
    assert all(h["images"] > 0 and h["loss"] > 0 and 0 <= h["accuracy"] <= 1 for h in hops)


def test_each_node_trains_its_own_head(tiny_run):
    partition = next(Path(tiny_run["cache"], "partitions").iterdir())
    tracklets = {n["camera"]: n["tracklets"] for n in read_partition(partition)["nodes"]}
    hops = read_lines(tiny_run["dir"] / "hops.jsonl")
    walk = [h for h in hops if h["phase"] == "walk"]
    assert {h["camera"]: h["num_classes"] for h in walk} == {
        h["camera"]: tracklets[h["camera"]] for h in walk}
    assert len(set(tracklets.values())) > 1  # the cameras really differ in class count
    # re-clustered before each incremental hop: each hop's head has that clustering's size
    for hop in (h for h in hops if h["phase"] == "incremental"):
        name = "clustering.json" if hop["hop"] == 0 else f"clustering-{hop['hop']}.json"
        assert hop["num_classes"] == json.loads((tiny_run["dir"] / name).read_text())["clusters"]


def test_only_the_walking_layers_travel_and_the_stem_stays_identical(tiny_run):
    model = build_model("resnet18", None, 1, freeze_stem=True)
    walking = walking_state(model, bn_mode="camera")
    walking_bytes = sum(t.numel() * t.element_size() for t in walking.values())
    shared_bytes = state_bytes(walking_state(model))
    recorded = json.loads((tiny_run["dir"] / "walking.json").read_text())
    assert recorded["bytes"] == walking_bytes < shared_bytes  # the BN statistics stay home
    assert recorded["bytes"] + recorded["bn-statistics-bytes"] == shared_bytes
    assert recorded["bn-statistics-travel"] is False
    hops = read_lines(tiny_run["dir"] / "hops.jsonl")
    on_the_wire = walking_bytes / 2  # transfer-dtype = "float16", the default
    for hop in hops:
        assert abs(hop["bytes_sent"] - on_the_wire) / on_the_wire < 0.01
        assert abs(hop["bytes_received"] - on_the_wire) / on_the_wire < 0.01
        assert hop["stem_digest"] == stem_digest(model)  # after training, on every node
    checkpoint = torch.load(tiny_run["dir"] / "checkpoints" / "latest.pt", weights_only=True)
    assert set(checkpoint["state"]) == set(walking)
    assert all(k.startswith("middle.") for k in checkpoint["state"])


def test_metrics_and_evaluations(tiny_run):
    metrics = json.loads((tiny_run["dir"] / "metrics.json").read_text())
    assert set(metrics) == {"baseline", "walk", "incremental", "final", "provenance"}
    provenance = metrics.pop("provenance")  # what the scores were computed from
    weights = Path(json.loads((tiny_run["dir"] / "config.json").read_text())[
        "pretrained-weights"])
    assert provenance["weights-sha256"] == weights_digest(weights)
    assert provenance["stand-in-sha256"] == ""  # a weights file of its own, not the stand-in
    assert (provenance["cpu-capability"], provenance["torch"]) == (
        torch.backends.cpu.get_cpu_capability(), torch.__version__)
    assert "provenance" not in pd.read_csv(tiny_run["dir"] / "metrics.csv")["stage"].tolist()
    for stage in metrics.values():
        assert set(stage) == SCORES
        assert all(0 <= v <= 100 for v in stage.values())
    evaluations = read_lines(tiny_run["dir"] / "evaluations.jsonl")
    assert [(e["stage"], e["hop"]) for e in evaluations] == [
        ("baseline", 0), ("walk", 2), ("walk", 4), ("incremental", 6), ("final", 6)]
    assert json.loads((tiny_run["dir"] / "config.json").read_text())["walk-hops"] == 4
    visited = sorted({c + 1 for c in hop_order(CAMERAS, INCREMENTAL, "random",
                                               TINY["seed"] + 1)})
    assert json.loads((tiny_run["dir"] / "unification.json").read_text()) == {
        "mode": "average", "cameras": visited, "count": len(visited), "trained": visited}
    assert (tiny_run["dir"] / "metrics.csv").is_file()
    assert (tiny_run["dir"] / "map_curve.png").stat().st_size > 0


def test_privacy_nodes_send_only_weights_features_ids_and_scalars(tiny_run):
    """Every reply any node sent in a full run, every phase; nothing derived from pixels but
    weights and feature vectors, no paths, no images."""
    entries = audit_entries(tiny_run["audit"])
    assert {e["message_type"] for e in entries} == MESSAGE_TYPES
    # the weights went to each node once (asked with query.info, then sent), and never back
    assert sum(e["message_type"] == "query.pretrained" for e in entries) == CAMERAS
    assert {e["records"]["metrics"]["entries"]["held"]["value"] for e in entries
            if e["message_type"] == "query.info"} == {0}
    assert sum(e["message_type"] == "train.walk" for e in entries) == WALK + INCREMENTAL
    assert sum(e["message_type"] == "train.style" for e in entries) == CAMERAS - 1
    evaluations = len(read_lines(tiny_run["dir"] / "evaluations.jsonl"))
    assert sum(e["message_type"] == "query.embed" for e in entries) == CAMERAS * evaluations
    check_replies(entries, walking_state(build_model("resnet18", None, 1), bn_mode="camera"),
                  ResnetGenerator(TINY["style-generator-filters"],
                                  TINY["style-generator-blocks"]).state_dict())


def test_resume_continues_from_the_last_checkpoint(link: FlowerLink, tmp_path: Path):
    config = {**TINY, **SHARED, "walk-hops": 6, "local-epochs": 3, "output-dir": str(tmp_path),
              "run-name": "resume", "incremental-hops": 0}
    run_id, _ = link.start_run(config, supernodes=CAMERAS, stream=False)
    deadline = time.monotonic() + 600
    hops_file = None
    while time.monotonic() < deadline:
        found = list(tmp_path.glob("*-resume/hops.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 2:
            hops_file = found[0]
            break
        time.sleep(0.5)
    assert hops_file is not None, "the run never reached its second hop"
    link.stop_run(run_id)
    assert link.wait(run_id) != "finished:completed"
    before = read_lines(hops_file)
    assert 2 <= len(before) < 6
    # hops the checkpoint holds are kept; a hop written but stopped before its checkpoint
    # is redone (which of the two the stop caught is a race, so read it from the checkpoint)
    redone = torch.load(hops_file.parent / "checkpoints/latest.pt")["info"]["hop"] + 1
    assert len(before) - 1 <= redone <= len(before)

    # resumed while camera 3's node is gone (two SuperNodes); the resumed call waits only
    # 15 s for nodes (node-timeout), as long as it takes for a hop (hop-timeout)
    resumed, log = link.start_run({"resume-from": str(hops_file.parent), "node-timeout": 15.0,
                                   "hop-timeout": 600.0}, supernodes=CAMERAS - 1)
    assert link.wait(resumed) == "finished:completed", log[-3000:]
    after = read_lines(hops_file)
    assert [h["hop"] for h in after] == list(range(6)) and all("loss" in h for h in after)
    assert after[:redone] == before[:redone]  # finished hops kept
    planned = [i + 1 for i in hop_order(CAMERAS, 6, "random", TINY["seed"])]
    assert [h["camera"] for h in after[:redone]] == planned[:redone]
    for hop, camera in zip(after[redone:], planned[redone:], strict=True):
        assert hop["camera"] == camera if camera != 3 else hop["camera"] in (1, 2)
    assert 3 in planned[redone:]  # a hop planned for the missing camera went to another
    network = json.loads((hops_file.parent / "network.json").read_text())
    assert list(network["left_out"]) == ["3"] and "resumed" in network["left_out"]["3"]
    assert json.loads((hops_file.parent / "config.json").read_text())["node-timeout"] == 300.0
    metrics = json.loads((hops_file.parent / "metrics.json").read_text())
    assert set(metrics) == {"baseline", "walk", "final", "provenance"}
    assert len(metrics["provenance"]["resumed"]) == 1  # the resume recorded its kernel path
    rounds = json.loads((hops_file.parent / "rounds.json").read_text())
    assert rounds["set-up"]["rounds"] == 2  # one query.info round per call: added up
    assert rounds["walk"]["rounds"] >= 6

    # the finished shared-statistics run, evaluated again: by the nodes with the same
    # statistics (the same numbers), then with each camera's own (test-time adaptation)
    for modes in ({"bn-mode": "shared", "eval-mode": "federated"},
                  {"bn-mode": "camera", "eval-mode": "federated"}):
        run_id, log = link.start_run({"evaluate-run": str(hops_file.parent), **modes},
                                     supernodes=CAMERAS)
        assert link.wait(run_id) == "finished:completed", log[-3000:]
    shared, camera = read_lines(hops_file.parent / "re-evaluations.jsonl")
    assert shared["trained-bn-mode"] == camera["trained-bn-mode"] == "shared"
    assert all(abs(shared[k] - metrics["final"][k]) < 1e-5 for k in SCORES)
    assert camera["bn-mode"] == "camera" and camera["mAP"] != shared["mAP"]


def test_federated_and_server_evaluation_agree(link: FlowerLink, tiny_run):
    """The tiny run evaluated on its nodes; its final model scored by the server alone."""
    run_id, log = link.start_run({"evaluate-run": str(tiny_run["dir"]), "bn-mode": "camera",
                                  "eval-mode": "server"}, supernodes=CAMERAS)
    assert link.wait(run_id) == "finished:completed", log[-3000:]
    (again,) = read_lines(tiny_run["dir"] / "re-evaluations.jsonl")
    final = json.loads((tiny_run["dir"] / "metrics.json").read_text())["final"]
    assert again["eval-mode"] == "server" and again["trained-bn-mode"] == "camera"
    assert all(abs(again[k] - final[k]) < 1e-5 for k in SCORES), (again, final)


def test_a_camera_statistics_model_cannot_be_scored_with_shared_ones(tiny_run):
    config = RunConfig(evaluate_run=str(tiny_run["dir"]), bn_mode="shared")
    with pytest.raises(ConfigError, match="only be evaluated with bn-mode = 'camera'"):
        reevaluate(None, config)


def test_style_phase_record(tiny_run):
    summary = json.loads((tiny_run["dir"] / "style.json").read_text())
    assert summary["target_camera"] == 1
    assert set(summary["per_camera"]) == {str(c) for c in range(2, CAMERAS + 1)}
    for camera in summary["per_camera"].values():
        assert camera["iterations"] == TINY["style-iterations"] and camera["skipped"] == 0
        assert camera["seconds-per-batch"] > 0 and camera["translate-seconds-per-image"] > 0
        assert min(camera[f"{k}_{w}"] for k in ("colour", "feature")
                   for w in ("before", "after")) >= 0
    assert summary["seconds_per_batch"] > 0
    assert (tiny_run["dir"] / "style_grid.png").stat().st_size > 0


def test_an_interrupted_style_phase_resumes_on_the_nodes(link: FlowerLink, tmp_path: Path):
    """Stopped while nodes train their CycleGANs; the resumed run's nodes continue from their
    own checkpoints instead of starting again."""
    config = {**TINY, "style-iterations": 300, "walk-hops": 2, "incremental-hops": 0,
              "eval-every": 2, "output-dir": str(tmp_path), "run-name": "style-resume"}
    partitions = Path(link.env["DMNREID_CACHE"], "partitions")
    before = set(partitions.glob("*/camera-*/style/*/checkpoint.pt"))
    run_id, _ = link.start_run(config, supernodes=CAMERAS, stream=False)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not (
            set(partitions.glob("*/camera-*/style/*/checkpoint.pt")) - before):
        time.sleep(0.2)
    link.stop_run(run_id)
    assert link.wait(run_id) != "finished:completed"
    run_dir = next(tmp_path.glob("*-style-resume"))
    assert not (run_dir / "style.json").exists()

    resumed, log = link.start_run({"resume-from": str(run_dir)}, supernodes=CAMERAS)
    assert link.wait(resumed) == "finished:completed", log[-3000:]
    per_camera = json.loads((run_dir / "style.json").read_text())["per_camera"]
    assert all(c["iterations"] == 300 for c in per_camera.values())
    assert any(c["resumed-from"] > 0 for c in per_camera.values()), per_camera
    assert set(json.loads((run_dir / "metrics.json").read_text())) == {
        "baseline", "walk", "final", "provenance"}


def test_rounds_per_phase(tiny_run):
    """rounds.json counts every message round by phase: one per hop, one for style transfer
    (the generators come with its replies), two at set-up (query.info also asks whether a node
    holds the weights, then they are sent), each clustering's rounds, one per federated
    evaluation and one for unification; its messages are exactly the replies nodes sent.
    messages.json counts them by type, a hop's message with the bytes hops.jsonl has."""
    rounds = json.loads((tiny_run["dir"] / "rounds.json").read_text())
    clusterings = [json.loads(f.read_text())["rounds"]
                   for f in tiny_run["dir"].glob("clustering*.json")]
    evaluations = len(read_lines(tiny_run["dir"] / "evaluations.jsonl"))
    assert {phase: entry["rounds"] for phase, entry in rounds.items()} == {
        "set-up": 2, "style transfer": 1, "walk": WALK, "incremental": INCREMENTAL,
        "clustering": sum(clusterings), "evaluation": evaluations, "unification": 1}
    assert len(clusterings) == INCREMENTAL  # recluster-every 1
    assert sum(e["messages"] for e in rounds.values()) == len(audit_entries(tiny_run["audit"]))
    assert rounds["walk"]["messages"] == WALK and rounds["evaluation"]["messages"] == \
        CAMERAS * evaluations
    assert all(e["seconds"] > 0 for e in rounds.values())
    by_type = json.loads((tiny_run["dir"] / "messages.json").read_text())
    walk, hops = by_type["train.walk"], read_lines(tiny_run["dir"] / "hops.jsonl")
    assert set(by_type) == MESSAGE_TYPES and walk["bytes_sent"] / walk["messages"] == \
        pytest.approx(sum(h["bytes_sent"] for h in hops) / len(hops), rel=0.01), by_type


def test_clustering_record(tiny_run):
    summary = json.loads((tiny_run["dir"] / "clustering.json").read_text())
    names = [r["name"] for r in summary["per_round"]]
    assert names[:3] == ["memory", "top1", "triangle"] and names[3].startswith("flood-")
    assert summary["rounds"] == len(names) and summary["messages"] == sum(
        r["messages"] for r in summary["per_round"])
    assert all(r["bytes"] > 0 and r["seconds"] >= 0 for r in summary["per_round"])
    assert summary["edges_kept"] == summary["edges_mutual"]  # alpha 0 keeps every edge
    assert 1 <= summary["clusters"] <= summary["memories"]
    for graph in ("triangle", "mutual_top1"):
        scores = summary["diagnostics"][graph]
        assert 0 <= scores["precision"] <= 1 and 0 <= scores["nmi"] <= 1
        assert scores["memories"] == summary["memories"]


def test_the_in_process_driver_scores_what_the_flower_run_scored(
        tiny_run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The experiments' driver, given the tiny run's settings and node folders, walks to the
    same weights: its scores equal the Flower run's after the walk and the incremental walk
    (the Flower run evaluated on its nodes, the driver on the server's copy)."""
    from dmnreid.experiments.driver import Network

    monkeypatch.setenv("DMNREID_CACHE", str(tiny_run["cache"]))
    cfg = RunConfig.from_mapping(json.loads((tiny_run["dir"] / "config.json").read_text()))
    network = Network(cfg)
    network.style(tmp_path / "grid.png")  # the nodes' CycleGANs, reused from their folders
    walked = network.first_walk(network.initial_state())
    incremental, clusterings = network.incremental(walked.state)
    metrics = json.loads((tiny_run["dir"] / "metrics.json").read_text())
    for stage, state in (("walk", walked.state), ("incremental", incremental.state)):
        scores = network.score(state)
        assert all(abs(scores[k] - metrics[stage][k]) < 1e-5 for k in SCORES), (stage, scores)
    saved = [json.loads((tiny_run["dir"] / name).read_text())
             for name in ("clustering.json", "clustering-1.json")]
    assert [c["clusters"] for c in clusterings] == [c["clusters"] for c in saved]


WALKERS = {**TINY, "style-transfer": False, "walkers": 2, "walk-hops": 6, "local-epochs": 2,
           "incremental-hops": 2, "recluster-every": 0, "eval-every": 5,
           "incremental-labels": "oracle", "incremental-loss": "prototype",
           "eval-mode": "server", "unify": "pick-one"}


def test_two_walkers_resume_mid_walk_and_train_what_the_driver_trains(
        link: FlowerLink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two walkers (the walk, then the incremental walk with a prototype memory that merges
    entry by entry), stopped mid-walk and resumed: every step trains two distinct cameras
    at once, and the run ends with the scores the in-process driver's uninterrupted walk
    gives."""
    from dmnreid.experiments.driver import Network

    run_id, _ = link.start_run({**WALKERS, "output-dir": str(tmp_path), "run-name": "walkers",
                                "message-audit": str(tmp_path / "audit")},
                               supernodes=CAMERAS, stream=False)
    deadline = time.monotonic() + 600
    hops_file = None
    for polled in itertools.count():
        found = list(tmp_path.glob("*-walkers/hops.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 2:
            hops_file = found[0]
        if hops_file is not None or time.monotonic() > deadline:
            break
        if polled % 20 == 19:  # a run that failed early says so, rather than time out
            assert not link.status(run_id).startswith("finished"), link.status(run_id)
        time.sleep(0.5)
    assert hops_file is not None, "the run never finished its first step"
    link.stop_run(run_id)
    assert link.wait(run_id) != "finished:completed"
    checkpoint = torch.load(hops_file.parent / "checkpoints/latest.pt")
    assert checkpoint["info"]["phase"] == "walk" and checkpoint["info"]["hop"] < 5
    assert len(checkpoint["walkers"]["walkers"]) == 2  # each walker's weights are saved

    resumed, log = link.start_run({"resume-from": str(hops_file.parent)}, supernodes=CAMERAS)
    assert link.wait(resumed) == "finished:completed", log[-3000:]
    hops = read_lines(hops_file)
    # walkers from one model at a phase's start and after a merge (every 2 steps: a pass
    # over 3 cameras), from their own after a step apart
    for phase, count, same in (("walk", 6, [True, False, True]), ("incremental", 2, [True])):
        mine = [h for h in hops if h["phase"] == phase]
        assert [h["hop"] for h in mine] == list(range(count))
        assert [h["step"] for h in mine] == [i // 2 for i in range(count)]
        assert [h["walker"] for h in mine] == [0, 1] * (count // 2)
        pairs = list(zip(mine[::2], mine[1::2], strict=True))  # a step: two cameras at once
        assert all(a["camera"] != b["camera"] for a, b in pairs)
        assert [a["sent_digest"] == b["sent_digest"] for a, b in pairs] == same
    rounds = json.loads((hops_file.parent / "rounds.json").read_text())
    assert rounds["incremental"]["rounds"] == 1  # one message round per step
    check_replies(audit_entries(tmp_path / "audit"),
                  walking_state(build_model("resnet18", None, 1), bn_mode="camera"), {})

    monkeypatch.setenv("DMNREID_CACHE", link.env["DMNREID_CACHE"])
    cfg = RunConfig.from_mapping(json.loads((hops_file.parent / "config.json").read_text()))
    network = Network(cfg)
    walked = network.first_walk(network.initial_state())
    incremental, _ = network.incremental(walked.state)
    metrics = json.loads((hops_file.parent / "metrics.json").read_text())
    for stage, state in (("walk", walked.state), ("incremental", incremental.state)):
        scores = network.score(state)
        assert all(abs(scores[k] - metrics[stage][k]) < 1e-5 for k in SCORES), (stage, scores)
    assert [(h["hop"], h["step"], h["walker"], h["camera"]) for h in walked.hops] == \
        [(h["hop"], h["step"], h["walker"], h["camera"]) for h in hops if h["phase"] == "walk"]
