"""The random walk (paper 3.2): hop order, what travels, and a record per hop."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from dmnreid.checks import StateError, check_state
from dmnreid.messages import (
    CONFIG,
    HEAD,
    WEIGHTS,
    NodeError,
    message_bytes,
    metrics_of,
    record_state,
    reply_content,
    state_record,
)


def hop_order(num_nodes: int, hops: int, order: str, seed: int) -> list[int]:
    """Node indices visited, one per hop, reproducible from ``seed``.

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
    raise ValueError(f"walk-order {order!r}: expected 'random' or 'permutation'")


@dataclass(frozen=True)
class Hop:
    """The record of one hop, one line of hops.jsonl."""

    phase: str
    hop: int
    node: int
    camera: int
    loss: float
    accuracy: float
    images: int
    seconds: float
    num_classes: int
    stem_digest: int
    round_trip_seconds: float
    bytes_sent: int
    bytes_received: int


@dataclass(frozen=True)
class SkippedHop:
    """A hop whose reply could not be used (one line of hops.jsonl, with its cause): the walk
    kept the weights it had and went on."""

    phase: str
    hop: int
    node: int
    camera: int
    skipped: str
    round_trip_seconds: float
    bytes_sent: int
    bytes_received: int


class HopFailed(NodeError):
    """A node answered a hop, but with nothing usable: diverged training, non-finite or
    malformed weights. Unlike a node that errs, this does not stop the walk."""

    def __init__(self, record: SkippedHop) -> None:
        super().__init__(f"hop {record.hop}: camera {record.camera} (node {record.node}): "
                         f"{record.skipped}")
        self.record = record


State = OrderedDict[str, torch.Tensor]
HOP_METRICS = ("loss", "accuracy", "images", "seconds", "num-classes", "stem-digest")


def _checked_reply(reply: RecordDict, state: State, head_like: State | None,
                   what: str) -> tuple[State, State | None, dict]:
    """The weights, head and metrics of a hop's reply, checked against what was sent;
    a StateError or KeyError says why they cannot be used."""
    metrics = metrics_of(reply)
    if int(metrics.get("diverged", 0)):
        raise StateError(f"training diverged at step {int(metrics['diverged-step'])} (learning "
                         "rates too high?); no weights sent")
    missing = sorted(set(HOP_METRICS) - set(metrics))
    if missing or WEIGHTS not in reply:
        raise StateError(f"reply without {missing or [WEIGHTS]}")
    new_state = record_state(reply[WEIGHTS])
    check_state(new_state, f"{what} weights", like=state)
    head = None
    if HEAD in reply:
        if head_like is None:
            raise StateError("sent a classifier head that was not asked for")
        head = record_state(reply[HEAD])
        check_state(head, f"{what} head", like=head_like)
    return new_state, head, metrics


def send_hop(grid: Grid, node_id: int, camera: int, hop: int, state: State, config: dict,
             timeout: float, extra: Mapping[str, ArrayRecord] | None = None,
             head_like: State | None = None) -> tuple[State, State | None, Hop]:
    """Send the walking weights (and ``extra`` records) to one node for a hop.

    Returns the node's walking weights, its classifier head when it sent one back (travelling
    head, checked against ``head_like``), and the hop's record. A reply that cannot be used
    (diverged, non-finite or malformed) raises HopFailed with the skipped hop's record; a node
    that errs or does not answer raises NodeError.
    """
    content = RecordDict({WEIGHTS: state_record(state),
                          CONFIG: ConfigRecord({**config, "hop": hop}), **(extra or {})})
    sent = message_bytes(content)
    start = time.perf_counter()
    message = Message(content, dst_node_id=node_id, message_type="train.walk")
    replies = list(grid.send_and_receive([message], timeout=timeout))
    if not replies:
        raise NodeError(f"hop {hop}: camera {camera} (node {node_id}) did not answer within "
                        f"{timeout:.0f} s")
    reply = reply_content(replies[0], f"{node_id} (camera {camera})")
    phase = str(config.get("phase", "walk"))
    try:
        new_state, head, metrics = _checked_reply(reply, state, head_like,
                                                  f"camera {camera}'s hop {hop}")
    except StateError as err:
        raise HopFailed(SkippedHop(phase, hop, node_id, camera, str(err),
                                   time.perf_counter() - start, sent,
                                   message_bytes(reply))) from err
    return new_state, head, Hop(
        phase=phase, hop=hop, node=node_id, camera=camera, loss=float(metrics["loss"]),
        accuracy=float(metrics["accuracy"]), images=int(metrics["images"]),
        seconds=float(metrics["seconds"]), num_classes=int(metrics["num-classes"]),
        stem_digest=int(metrics["stem-digest"]), round_trip_seconds=time.perf_counter() - start,
        bytes_sent=sent, bytes_received=message_bytes(reply),
    )


def walk(grid: Grid, nodes: list[tuple[int, int]], state: State, order: list[int], start: int,
         config: dict, timeout: float,
         after_hop: Callable[[Hop | SkippedHop, State, State | None], None],
         payload: Callable[[int, State | None], Mapping[str, ArrayRecord]] | None = None,
         head: State | None = None, head_like: State | None = None
         ) -> tuple[State, State | None]:
    """Walk hops ``start..len(order)-1`` over ``nodes`` = [(node id, camera)].

    ``payload(camera, head)`` adds records to a hop's message (the incremental walk's class
    targets and travelling head); a head a node sends back travels on to the next hop. A hop
    whose reply cannot be used is skipped: the weights stay those of the last good hop and the
    walk goes on; when every camera has failed since the last good hop, the walk stops.
    """
    failed: dict[int, str] = {}
    for hop in range(start, len(order)):
        node_id, camera = nodes[order[hop]]
        extra = payload(camera, head) if payload else None
        try:
            state, returned, record = send_hop(grid, node_id, camera, hop, state, config,
                                               timeout, extra, head_like)
        except HopFailed as failure:
            after_hop(failure.record, state, head)
            failed[camera] = failure.record.skipped
            if len(failed) == len({c for _, c in nodes}):
                raise NodeError(
                    "every camera failed its hop since the last good one, so the walk cannot "
                    "go on; the last good weights are checkpointed. Causes: " + "; ".join(
                        f"camera {c}: {why}" for c, why in sorted(failed.items()))) from None
            continue
        failed.clear()
        head = returned if returned is not None else head
        after_hop(record, state, head)
    return state, head
