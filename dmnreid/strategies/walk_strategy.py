"""The random walk (paper 3.2) as a Flower strategy: a drop-in beside ``FedAvg``.

Each round sends the current arrays to one node, chosen by a seeded walk order, and the
round's model is the one that node sends back: nothing is averaged. What a node does with
the arrays (the paper re-initialises its own classifier head, trains, and sends back only
the layers that travel) is the ClientApp's business, so the strategy works in any app::

    strategy = RandomWalk(order="random", seed=0)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                            num_rounds=18, evaluate_fn=central_evaluation)

With ``walkers=K`` it runs K walks at once (each round K hops on K distinct nodes) and merges
them every ``walker_merge`` rounds: the same hops in 1/K of the rounds.
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
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from dmnreid.strategies.walkers import (
    State,
    Walker,
    Walkers,
    check_walkers,
    merge_interval,
    step_members,
)

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


class RandomWalk(Strategy):
    """Sequential training along a seeded random walk over the nodes, one node per round; or
    ``walkers`` walks at once, one node each per round, merged every ``walker_merge`` rounds.

    Parameters
    ----------
    order : ``"random"`` (each next node uniform among the others) or ``"permutation"``
        (every node once per cycle).
    seed : the walk's seed; the same seed and nodes give the same visits.
    min_available_nodes : the walk waits for this many nodes before its first round; the
        nodes connected then (sorted by id) are the walk's, in that order.
    walkers : K walks at once (default 1, the paper's walk). Round r runs hops
        (r-1)K..rK-1 of the walk order on K distinct nodes, one per walker, each walker
        from its own arrays; K must not exceed the nodes.
    walker_merge : every this many rounds (0: once per pass over the connected nodes) the
        walkers' arrays are averaged, weighted by ``weighted_by_key`` (the examples each
        trained on since the last merge), and every walker continues from the average. The
        arrays a round returns (what ``evaluate_fn`` and the result see) are that average.
    weighted_by_key : the metric of a reply that weighs it in a merge.
    message_type : the type of the training messages (``"train"``; ``"train.<action>"``
        for a ClientApp with several training functions).
    arrayrecord_key, configrecord_key : the keys of the arrays and the config in a message,
        as for Flower's own strategies.

    A message's config gets ``server-round``, and ``hop`` and ``walker`` (its hop of the
    walk order and its walker). A planned node that is no longer connected, or already
    taken by another walker of the round, is replaced by a seeded choice among the connected
    free ones (never the walker's node of the round before when there is another); with none
    free the walker waits a round. A walker whose reply is missing or erred keeps the arrays
    it had. Evaluation is not part of the walk (the model lives on the server after every
    round): give ``start`` an ``evaluate_fn``; ``configure_evaluate`` sends nothing.
    """

    def __init__(self, order: str = "random", seed: int = 0, min_available_nodes: int = 2,
                 walkers: int = 1, walker_merge: int = 0,
                 weighted_by_key: str = "num-examples", message_type: str = MessageType.TRAIN,
                 arrayrecord_key: str = "arrays", configrecord_key: str = "config") -> None:
        if order not in WALK_ORDERS:
            raise ValueError(f"RandomWalk order {order!r}: expected one of "
                             f"{', '.join(WALK_ORDERS)}")
        if min_available_nodes < 1:
            raise ValueError("RandomWalk needs min_available_nodes >= 1")
        if walkers < 1:
            raise ValueError(f"walkers = {walkers}: at least one walker")
        if walker_merge < 0:
            raise ValueError(f"walker_merge = {walker_merge}: rounds, or 0 for once per pass")
        self.order = order
        self.seed = seed
        self.min_available_nodes = min_available_nodes
        self.walkers = walkers
        self.walker_merge = walker_merge
        self.weighted_by_key = weighted_by_key
        self.message_type = message_type
        self.arrayrecord_key = arrayrecord_key
        self.configrecord_key = configrecord_key
        self.team: Walkers | None = None  # the walkers' arrays, from the first round's
        self._members: list[int] | None = None
        self._plan: list[int] = []
        self._sent: dict[int, tuple[int, int, int]] = {}  # node id -> walker, hop, member
        self.live_count = 0  # members live at the last round

    def summary(self) -> None:
        log(INFO, "\t├── Walk order: %s, seed %d, %d walker(s), one node each per round",
            self.order, self.seed, self.walkers)
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
            check_walkers(self.walkers, len(nodes))
            self._members = nodes
        return self._members

    def live(self, grid: Grid) -> list[int]:
        """The members that can take a hop now: those still connected."""
        connected = set(grid.get_node_ids())
        return [m for m in self.members(grid) if m in connected]

    def node_of(self, member: int) -> int:
        """The node id a member's message goes to."""
        return member

    def planned(self, hop: int, grid: Grid) -> int:
        """The member the walk order plans for ``hop`` (0-based)."""
        members = self.members(grid)
        if hop >= len(self._plan):
            self._plan = hop_order(len(members), max(hop + 1, 2 * len(self._plan)),
                                   self.order, self.seed)
        return members[self._plan[hop]]

    def start_walkers(self, arrays: ArrayRecord) -> Walkers:
        """The walkers, all at ``arrays`` (a subclass may start them with more)."""
        return Walkers.start(self.walkers, arrays.to_torch_state_dict(), None, memory=False)

    def outgoing(self, walker: Walker) -> ArrayRecord:
        """The arrays a walker's message carries."""
        return ArrayRecord(walker.state)

    def records_for(self, walker: Walker, member: int) -> dict[str, ArrayRecord]:
        """More records for a walker's message to ``member`` (none here)."""
        return {}

    def configure_hops(self, hops: range, arrays: ArrayRecord, config: ConfigRecord,
                       grid: Grid, server_round: int) -> list[Message]:
        """One message per walker for ``hops`` (at most ``walkers`` of them): its arrays and
        config (with ``server-round``, ``hop``, ``walker``) to the node it visits."""
        if self.team is None:
            self.team = self.start_walkers(arrays)
        planned, live = [self.planned(h, grid) for h in hops], self.live(grid)
        self.live_count = len(live)
        if not live:
            raise RuntimeError(f"RandomWalk round {server_round}: no node of the walk is "
                               "available")
        walkers = self.team.walkers[:len(hops)]
        chosen = step_members(planned, live, [w.member for w in walkers], self.seed,
                              hops.start)
        messages, self._sent = [], {}
        for index, (hop, member) in enumerate(zip(hops, chosen, strict=True)):
            if member is None:
                log(INFO, "RandomWalk round %d: walker %d waits (no free node)",
                    server_round, index)
                continue
            walker = self.team.walkers[index]
            walker.member = member
            self._sent[self.node_of(member)] = (index, hop, member)
            content = RecordDict({
                self.arrayrecord_key: self.outgoing(walker),
                self.configrecord_key: ConfigRecord({**config, "server-round": server_round,
                                                     "hop": hop, "walker": index})})
            for key, record in self.records_for(walker, member).items():
                content[key] = record
            messages.append(Message(content, dst_node_id=self.node_of(member),
                                    message_type=self.message_type))
        return messages

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Round ``server_round``'s hops, one message per walker."""
        first = (server_round - 1) * self.walkers
        return self.configure_hops(range(first, first + self.walkers), arrays, config, grid,
                                   server_round)

    def returned(self, reply: Message, walker: int, hop: int, member: int
                 ) -> tuple[State | None, np.ndarray | None]:
        """What travels back with a walker besides its arrays, and the memory entries its hop
        refreshed (nothing here)."""
        return None, None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Each walker takes its node's arrays; merged when due. Returns the walkers'
        average (with one walker its arrays) and metrics; (None, None) when no reply is
        usable, so the walk keeps the arrays it had."""
        used = self.absorb(server_round, replies)
        if not used:
            return None, None
        state, _ = self.team.model()
        if len(used) == 1:
            return ArrayRecord(state), next(iter(used[0].metric_records.values()), None)
        return ArrayRecord(state), aggregate_metricrecords(used, self.weighted_by_key)

    def absorb(self, server_round: int, replies: Iterable[Message]) -> list[RecordDict]:
        """Each walker takes its node's arrays (a missing or erred reply leaves it as it
        was), and the walkers merge when due; returns the contents used."""
        used: list[RecordDict] = []
        for reply in replies:
            if reply.has_error():
                log(WARNING, "RandomWalk round %d: node %d erred (%s); its walker keeps the "
                    "arrays it had", server_round, reply.metadata.src_node_id,
                    reply.error.reason)
                continue
            arrays = reply.content.array_records.get(self.arrayrecord_key)
            sent = self._sent.get(reply.metadata.src_node_id)
            if arrays is None or sent is None:
                log(WARNING, "RandomWalk round %d: a reply without %r arrays or from a node "
                    "not visited; ignored", server_round, self.arrayrecord_key)
                continue
            index, hop, member = sent
            metrics = next(iter(reply.content.metric_records.values()), MetricRecord())
            head, owned = self.returned(reply, index, hop, member)
            self.team.hopped(index, hop, arrays.to_torch_state_dict(), head,
                             int(metrics.get(self.weighted_by_key, 1)), owned)
            used.append(reply.content)
        self.team.since_merge += 1
        if self.team.since_merge >= merge_interval(self.walker_merge, self.live_count,
                                                   self.walkers):
            self.team.merge()
        return used

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord,
                           config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        return None

