"""What one node's training in a phase leaves on the server: its record (one line of
hops.jsonl), the checks on its reply, and the failure that skips it. Shared by the random
walk (one node per hop) and FedAvg (every node each round, one record each)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import torch
from flwr.app import Message

from dmnreid.checks import StateError, check_state
from dmnreid.messages import HEAD, PROTOTYPES, WEIGHTS, message_bytes, metrics_of, record_state


@dataclass(frozen=True)
class Where:
    """Which training a record is of: the phase, its hop (a global counter, one per hop of
    the walk; a FedAvg round's number, shared by its nodes), its step (the hops of a step
    run at once, one per walker), its walker (-1 under FedAvg), the node and its camera."""

    phase: str
    hop: int
    step: int
    walker: int
    node: int
    camera: int


@dataclass(frozen=True)
class Hop(Where):
    """The record of one hop, one line of hops.jsonl."""

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
class SkippedHop(Where):
    """A hop whose reply could not be used (one line of hops.jsonl, with its cause): its
    walker kept the weights it had and went on."""

    skipped: str
    round_trip_seconds: float
    bytes_sent: int
    bytes_received: int
    sent_digest: str


State = OrderedDict[str, torch.Tensor]
HOP_METRICS = ("loss", "accuracy", "images", "seconds", "num-classes", "stem-digest")


def state_digest(state: State) -> str:
    """A short sha256 of the weights a hop sends: equal digests on two hops mean the walk
    carried the same weights (e.g. across a skipped hop)."""
    sha = hashlib.sha256()
    for key, tensor in state.items():
        sha.update(key.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


def hop_record(where: Where, metrics: dict, reply: Message, round_trip: float, sent: int,
               digest: str) -> Hop:
    """The record of a hop whose reply passed :func:`checked_reply`."""
    return Hop(
        **where.__dict__, loss=float(metrics["loss"]),
        accuracy=float(metrics["accuracy"]), images=int(metrics["images"]),
        seconds=float(metrics["seconds"]), num_classes=int(metrics["num-classes"]),
        stem_digest=int(metrics["stem-digest"]), round_trip_seconds=round_trip,
        bytes_sent=sent, bytes_received=message_bytes(reply.content), sent_digest=digest)


def checked_reply(reply: Message, state: State, head_like: State | None,
                  what: str) -> tuple[State, State | None, dict]:
    """The weights, what travels on (a head or a prototype memory) and the metrics of a
    node's training reply, checked against what was sent; a StateError says why they cannot
    be used. What travels must look like ``head_like``, integer ids included (a memory's
    clusters and cameras never change along the walk)."""
    metrics = metrics_of(reply.content)
    if int(metrics.get("diverged", 0)):
        raise StateError(f"training diverged at step {int(metrics['diverged-step'])} (learning "
                         "rates too high?); no weights sent")
    missing = sorted(set(HOP_METRICS) - set(metrics))
    if missing or WEIGHTS not in reply.content:
        raise StateError(f"reply without {missing or [WEIGHTS]}")
    new_state = record_state(reply.content[WEIGHTS])
    check_state(new_state, f"{what} weights", like=state)
    travelling = [key for key in (HEAD, PROTOTYPES) if key in reply.content]
    if not travelling:
        return new_state, None, metrics
    if head_like is None or len(travelling) > 1:
        raise StateError(f"sent {' and '.join(travelling)} records not asked for")
    head = record_state(reply.content[travelling[0]])
    check_state(head, f"{what} {travelling[0]}", like=head_like)
    changed = [k for k, v in head_like.items()
               if not v.is_floating_point() and not torch.equal(head[k], v)]
    if changed:
        raise StateError(f"{what} {travelling[0]}: changed {', '.join(changed)}")
    return new_state, head, metrics
