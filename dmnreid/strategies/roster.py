"""Which cameras take part: a camera network that keeps going when a node drops out.

Edge devices reboot and lose their link. A camera whose node errs or does not answer is
counted as failed; after ``node-retries`` further failures in a row it is left out for the rest
of the phase. It comes back when its node answers ``query.info`` again, under the same node id
(a SuperNode restarted with its authentication key) or a new one: during the walk the server
probes the nodes that stopped answering (one that answered badly waits for the next phase)
without waiting (the probe's reply is collected at a later hop); at the
start of every phase it asks them and waits up to ``probe-interval``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from dmnreid.messages import CONFIG, NodeError, metrics_of, reply_content

INFO_MESSAGE = "query.info"


def info_message(node: int, partition_dir: str, weights_sha256: str = "") -> Message:
    """The question every node answers with its camera and number of tracklets (and, given
    ``weights_sha256``, whether it holds those pretrained weights)."""
    config = {"partition-dir": partition_dir}
    if weights_sha256:
        config["weights-sha256"] = weights_sha256
    return Message(RecordDict({CONFIG: ConfigRecord(config)}), dst_node_id=node,
                   message_type=INFO_MESSAGE)


def camera_of_info(reply: Message) -> tuple[int, int] | None:
    """(camera, tracklets) from a ``query.info`` reply, None for an error or a node without
    a camera (a SuperNode started without data)."""
    try:
        info = metrics_of(reply_content(reply, str(reply.metadata.src_node_id)))
    except NodeError:
        return None
    return (int(info["camera"]), int(info["tracklets"])) if int(info["camera"]) >= 0 else None


@dataclass
class Roster:
    """The cameras of a run, their current node ids, and which are left out and why.

    ``on_rejoin(node, camera)`` runs when a camera comes back (the server re-sends what a
    node needs, e.g. the pretrained weights, before using it again).
    """

    nodes: dict[int, int]  # camera -> node id
    retries: int
    partition_dir: str = ""
    probe_interval: float = 30.0
    on_rejoin: Callable[[int, int], None] | None = None
    failures: dict[int, int] = field(default_factory=dict)
    out: dict[int, str] = field(default_factory=dict)
    answering: set[int] = field(default_factory=set)  # left out though their node answers
    events: list[dict] = field(default_factory=list)
    _probes: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> node, sent
    _probed: dict[int, float] = field(default_factory=dict)  # node id -> when

    @property
    def cameras(self) -> list[int]:
        return sorted(self.nodes)

    def live(self, among: set[int] | None = None) -> list[tuple[int, int]]:
        """(node id, camera) of every camera taking part (optionally only those ``among``)."""
        return [(self.nodes[c], c) for c in self.cameras
                if c not in self.out and (among is None or c in among)]

    def camera_of(self, node: int) -> int:
        """The camera whose node has this id now."""
        return next(c for c, n in self.nodes.items() if n == node)

    def succeeded(self, camera: int) -> None:
        self.failures.pop(camera, None)

    def failed(self, camera: int, phase: str, why: str, gone: bool = True) -> bool:
        """Count a failure; True when the camera is now left out for the rest of the phase.

        ``gone``: its node did not answer (it may come back during the phase); a node that
        answered badly (erred, diverged) stays out until the next phase.
        """
        self.failures[camera] = self.failures.get(camera, 0) + 1
        if not gone:
            self.answering.add(camera)
        else:
            self.answering.discard(camera)
        left_out = self.failures[camera] > self.retries
        self.events.append({"time": time.time(), "phase": phase, "camera": camera,
                            "node": self.nodes[camera], "event": "failed", "cause": why,
                            "left_out": left_out})
        if left_out:
            self.out[camera] = why
            log(WARNING, "Camera %d (node %d) is left out of the %s: %s", camera,
                self.nodes[camera], phase, why)
        return left_out

    def leave_out(self, cameras: dict[int, str], phase: str) -> None:
        """Leave out at once (a one-round phase cannot retry): ``cameras`` = {camera: why}."""
        for camera, why in cameras.items():
            self.failures[camera] = self.retries
            self.failed(camera, phase, why)

    def begin_phase(self, grid: Grid, phase: str) -> None:
        """At a phase's start, ask every listed node that could be a left-out camera back
        (its node id, or one never seen: a device back under a new id) which camera it
        holds, waiting up to ``probe_interval``; those that answer rejoin."""
        if not self.out:
            return
        live_ids = {self.nodes[c] for c in self.nodes if c not in self.out}
        candidates = sorted(set(grid.get_node_ids()) - live_ids)
        if candidates:
            self._collect(grid.send_and_receive(
                [info_message(n, self.partition_dir) for n in candidates],
                timeout=self.probe_interval), phase)

    def refresh(self, grid: Grid, phase: str) -> None:
        """During a walk: collect answers to earlier probes, and probe (without waiting) the
        listed nodes that could be a left-out camera back, each at most every
        ``probe_interval`` seconds."""
        if not self.out:
            return
        if self._probes:
            self._collect(grid.pull_messages(list(self._probes)), phase)
            now = time.monotonic()
            for message_id in [m for m, (_, sent) in self._probes.items()
                               if now - sent > 10 * self.probe_interval]:
                del self._probes[message_id]  # never answered: the node is probed anew
        if not self.out:
            return
        now = time.monotonic()
        live_ids = {self.nodes[c] for c in self.nodes
                    if c not in self.out or c in self.answering}
        candidates = [n for n in grid.get_node_ids() if n not in live_ids
                      and now - self._probed.get(n, -1e9) >= self.probe_interval]
        if candidates:
            messages = [info_message(n, self.partition_dir) for n in sorted(candidates)]
            for message, message_id in zip(messages, grid.push_messages(messages),
                                           strict=True):
                if message_id:
                    self._probes[message_id] = (message.metadata.dst_node_id, now)
                    self._probed[message.metadata.dst_node_id] = now

    def _collect(self, replies: Iterable[Message], phase: str) -> None:
        for reply in replies:
            probe = self._probes.pop(reply.metadata.reply_to_message_id, None)
            node = probe[0] if probe else reply.metadata.src_node_id
            answer = camera_of_info(reply)
            if answer is not None and answer[0] in self.out:
                self._rejoin(answer[0], node, phase, "answered query.info")

    def _rejoin(self, camera: int, node: int, phase: str, how: str) -> None:
        previous = self.nodes[camera]
        self.nodes[camera] = node
        if self.on_rejoin is not None:
            try:
                self.on_rejoin(node, camera)
            except NodeError as err:
                self.nodes[camera] = previous
                log(WARNING, "Camera %d could not rejoin: %s", camera, err)
                return
        self.out.pop(camera)
        self.failures.pop(camera, None)
        self.answering.discard(camera)
        self.events.append({"time": time.time(), "phase": phase, "camera": camera,
                            "node": node, "event": "rejoined", "cause": how})
        log(INFO, "Camera %d is back (node %d, %s) and rejoins the %s", camera, node, how,
            phase)
