"""Bad replies never poison a run, through Flower's real simulation engine.

A diverging walk (learning rates far too high, accepted by the settings) skips every hop and
stops once every camera has failed, keeping the last good checkpoint. A network with faulty
nodes (the project's own ClientApp with a mod that replaces camera 2's hop weights and camera
3's model copy by NaN ones) completes: the faulty hops are recorded as skipped and the weights
after each skipped hop are those before it; unification leaves out the broken copy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from dmnreid.checks import non_finite
from dmnreid.data_prep.synthetic import SyntheticConfig, generate
from tests.flower_harness import PROJECT, FlowerLink

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
from pathlib import Path

import torch
from flwr.clientapp import ClientApp

from dmnreid import client_app as real
from dmnreid.data_prep.partition import load_node
from dmnreid.messages import CONFIG, WEIGHTS, record_state, state_record
from dmnreid.node_state import node_dir

FAULTS = {faults}
RECEIVED = Path({received!r})


def digest(state) -> str:
    sha = hashlib.sha256()
    for key in sorted(state):
        sha.update(key.encode() + state[key].numpy().tobytes())
    return sha.hexdigest()


def faults(msg, context, call_next):
    """Log the weights each hop receives; poison the replies FAULTS names."""
    config = msg.content[CONFIG]
    camera = load_node(node_dir(context.node_config, str(config["partition-dir"]))).camera
    kind = msg.metadata.message_type
    if kind == "train.walk":
        with (RECEIVED / f"camera-{{camera}}.jsonl").open("a") as fh:
            fh.write(json.dumps({{"phase": str(config["phase"]), "hop": int(config["hop"]),
                                  "digest": digest(record_state(msg.content[WEIGHTS]))}}) + "\\n")
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
                              ("query", "weights", real.weights)):
    getattr(app, kind)(action)(handler)
'''


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("flwr-faults")
    server = FlowerLink(home / "flwr-home", {"DMNREID_CACHE": str(home / "cache")})
    yield server
    server.stop()


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def faulty_app(folder: Path, faults: dict[str, list[int]], received: Path) -> Path:
    """A Flower app folder: the project's ServerApp, the faulty ClientApp, the same config."""
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    folder.mkdir(parents=True)
    received.mkdir(parents=True)
    app = {"project": {"name": "dmnreid-faulty", "version": "0.1.0", "dependencies": []},
           "tool": {"flwr": {"app": {
               "publisher": "dmnreid",
               "components": {"serverapp": "dmnreid.server_app:app",
                              "clientapp": "faulty_client:app"},
               "config": project["tool"]["flwr"]["app"]["config"]}}}}
    (folder / "pyproject.toml").write_text(tomli_w.dumps(app))
    (folder / "faulty_client.py").write_text(
        FAULTY_CLIENT.format(faults=json.dumps(faults), received=str(received)))
    return folder


def test_a_diverging_walk_stops_with_the_last_good_checkpoint(link: FlowerLink, tmp_path: Path):
    config = {**TINY, "lr-head": 1e30, "lr-backbone": 1e30, "walk-hops": 6,
              "incremental-hops": 0, "eval-every": 6, "output-dir": str(tmp_path),
              "run-name": "diverging", "message-audit": str(tmp_path / "audit")}
    run_id, log = link.start_run(config, supernodes=CAMERAS)
    assert link.wait(run_id) == "finished:failed", log[-3000:]
    assert "every camera failed its hop" in log, log[-3000:]
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
    assert unification["cameras"] == [1, 2]
    assert set(unification["rejected"]) == {"3"}
    assert "non-finite" in unification["rejected"]["3"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"baseline", "walk", "incremental", "final"}
    final = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)
    assert not non_finite(final["state"])


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
