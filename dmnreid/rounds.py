"""The server's Grid, polling for replies more often and counting message rounds per phase
and messages per message type and phase.

In deployment every message round costs seconds whatever it carries: Flower's Grid looks for
replies every 3 s, so a round that is answered at once still waits 1.5 s on average. This
Grid polls every ``poll-interval`` seconds instead (Flower's own push/pull calls, nothing
else changes) and records, per phase of the pipeline, how many rounds and messages it sent
and how long it waited: ``rounds.json`` of the run directory. It also counts, per message
type, the messages sent and the replies received with their bytes (``message_bytes``), and
the error replies, in total and per phase (``phases``, the phase the message was sent in):
``messages.json``, the sizes of the paper's Table 3 as a run measured them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from dmnreid.messages import message_bytes

# phase -> rounds, messages, seconds (rounds.json); message type -> MESSAGE_COUNTS and
# "phases": phase -> MESSAGE_COUNTS (messages.json)
Counts = dict[str, dict]
MESSAGE_COUNTS = ("messages", "bytes_sent", "replies", "bytes_received", "errors")
PHASES = "phases"


def added(first: Counts, second: Counts) -> Counts:
    """Two tables of counts together, key by key and nested tables alike (a resumed run
    continues its own rounds.json and messages.json); seconds to the millisecond. Neither
    input is changed."""
    out = dict(first)
    for key, value in second.items():
        out[key] = added(first.get(key, {}), value) if isinstance(value, dict) \
            else round(first.get(key, 0) + value, 3)
    return out


def _message_entry(phase: str | None, **counts: int) -> dict:
    """MESSAGE_COUNTS with ``counts``, and the same under ``phase`` when one is given."""
    entry: dict = {key: counts.get(key, 0) for key in MESSAGE_COUNTS}
    return {**entry, PHASES: {phase: entry}} if phase is not None else entry


def sent_counts(message_type: str, content: RecordDict, phase: str | None = None) -> Counts:
    """One message the server sent (in ``phase``), as a table to add to messages.json."""
    return {message_type: _message_entry(phase, messages=1,
                                         bytes_sent=message_bytes(content))}


def reply_counts(message_type: str, content: RecordDict | None,
                 phase: str | None = None) -> Counts:
    """One reply to a message of ``message_type`` sent in ``phase``; None: an error reply
    (the node failed or is gone), which carries no content and is counted apart."""
    if content is None:
        return {message_type: _message_entry(phase, errors=1)}
    return {message_type: _message_entry(phase, replies=1,
                                         bytes_received=message_bytes(content))}


class RoundsGrid(Grid):
    """Wraps the Grid Flower hands the ServerApp; ``with grid.phase("walk"):`` names what
    the rounds sent inside belong to (the innermost name counts)."""

    def __init__(self, grid: Grid, poll_interval: float) -> None:
        self.inner = grid
        self.poll_interval = poll_interval
        self.rounds: Counts = {}
        self.messages: Counts = {}
        self._phases = ["set-up"]
        # message id -> type and phase of the messages pushed and not yet answered: the
        # SuperLink's error reply for an unavailable node carries a system message type, and
        # a probe's reply may come in a later phase
        self._pushed: dict[str, tuple[str, str]] = {}

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
        pending = {i for i in self._push(messages) if i}
        deadline = start + timeout if timeout is not None else float("inf")
        replies: list[Message] = []
        while pending:
            pulled = self._pull(pending)
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
        return self._push(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._pull(message_ids)

    def _push(self, messages: list[Message]) -> list[str]:
        """Push ``messages``, counting each by type and phase (measured before Flower sends
        it)."""
        phase = self._phases[-1]
        for message in messages:
            self.messages = added(self.messages, sent_counts(message.metadata.message_type,
                                                             message.content, phase))
        message_ids = list(self.inner.push_messages(messages))
        pushed = set(message_ids)  # Flower set each message's id; one not stored is left out
        self._pushed |= {m.metadata.message_id: (m.metadata.message_type, phase)
                         for m in messages if m.metadata.message_id in pushed}
        return message_ids

    def _pull(self, message_ids: Iterable[str]) -> list[Message]:
        """Pull replies, counting each under the type and phase of the message it answers."""
        replies = list(self.inner.pull_messages(message_ids))
        for reply in replies:
            message_type, phase = self._pushed.pop(
                reply.metadata.reply_to_message_id,
                (reply.metadata.message_type, self._phases[-1]))
            content = None if reply.has_error() else reply.content
            self.messages = added(self.messages, reply_counts(message_type, content, phase))
        return replies

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
