"""The ServerApp's training phases over the cameras (the walk and the incremental walk):
the random walk (paper 3.2) or FedAvg, each a Flower strategy adapted to the run's roster,
driven one step at a time with a check on every reply and a record per node trained."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from dmnreid.checks import StateError
from dmnreid.messages import (
    CONFIG,
    WEIGHTS,
    NodeError,
    causes,
    exchange,
    message_bytes,
    record_state,
    state_record,
)
from dmnreid.strategies.hops import (
    Hop,
    SkippedHop,
    State,
    checked_reply,
    hop_record,
    state_digest,
)
from dmnreid.strategies.roster import Roster
from dmnreid.strategies.walk_strategy import RandomWalk

Payload = Callable[[int, State | None], Mapping[str, ArrayRecord]]
TRAIN_MESSAGE = "train.walk"


class CameraWalk(RandomWalk):
    """The walk over a run's cameras: the walk order indexes the roster's cameras (a camera's
    node id may change when its device comes back), only cameras taking part (``among``,
    all when None) and not left out take hops, and each hop's message carries the phase's
    records for that camera: ``payload(camera, head)`` (the incremental walk's classes and
    travelling head)."""

    def __init__(self, roster: Roster, order: str, seed: int, among: set[int] | None = None,
                 payload: Payload | None = None) -> None:
        super().__init__(order, seed, min_available_nodes=1, message_type=TRAIN_MESSAGE,
                         arrayrecord_key=WEIGHTS, configrecord_key=CONFIG)
        self.roster, self.among, self.payload = roster, among, payload
        self.head: State | None = None  # the travelling head the next hop carries

    def members(self, grid: Grid) -> list[int]:
        return self.roster.cameras

    def live(self, grid: Grid) -> list[int]:
        return [camera for _, camera in self.roster.live(self.among)]

    def node_of(self, member: int) -> int:
        return self.roster.nodes[member]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> list[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if self.payload is not None:
            for key, record in self.payload(self.previous, self.head).items():
                messages[0].content[key] = record
        return messages


class CameraFedAvg(FedAvg):
    """FedAvg over a run's cameras, FedPav-style: every camera taking part (``among``, all
    when None) and not left out trains from the same walking weights, each with its own
    classifier head that stays on its node; Flower's FedAvg averages the walking layers
    weighted by the images each node trained on. With ``bn-mode = "camera"`` the BN
    statistics are not among the walking layers, so they stay local (as FedBN)."""

    def __init__(self, roster: Roster, among: set[int] | None = None,
                 payload: Payload | None = None) -> None:
        super().__init__(fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=1,
                         weighted_by_key="images", arrayrecord_key=WEIGHTS,
                         configrecord_key=CONFIG)
        self.roster, self.among, self.payload = roster, among, payload

    def live(self, grid: Grid) -> list[int]:
        return [camera for _, camera in self.roster.live(self.among)]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> list[Message]:
        """One message per live camera: the same weights and config, its own records."""
        config = ConfigRecord({**config, "server-round": server_round})
        messages = []
        for camera in self.live(grid):
            content = RecordDict({WEIGHTS: arrays, CONFIG: config})
            for key, record in (self.payload(camera, None) if self.payload else {}).items():
                content[key] = record
            messages.append(Message(content, dst_node_id=self.roster.nodes[camera],
                                    message_type=TRAIN_MESSAGE))
        return messages


Strategy = CameraWalk | CameraFedAvg


def train_step(grid: Grid, strategy: Strategy, step: int, state: State, config: dict,
               timeout: float, head_like: State | None, dtype: str
               ) -> tuple[State | None, State | None, list[Hop | SkippedHop], dict[int, bool]]:
    """Step ``step`` (0-based: a hop of the walk, a round of FedAvg): the walking weights (in
    ``dtype`` on the wire) to the cameras the strategy picks, every reply checked.

    Returns the strategy's aggregate of the usable replies (None when there is none), a
    travelling head a node sent back (checked against ``head_like``), one record per camera
    (a Hop, or a SkippedHop with the cause: no answer, erred, diverged, non-finite or
    malformed weights), and for each skipped camera whether its node is gone (rather than
    answering badly).
    """
    phase = str(config.get("phase", "walk"))
    messages = strategy.configure_train(step + 1, state_record(state, dtype),
                                        ConfigRecord({**config, "hop": step}), grid)
    by_camera = {strategy.roster.camera_of(m.metadata.dst_node_id): m for m in messages}
    digest = state_digest(state)
    start = time.perf_counter()
    answers = exchange(grid, by_camera, timeout)
    round_trip = time.perf_counter() - start
    records: list[Hop | SkippedHop] = []
    skipped: dict[int, bool] = {}
    usable: list[Message] = []
    head = None
    for camera, message in by_camera.items():
        node, sent = message.metadata.dst_node_id, message_bytes(message.content)
        if camera in answers.missing:
            records.append(SkippedHop(phase, step, node, camera, answers.missing[camera],
                                      round_trip, sent, 0, digest))
            skipped[camera] = camera in answers.gone
            continue
        reply = answers.replies[camera]
        try:
            checked, returned, metrics = checked_reply(reply, state, head_like,
                                                       f"camera {camera}'s hop {step}")
        except StateError as err:
            records.append(SkippedHop(phase, step, node, camera, str(err), round_trip, sent,
                                      message_bytes(reply.content), digest))
            skipped[camera] = False
            continue
        records.append(hop_record(phase, step, node, camera, metrics, reply, round_trip, sent,
                                  digest))
        reply.content[WEIGHTS] = state_record(checked)  # aggregated in float32
        usable.append(reply)
        head = returned if returned is not None else head
    arrays, _ = strategy.aggregate_train(step + 1, usable) if usable else (None, None)
    if arrays is None:
        return None, head, records, skipped
    return aggregated_state(arrays, state), head, records, skipped


def aggregated_state(arrays: ArrayRecord, like: State) -> State:
    """A strategy's aggregate as a state with the types of ``like``: an average of integer
    buffers (BN batch counters) comes back as float, and is rounded."""
    return OrderedDict((k, v.to(like[k].dtype) if like[k].is_floating_point()
                        else v.round().to(like[k].dtype))
                       for k, v in record_state(arrays).items())


def train_steps(grid: Grid, strategy: Strategy, state: State, start: int, stop: int,
                config: dict, timeout: float,
                after_step: Callable[[list[Hop | SkippedHop], State, State | None], None],
                head: State | None = None, head_like: State | None = None,
                dtype: str = "float32") -> tuple[State, State | None]:
    """Steps ``start..stop-1`` of a walk or FedAvg phase; ``after_step(records, state,
    head)`` after each (records, checkpoints, evaluations).

    A head a node sends back travels on to the next hop. A step that gives nothing usable
    keeps the weights of the last good one and the phase goes on. A camera left out by the
    roster takes no step until it is back (the walk's stand-in takes its hops); when no
    camera is left, the phase stops.
    """
    phase = str(config.get("phase", "walk"))
    roster = strategy.roster
    for step in range(start, stop):
        roster.refresh(grid, phase)
        if not strategy.live(grid):
            raise NodeError(
                f"every camera is left out of the {phase} (each failed node-retries + 1 steps "
                "in a row), so it cannot go on; the last good weights are checkpointed. "
                f"Causes: {causes(roster.out)}")
        if isinstance(strategy, CameraWalk):
            strategy.head = head
        new_state, returned, records, skipped = train_step(grid, strategy, step, state, config,
                                                           timeout, head_like, dtype)
        for record in records:
            if isinstance(record, SkippedHop):
                roster.failed(record.camera, phase, record.skipped, skipped[record.camera])
            else:
                roster.succeeded(record.camera)
        state = new_state if new_state is not None else state
        head = returned if returned is not None else head
        after_step(records, state, head)
    return state, head

