"""The ServerApp's training phases over the cameras (the walk and the incremental walk):
the random walk (paper 3.2) or FedAvg, each a Flower strategy adapted to the run's roster,
driven one step at a time with a check on every reply and a record per node trained."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from dmnreid.checks import StateError
from dmnreid.messages import (
    CONFIG,
    HEAD,
    PROTOTYPES,
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
    Where,
    checked_reply,
    hop_record,
    state_digest,
)
from dmnreid.strategies.roster import Roster
from dmnreid.strategies.walk_strategy import RandomWalk
from dmnreid.strategies.walkers import Walker, Walkers, check_walkers, owned_entries, steps

Payload = Callable[[int, State | None], Mapping[str, ArrayRecord]]
TRAIN_MESSAGE = "train.walk"


class CameraWalk(RandomWalk):
    """The walk over a run's cameras: the walk order indexes the roster's cameras (a camera's
    node id may change when its device comes back), only cameras taking part (``among``,
    all when None) and not left out take hops, and each hop's message carries the phase's
    records for that camera: ``payload(camera, head)`` (the incremental walk's classes and
    the walker's travelling head or prototype memory). ``walkers`` walk at once, merged every
    ``walker_merge`` steps and whenever :meth:`merge` is called; the walking weights travel
    in ``dtype``. A memory's entries merge from the walker that last visited their camera,
    which ``classes`` (each camera's global class per tracklet) tells."""

    def __init__(self, roster: Roster, order: str, seed: int, among: set[int] | None = None,
                 payload: Payload | None = None, walkers: int = 1, walker_merge: int = 0,
                 dtype: str = "float32", classes: Mapping[int, np.ndarray] | None = None,
                 memory: bool = False) -> None:
        super().__init__(order, seed, min_available_nodes=1, walkers=walkers,
                         walker_merge=walker_merge, weighted_by_key="images",
                         message_type=TRAIN_MESSAGE, arrayrecord_key=WEIGHTS,
                         configrecord_key=CONFIG)
        self.roster, self.among, self.payload = roster, among, payload
        self.dtype, self.classes, self.memory = dtype, classes, memory

    def members(self, grid: Grid) -> list[int]:
        return self.roster.cameras

    def live(self, grid: Grid) -> list[int]:
        return [camera for _, camera in self.roster.live(self.among)]

    def node_of(self, member: int) -> int:
        return self.roster.nodes[member]

    def begin(self, state: State, head: State | None, saved: Walkers | None = None) -> None:
        """Walkers at ``state`` (and ``head``), or those a checkpoint saved."""
        check_walkers(self.walkers, len(self.roster.cameras))
        self.team = saved if saved is not None else \
            Walkers.start(self.walkers, state, head, self.memory)

    def outgoing(self, walker: Walker) -> ArrayRecord:
        return state_record(walker.state, self.dtype)

    def records_for(self, walker: Walker, member: int) -> dict[str, ArrayRecord]:
        return dict(self.payload(member, walker.head)) if self.payload is not None else {}

    def returned(self, reply: Message, walker: int, hop: int, member: int
                 ) -> tuple[State | None, np.ndarray | None]:
        for key in (HEAD, PROTOTYPES):
            if key in reply.content:
                head = record_state(reply.content[key])
                owned = owned_entries(head, self.classes[member], member) \
                    if key == PROTOTYPES and self.classes is not None else None
                return head, owned
        return None, None

    def merge(self) -> tuple[State, State | None]:
        """The walkers merge now (before an evaluation, at a phase's end)."""
        return self.team.merge()


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


def train_step(grid: Grid, strategy: Strategy, hops: range, state: State, config: dict,
               timeout: float, head_like: State | None, dtype: str, step: int
               ) -> tuple[State | None, State | None, list[Hop | SkippedHop], dict[int, bool]]:
    """One step: hops ``hops`` of a walk (one per walker) or a round of FedAvg (``hops`` one
    long, every camera from ``state``), the walking weights in ``dtype`` on the wire, every
    reply checked.

    Returns the model after the step (the walkers' average, or FedAvg's aggregate; None
    when FedAvg has no usable reply), the travelling head (a walker's, checked against
    ``head_like``), one record per camera (a Hop, or a SkippedHop with the cause: no
    answer, erred, diverged, non-finite or malformed weights), and for each skipped camera
    whether its node is gone (rather than answering badly).
    """
    phase = str(config.get("phase", "walk"))
    if isinstance(strategy, CameraWalk):
        messages = strategy.configure_hops(hops, ArrayRecord(), ConfigRecord(config), grid,
                                           step + 1)
        sent_states = {m.metadata.dst_node_id: strategy.team.walkers[
            int(m.content[CONFIG]["walker"])].state for m in messages}
    else:
        messages = strategy.configure_train(step + 1, state_record(state, dtype),
                                            ConfigRecord({**config, "hop": hops.start}), grid)
        sent_states = {m.metadata.dst_node_id: state for m in messages}
    by_camera = {strategy.roster.camera_of(m.metadata.dst_node_id): m for m in messages}
    digests = {id(s): state_digest(s) for s in sent_states.values()}  # once per model sent
    start = time.perf_counter()
    answers = exchange(grid, by_camera, timeout)
    round_trip = time.perf_counter() - start
    records: list[Hop | SkippedHop] = []
    skipped: dict[int, bool] = {}
    usable: list[Message] = []
    for camera, message in by_camera.items():
        node, sent = message.metadata.dst_node_id, message_bytes(message.content)
        settings = message.content[CONFIG]
        where = Where(phase, int(settings["hop"]), step, int(settings.get("walker", -1)),
                      node, camera)
        digest = digests[id(sent_states[node])]
        if camera in answers.missing:
            records.append(SkippedHop(**where.__dict__, skipped=answers.missing[camera],
                                      round_trip_seconds=round_trip, bytes_sent=sent,
                                      bytes_received=0, sent_digest=digest))
            skipped[camera] = camera in answers.gone
            continue
        reply = answers.replies[camera]
        try:
            checked, _, metrics = checked_reply(reply, sent_states[node], head_like,
                                                f"camera {camera}'s hop {where.hop}")
        except StateError as err:
            records.append(SkippedHop(**where.__dict__, skipped=str(err),
                                      round_trip_seconds=round_trip, bytes_sent=sent,
                                      bytes_received=message_bytes(reply.content),
                                      sent_digest=digest))
            skipped[camera] = False
            continue
        records.append(hop_record(where, metrics, reply, round_trip, sent, digest))
        reply.content[WEIGHTS] = state_record(checked)  # aggregated in float32
        usable.append(reply)
    if isinstance(strategy, CameraWalk):
        strategy.absorb(step + 1, usable)
        moved = {int(m.content[CONFIG]["hop"]) for m in messages}
        for index, hop in enumerate(hops):  # fewer free live cameras than walkers
            if hop not in moved:
                walker = strategy.team.walkers[index]
                records.append(SkippedHop(
                    phase, hop, step, index, -1, -1, skipped=f"walker {index} waited: no "
                    f"free live camera ({strategy.live_count} live for {len(hops)} walkers)",
                    round_trip_seconds=round_trip, bytes_sent=0, bytes_received=0,
                    sent_digest=state_digest(walker.state)))
        model, head = strategy.team.model()
        return model, head, records, skipped
    arrays, _ = strategy.aggregate_train(step + 1, usable) if usable else (None, None)
    if arrays is None:
        return None, None, records, skipped
    return aggregated_state(arrays, state), None, records, skipped


def aggregated_state(arrays: ArrayRecord, like: State) -> State:
    """A strategy's aggregate as a state with the types of ``like``: an average of integer
    buffers (BN batch counters) comes back as float, and is rounded."""
    return OrderedDict((k, v.to(like[k].dtype) if like[k].is_floating_point()
                        else v.round().to(like[k].dtype))
                       for k, v in record_state(arrays).items())


def train_steps(grid: Grid, strategy: Strategy, state: State, start: int, stop: int,
                config: dict, timeout: float,
                after_step: Callable[[range, list[Hop | SkippedHop], State, State | None],
                                     None],
                head: State | None = None, head_like: State | None = None,
                dtype: str = "float32", step_of: Callable[[int], int] = lambda hop: hop,
                saved: Walkers | None = None) -> tuple[State, State | None]:
    """Hops ``start..stop-1`` of a walk (in steps of one hop per walker) or rounds of a
    FedAvg phase; ``after_step(hops, records, model, head)`` after each step (records,
    checkpoints, evaluations). ``step_of(hop)`` numbers a step by its first hop; a walk
    starts its walkers at ``state`` and ``head``, or as ``saved`` (a checkpoint's), and they
    merge at the end.

    A head a node sends back travels on with its walker. A step that gives nothing usable
    keeps the weights of the last good one and the phase goes on. A camera left out by the
    roster takes no step until it is back (the walk's stand-in takes its hops); when no
    camera is left, the phase stops.
    """
    phase = str(config.get("phase", "walk"))
    roster = strategy.roster
    walk = isinstance(strategy, CameraWalk)
    if walk:
        strategy.begin(state, head, saved)
    for hops in steps(start, stop, strategy.walkers if walk else 1):
        roster.refresh(grid, phase)
        if not strategy.live(grid):
            raise NodeError(
                f"every camera is left out of the {phase} (each failed node-retries + 1 steps "
                "in a row), so it cannot go on; the last good weights are checkpointed. "
                f"Causes: {causes(roster.out)}")
        new_state, returned, records, skipped = train_step(
            grid, strategy, hops, state, config, timeout, head_like, dtype, step_of(hops.start))
        for record in records:
            if isinstance(record, SkippedHop) and record.camera < 0:
                continue  # a walker that waited: no camera failed
            if isinstance(record, SkippedHop):
                roster.failed(record.camera, phase, record.skipped, skipped[record.camera])
            else:
                roster.succeeded(record.camera)
        state = new_state if new_state is not None else state
        head = returned if returned is not None else head
        after_step(hops, records, state, head)
    if walk:
        state, head = strategy.merge()
    return state, head
