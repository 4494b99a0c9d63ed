"""The random walk (paper 3.2) as a Flower strategy: a drop-in beside ``FedAvg``.

Each round sends the current arrays to one node, chosen by a seeded walk order, and the
round's model is the one that node sends back: nothing is averaged. What a node does with
the arrays (the paper re-initialises its own classifier head, trains, and sends back only
the layers that travel) is the ClientApp's business, so the strategy works in any app::

    strategy = RandomWalk(order="random", seed=0)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                            num_rounds=18, evaluate_fn=central_evaluation)

The project's ServerApp walks with a subclass of it (``camera_training.CameraWalk``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

WALK_ORDERS = ("random", "permutation")


def hop_order(num_nodes: int, hops: int, order: str, seed: int) -> list[int]:
    """Node indices visited, one per hop, reproducible from ``seed``; a longer walk with the
    same seed starts with the same hops.

    ``random``: each next node uniform among the others (never the current one).
    ``permutation``: every node once per cycle, shuffled each cycle; a cycle never starts
    where the previous one ended.
    """
    if num_nodes < 1:
        raise ValueError("a walk needs at least one node")
    rng = np.random.default_rng(seed)
    visits: list[int] = []
    if order == "random":
        current = int(rng.integers(num_nodes))
        for _ in range(hops):
            visits.append(current)
            if num_nodes > 1:
                step = int(rng.integers(1, num_nodes))
                current = (current + step) % num_nodes
        return visits
    if order == "permutation":
        while len(visits) < hops:
            cycle = [int(i) for i in rng.permutation(num_nodes)]
            if visits and num_nodes > 1 and cycle[0] == visits[-1]:
                cycle[0], cycle[-1] = cycle[-1], cycle[0]
            visits.extend(cycle)
        return visits[:hops]
    raise ValueError(f"walk order {order!r}: expected one of {', '.join(WALK_ORDERS)}")


@dataclass(frozen=True)
class Coverage:
    """How a hop order covers its nodes: ``visited`` distinct nodes over the whole walk and
    ``per_pass`` distinct nodes in each pass (consecutive ``num_nodes`` hops; the last pass
    may be shorter)."""

    visited: int
    per_pass: tuple[int, ...]


def coverage(order: Sequence[int], num_nodes: int) -> Coverage:
    """The coverage of ``order`` over ``num_nodes`` nodes: a permutation walk visits every node
    once per pass, a random one leaves some out (tells what a walk's passes really train)."""
    passes = (order[i:i + num_nodes] for i in range(0, len(order), num_nodes))
    return Coverage(len(set(order)), tuple(len(set(p)) for p in passes))


def stand_in(live: Sequence[int], previous: int | None, seed: int, hop: int) -> int:
    """The member that takes a hop planned for an unavailable one: seeded, never the member
    of the hop before when another is live."""
    others = [m for m in live if m != previous] or list(live)
    return others[int(np.random.default_rng([seed, hop]).integers(len(others)))]


class RandomWalk(Strategy):
    """Sequential training along a seeded random walk over the nodes, one node per round.

    Parameters
    ----------
    order : ``"random"`` (each next node uniform among the others) or ``"permutation"``
        (every node once per cycle).
    seed : the walk's seed; the same seed and nodes give the same visits.
    min_available_nodes : the walk waits for this many nodes before its first round; the
        nodes connected then (sorted by id) are the walk's, in that order.
    message_type : the type of the training messages (``"train"``; ``"train.<action>"``
        for a ClientApp with several training functions).
    arrayrecord_key, configrecord_key : the keys of the arrays and the config in a message,
        as for Flower's own strategies.

    A planned node that is no longer connected is replaced, for that round, by a seeded
    choice among the connected ones (never the node of the round before when there is
    another). A round whose reply is missing or erred keeps the arrays it had.
    Evaluation is not part of the walk (the model lives on the server after every round):
    give ``start`` an ``evaluate_fn``; ``configure_evaluate`` sends nothing.
    """

    def __init__(self, order: str = "random", seed: int = 0, min_available_nodes: int = 2,
                 message_type: str = MessageType.TRAIN, arrayrecord_key: str = "arrays",
                 configrecord_key: str = "config") -> None:
        if order not in WALK_ORDERS:
            raise ValueError(f"RandomWalk order {order!r}: expected one of "
                             f"{', '.join(WALK_ORDERS)}")
        if min_available_nodes < 1:
            raise ValueError("RandomWalk needs min_available_nodes >= 1")
        self.order = order
        self.seed = seed
        self.min_available_nodes = min_available_nodes
        self.message_type = message_type
        self.arrayrecord_key = arrayrecord_key
        self.configrecord_key = configrecord_key
        self.previous: int | None = None  # the member visited by the last round
        self._members: list[int] | None = None
        self._plan: list[int] = []

    def summary(self) -> None:
        log(INFO, "\t├── Walk order: %s, seed %d, one node per round", self.order, self.seed)
        log(INFO, "\t└── Keys in records: arrays %r, config %r; message type %r",
            self.arrayrecord_key, self.configrecord_key, self.message_type)

    # the walk's members: node ids here; a subclass may walk over other names (cameras)
    def members(self, grid: Grid) -> list[int]:
        """The walk's members in their fixed order: the nodes connected at the first round
        (after waiting for ``min_available_nodes``), sorted by node id."""
        if self._members is None:
            while len(nodes := sorted(grid.get_node_ids())) < self.min_available_nodes:
                log(INFO, "RandomWalk: %d node(s) connected, waiting for %d", len(nodes),
                    self.min_available_nodes)
                time.sleep(1)
            self._members = nodes
        return self._members

    def live(self, grid: Grid) -> list[int]:
        """The members that can take a hop now: those still connected."""
        connected = set(grid.get_node_ids())
        return [m for m in self.members(grid) if m in connected]

    def node_of(self, member: int) -> int:
        """The node id a member's message goes to."""
        return member

    def planned(self, server_round: int, grid: Grid) -> int:
        """The member the walk order plans for ``server_round`` (1-based)."""
        members = self.members(grid)
        if server_round > len(self._plan):
            self._plan = hop_order(len(members), max(server_round, 2 * len(self._plan)),
                                   self.order, self.seed)
        return members[self._plan[server_round - 1]]

    def visit(self, server_round: int, grid: Grid) -> int:
        """The member that takes ``server_round``: the planned one, or a stand-in."""
        planned, live = self.planned(server_round, grid), self.live(grid)
        if not live:
            raise RuntimeError(f"RandomWalk round {server_round}: no node of the walk is "
                               "available")
        member = planned if planned in live else stand_in(live, self.previous, self.seed,
                                                          server_round - 1)
        self.previous = member
        return member

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """One message: the arrays and config (with ``server-round``) to this round's node."""
        member = self.visit(server_round, grid)
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key:
                              ConfigRecord({**config, "server-round": server_round})})
        return [Message(content, dst_node_id=self.node_of(member),
                        message_type=self.message_type)]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The visited node's arrays and metrics; (None, None) when its reply erred or has
        no arrays, so the walk keeps the arrays it had."""
        for reply in replies:
            if reply.has_error():
                log(WARNING, "RandomWalk round %d: node %d erred (%s); the walk keeps the "
                    "arrays it had", server_round, reply.metadata.src_node_id,
                    reply.error.reason)
                continue
            arrays = reply.content.array_records.get(self.arrayrecord_key)
            if arrays is None:
                log(WARNING, "RandomWalk round %d: the reply has no %r arrays; the walk "
                    "keeps the arrays it had", server_round, self.arrayrecord_key)
                continue
            return arrays, next(iter(reply.content.metric_records.values()), None)
        return None, None

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord,
                           config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        return None

