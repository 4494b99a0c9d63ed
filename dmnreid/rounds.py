"""The server's Grid, polling for replies more often and counting message rounds per phase.

In deployment every message round costs seconds whatever it carries: Flower's Grid looks for
replies every 3 s, so a round that is answered at once still waits 1.5 s on average. This
Grid polls every ``poll-interval`` seconds instead (Flower's own push/pull calls, nothing
else changes) and records, per phase of the pipeline, how many rounds and messages it sent
and how long it waited: ``rounds.json`` of the run directory.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from flwr.app import Message
from flwr.serverapp import Grid

Rounds = dict[str, dict[str, float]]  # phase -> rounds, messages, seconds


def added(first: Rounds, second: Rounds) -> Rounds:
    """Two processes' counts together (a resumed run continues its own rounds.json)."""
    out = {phase: dict(entry) for phase, entry in first.items()}
    for phase, entry in second.items():
        into = out.setdefault(phase, {"rounds": 0, "messages": 0, "seconds": 0.0})
        into["rounds"] += entry["rounds"]
        into["messages"] += entry["messages"]
        into["seconds"] = round(into["seconds"] + entry["seconds"], 3)
    return out


class RoundsGrid(Grid):
    """Wraps the Grid Flower hands the ServerApp; ``with grid.phase("walk"):`` names what
    the rounds sent inside belong to (the innermost name counts)."""

    def __init__(self, grid: Grid, poll_interval: float) -> None:
        self.inner = grid
        self.poll_interval = poll_interval
        self.rounds: Rounds = {}
        self._phases = ["set-up"]

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._phases.append(name)
        try:
            yield
        finally:
            self._phases.pop()

    def _count(self, rounds: int, messages: int, seconds: float) -> None:
        self.rounds = added(self.rounds, {self._phases[-1]: {
            "rounds": rounds, "messages": messages, "seconds": seconds}})

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages`` and pull their replies every ``poll_interval`` seconds until all
        came or ``timeout`` passed (a missing reply is simply absent, as in Flower's)."""
        start = time.monotonic()
        messages = list(messages)
        pending = {i for i in self.inner.push_messages(messages) if i}
        deadline = start + timeout if timeout is not None else float("inf")
        replies: list[Message] = []
        while pending:
            pulled = list(self.inner.pull_messages(pending))
            replies += pulled
            pending -= {m.metadata.reply_to_message_id for m in pulled}
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                break
            time.sleep(min(self.poll_interval, left))
        self._count(1, len(messages), time.monotonic() - start)
        return replies

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Messages pushed without waiting (probes during the walk) count as messages."""
        messages = list(messages)
        self._count(0, len(messages), 0.0)
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self):  # flwr >= 1.40
        return self.inner.get_nodes()

    def set_run(self, run_id: int) -> None:
        self.inner.set_run(run_id)

    @property
    def run(self):
        return self.inner.run

    def create_message(self, *args, **kwargs) -> Message:
        return self.inner.create_message(*args, **kwargs)
