"""``RandomWalk`` as a Flower strategy in a plain Flower app (no project code but the
strategy), through Flower's real simulation engine and its own ``Strategy.start``.

The app's nodes each hold a different number of classes; every visit re-initialises a
classifier head of that size, trains one step and sends back only the body. Each visit
leaves a file saying what the node received and returned, so the test sees one node per
round, the seeded order, and the body carried from node to node.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
import tomli_w

from dmnreid.strategies.walk_strategy import RandomWalk, hop_order
from dmnreid.strategies.walkers import step_members
from tests.conftest import started_link
from tests.flower_harness import FlowerLink

NODES, ROUNDS, SEED = 4, 7, 11

WALK_APP = '''"""A plain Flower app that walks a tiny model with dmnreid's RandomWalk."""

import json
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from dmnreid.strategies.walk_strategy import RandomWalk

client = ClientApp()
server = ServerApp()


def checksum(state):
    return float(sum(t.double().sum() for t in state.values()))


@client.query()
def partition(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    return Message(RecordDict({"metrics": MetricRecord({"partition-id": pid})}), reply_to=msg)


@client.train()
def train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    classes = 2 + pid  # every node its own label space
    torch.manual_seed(pid)
    images, labels = torch.randn(16, 4), torch.randint(classes, (16,))
    body = torch.nn.Linear(4, 3)
    body.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    received = checksum(body.state_dict())
    head = torch.nn.Linear(3, classes)  # re-initialised at every visit, never sent
    loss = torch.nn.functional.cross_entropy(head(body(images)), labels)
    loss.backward()
    with torch.no_grad():
        for p in [*body.parameters(), *head.parameters()]:
            p -= 0.5 * p.grad
    server_round = int(msg.content["config"]["server-round"])
    out = Path(context.run_config["out"])
    (out / f"visit-{server_round}-{pid}.json").write_text(json.dumps({
        "round": server_round, "partition": pid, "head": list(head.weight.shape),
        "hop": int(msg.content["config"]["hop"]),
        "walker": int(msg.content["config"]["walker"]),
        "received": received, "returned": checksum(body.state_dict())}))
    return Message(RecordDict({
        "arrays": ArrayRecord(body.state_dict()),
        "metrics": MetricRecord({"num-examples": 16, "partition-id": pid,
                                 "head-classes": classes, "loss": float(loss)})}),
        reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    strategy = RandomWalk(order=cfg["order"], seed=int(cfg["seed"]),
                          min_available_nodes=int(cfg["nodes"]), walkers=int(cfg["walkers"]))
    initial = ArrayRecord(torch.nn.Linear(4, 3).state_dict())
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=int(cfg["rounds"]),
                            timeout=300)
    members = strategy.members(grid)
    replies = grid.send_and_receive([Message(RecordDict({"config": ConfigRecord({})}),
                                             dst_node_id=n, message_type="query")
                                     for n in members], timeout=300)
    partition_of = {r.metadata.src_node_id: int(r.content["metrics"]["partition-id"])
                    for r in replies}
    Path(cfg["out"], "server.json").write_text(json.dumps({
        "members": [partition_of[n] for n in members],
        "visited": [int(result.train_metrics_clientapp[r]["partition-id"])
                    for r in sorted(result.train_metrics_clientapp)],
        "heads": [int(result.train_metrics_clientapp[r]["head-classes"])
                  for r in sorted(result.train_metrics_clientapp)],
        "final": checksum(result.arrays.to_torch_state_dict())}))
'''


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowerLink]:
    yield from started_link(tmp_path_factory, "flwr-walk-strategy")


def walk_app(folder: Path) -> Path:
    """The plain Flower app folder: its pyproject.toml and its one module."""
    folder.mkdir(parents=True)
    app = {"project": {"name": "plain-walk", "version": "0.1.0", "dependencies": []},
           "tool": {"flwr": {"app": {
               "publisher": "dmnreid-tests",
               "components": {"serverapp": "walk_app:server", "clientapp": "walk_app:client"},
               "config": {"order": "random", "seed": 0, "rounds": 1, "nodes": 2,
                          "walkers": 1, "out": ""}}}}}
    (folder / "pyproject.toml").write_text(tomli_w.dumps(app))
    (folder / "walk_app.py").write_text(WALK_APP)
    return folder


def walked(link: FlowerLink, tmp_path: Path, **config: object) -> tuple[dict, list[dict]]:
    """The plain app's walk over NODES nodes (seed SEED) with ``config``: what the server
    recorded, and every visit in hop order."""
    out = tmp_path / "out"
    out.mkdir()
    run_id, log = link.start_run({**config, "seed": SEED, "nodes": NODES, "out": str(out)},
                                 supernodes=NODES, app=walk_app(tmp_path / "app"))
    assert link.wait(run_id) == "finished:completed", log[-3000:]
    server = json.loads((out / "server.json").read_text())
    return server, sorted((json.loads(p.read_text()) for p in out.glob("visit-*.json")),
                          key=lambda v: v["hop"])


@pytest.mark.parametrize("order", ["random", "permutation"])
def test_random_walk_drives_a_plain_flower_app(link: FlowerLink, tmp_path: Path, order: str):
    server, visits = walked(link, tmp_path, order=order, rounds=ROUNDS, walkers=1)

    # one node per round, in the order the seed gives over the nodes sorted by id
    assert [v["round"] for v in visits] == list(range(1, ROUNDS + 1))
    assert [(v["hop"], v["walker"]) for v in visits] == [(r, 0) for r in range(ROUNDS)]
    assert sorted(server["members"]) == list(range(NODES))
    expected = [server["members"][i] for i in hop_order(NODES, ROUNDS, order, SEED)]
    assert [v["partition"] for v in visits] == expected == server["visited"]
    assert all(a != b for a, b in pairwise(expected))
    # each node's own head size; only the body came back
    assert [v["head"] for v in visits] == [[2 + p, 3] for p in expected]
    assert server["heads"] == [2 + p for p in expected]
    # the body travels: each visit starts from what the one before returned, the result is
    # the last visit's body
    for before, after in pairwise(visits):
        assert after["received"] == pytest.approx(before["returned"], rel=1e-6)
        assert after["received"] != pytest.approx(before["received"], rel=1e-6)
    assert server["final"] == pytest.approx(visits[-1]["returned"], rel=1e-6)


def test_two_walkers_drive_a_plain_flower_app(link: FlowerLink, tmp_path: Path):
    """Two walkers over four nodes, merged every two rounds (a pass): each round two hops
    on two distinct nodes as the scheduler plans them, each walker from its own arrays
    between merges, both from their average after one; the result is the walkers' average."""
    rounds = 5
    server, visits = walked(link, tmp_path, order="random", rounds=rounds, walkers=2)
    assert [(v["round"], v["walker"], v["hop"]) for v in visits] == [
        (r + 1, w, 2 * r + w) for r in range(rounds) for w in (0, 1)]
    order, previous, expected = hop_order(NODES, 2 * rounds, "random", SEED), [None, None], []
    for first in range(0, 2 * rounds, 2):
        chosen = step_members([order[first], order[first + 1]], list(range(NODES)), previous,
                              SEED, first)
        expected += [server["members"][i] for i in chosen]
        previous = chosen
    assert [v["partition"] for v in visits] == expected
    by_round = [visits[i:i + 2] for i in range(0, len(visits), 2)]
    assert all(a["partition"] != b["partition"] for a, b in by_round)
    start, apart, merged, _, last = by_round
    assert start[0]["received"] == pytest.approx(start[1]["received"], rel=1e-6)
    for walker in (0, 1):  # on their own: each from what it returned the round before
        assert apart[walker]["received"] == pytest.approx(start[walker]["returned"], rel=1e-6)
    mean = (apart[0]["returned"] + apart[1]["returned"]) / 2  # 16 examples each
    assert merged[0]["received"] == pytest.approx(mean, rel=1e-5)
    assert merged[1]["received"] == pytest.approx(mean, rel=1e-5)
    assert server["final"] == pytest.approx((last[0]["returned"] + last[1]["returned"]) / 2,
                                            rel=1e-5)


def test_bad_settings_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="order 'spiral'"):
        RandomWalk(order="spiral")
    with pytest.raises(ValueError, match="min_available_nodes"):
        RandomWalk(min_available_nodes=0)
    with pytest.raises(ValueError, match="walkers = 0"):
        RandomWalk(walkers=0)
