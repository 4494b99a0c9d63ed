"""The random walk (paper 3.2): hop order, what travels, and a record per hop."""

from __future__ import annotations

import hashlib
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
    causes,
    exchange,
    message_bytes,
    metrics_of,
    record_state,
    state_record,
)
from dmnreid.strategies.roster import Roster


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
    sent_digest: str


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
    sent_digest: str


class HopFailed(NodeError):
    """A hop that gave nothing usable (the node failed or did not answer, its training
    diverged, its weights are non-finite or malformed): the walk skips it and goes on."""

    def __init__(self, record: SkippedHop, gone: bool = False) -> None:
        super().__init__(f"hop {record.hop}: camera {record.camera} (node {record.node}): "
                         f"{record.skipped}")
        self.record = record
        self.gone = gone  # the node did not answer or is unavailable (not: it answered badly)


State = OrderedDict[str, torch.Tensor]
HOP_METRICS = ("loss", "accuracy", "images", "seconds", "num-classes", "stem-digest")


def state_digest(state: State) -> str:
    """A short sha256 of the weights a hop sends: equal digests on two hops mean the walk
    carried the same weights (e.g. across a skipped hop)."""
    sha = hashlib.sha256()
    for key, tensor in state.items():
        sha.update(key.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


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
             head_like: State | None = None, dtype: str = "float32"
             ) -> tuple[State, State | None, Hop]:
    """Send the walking weights (in ``dtype`` on the wire, and ``extra`` records) to one node
    for a hop.

    Returns the node's walking weights, its classifier head when it sent one back (travelling
    head, checked against ``head_like``), and the hop's record. A hop that gives nothing
    usable (the node errs, is unavailable or does not answer within ``timeout``; its training
    diverged; its weights are non-finite or malformed) raises HopFailed with the skipped
    hop's record.
    """
    content = RecordDict({WEIGHTS: state_record(state, dtype),
                          CONFIG: ConfigRecord({**config, "hop": hop}), **(extra or {})})
    sent, digest = message_bytes(content), state_digest(state)
    start = time.perf_counter()
    phase = str(config.get("phase", "walk"))
    answers = exchange(grid, {camera: Message(content, dst_node_id=node_id,
                                              message_type="train.walk")}, timeout)

    def failed(why: str, received: int = 0, gone: bool = False) -> HopFailed:
        return HopFailed(SkippedHop(phase, hop, node_id, camera, why,
                                    time.perf_counter() - start, sent, received, digest), gone)

    if camera in answers.missing:
        raise failed(answers.missing[camera], gone=camera in answers.gone)
    reply = answers.content[camera]
    try:
        new_state, head, metrics = _checked_reply(reply, state, head_like,
                                                  f"camera {camera}'s hop {hop}")
    except StateError as err:
        raise failed(str(err), message_bytes(reply)) from err
    return new_state, head, Hop(
        phase=phase, hop=hop, node=node_id, camera=camera, loss=float(metrics["loss"]),
        accuracy=float(metrics["accuracy"]), images=int(metrics["images"]),
        seconds=float(metrics["seconds"]), num_classes=int(metrics["num-classes"]),
        stem_digest=int(metrics["stem-digest"]), round_trip_seconds=time.perf_counter() - start,
        bytes_sent=sent, bytes_received=message_bytes(reply), sent_digest=digest,
    )


def stand_in(live: list[int], previous: int | None, seed: int, hop: int) -> int:
    """The camera that takes a hop planned for a left-out one: seeded, never the camera of
    the hop before when another is live."""
    others = [c for c in live if c != previous] or live
    return others[int(np.random.default_rng([seed, hop]).integers(len(others)))]


def walk(grid: Grid, roster: Roster, state: State, order: list[int], start: int,
         config: dict, timeout: float,
         after_hop: Callable[[Hop | SkippedHop, State, State | None], None],
         payload: Callable[[int, State | None], Mapping[str, ArrayRecord]] | None = None,
         head: State | None = None, head_like: State | None = None,
         among: set[int] | None = None, dtype: str = "float32", seed: int = 0
         ) -> tuple[State, State | None]:
    """Walk hops ``start..len(order)-1``; ``order[hop]`` indexes ``roster.cameras``.

    ``payload(camera, head)`` adds records to a hop's message (the incremental walk's class
    targets and travelling head); a head a node sends back travels on to the next hop. Only
    cameras ``among`` take part (all when None). A hop that gives nothing usable is skipped:
    the weights stay those of the last good hop and the walk goes on. A camera left out by
    the roster has its hops taken by another live camera (:func:`stand_in`) until it is back;
    when no camera is left, the walk stops.
    """
    phase = str(config.get("phase", "walk"))
    previous: int | None = None
    for hop in range(start, len(order)):
        roster.refresh(grid, phase)
        live = [c for _, c in roster.live(among)]
        if not live:
            raise NodeError(
                f"every camera is left out of the {phase} (each failed node-retries + 1 hops "
                "in a row), so it cannot go on; the last good weights are checkpointed. "
                f"Causes: {causes(roster.out)}")
        camera = roster.cameras[order[hop]]
        if camera not in live:
            camera = stand_in(live, previous, seed, hop)
        previous = camera
        extra = payload(camera, head) if payload else None
        try:
            state, returned, record = send_hop(grid, roster.nodes[camera], camera, hop, state,
                                               config, timeout, extra, head_like, dtype)
        except HopFailed as failure:
            after_hop(failure.record, state, head)
            roster.failed(camera, phase, failure.record.skipped, failure.gone)
            continue
        roster.succeeded(camera)
        head = returned if returned is not None else head
        after_hop(record, state, head)
    return state, head
