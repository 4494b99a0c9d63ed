"""Table 3 from a run: the size of every message type as the run measured it.

The server's grid counts ``message_bytes`` of every message it sends and every reply it
receives, per message type (messages.json, :mod:`dmnreid.rounds`); each hop's bytes are also
in hops.jsonl, which tells the walk's hops from the incremental walk's (the latter also carry
every tracklet's cluster).
"""

from __future__ import annotations

from dataclasses import dataclass

from dmnreid.config import ConfigError
from dmnreid.run_dir import RunDir
from dmnreid.server_app import MESSAGES_JSON

HOPS = "hops.jsonl"


@dataclass(frozen=True)
class Measured:
    """Mean bytes per message each way over a run's messages of one type (None: none went
    that way), with how many went and how many replies were errors (None: not recorded)."""

    item: str
    source: str
    messages: int
    to_node: float | None
    replies: int
    to_server: float | None
    errors: int | None


def _mean(total: float, count: int) -> float | None:
    return total / count if count else None


def measured_messages(run: RunDir) -> list[Measured]:
    """Every message type the run sent, in the order it first sent them."""
    if not (run.path / MESSAGES_JSON).is_file():
        raise ConfigError(f"--run {run.path}: no {MESSAGES_JSON} (a run from before messages "
                          "were counted); Table 3 of a run needs one")
    return [Measured(kind, MESSAGES_JSON, int(c["messages"]),
                     _mean(c["bytes_sent"], c["messages"]), int(c["replies"]),
                     _mean(c["bytes_received"], c["replies"]), int(c["errors"]))
            for kind, c in run.read_json(MESSAGES_JSON).items()]


def measured_hops(run: RunDir) -> list[Measured]:
    """``train.walk`` per phase (walk, incremental); replies: the hops that got one."""
    hops = run.read_lines(HOPS)
    out = []
    for phase in dict.fromkeys(h["phase"] for h in hops):
        sent = [h for h in hops if h["phase"] == phase]
        answered = [h for h in sent if h["bytes_received"]]
        out.append(Measured(f"train.walk ({phase} hops)", HOPS, len(sent),
                            _mean(sum(h["bytes_sent"] for h in sent), len(sent)), len(answered),
                            _mean(sum(h["bytes_received"] for h in answered), len(answered)),
                            None))
    return out


def measured_sizes(run: RunDir) -> list[Measured]:
    return measured_messages(run) + measured_hops(run)
