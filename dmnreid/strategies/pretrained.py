"""Set-up: every node gets the run's pretrained weights from the server, once.

A device holds none of the server's files. Every node says whether it already holds the
weights (its own copy, checked against the server's sha256, or a copy received in an earlier
run): in its ``query.info`` reply at the start of a run, else in a ``query.pretrained`` round;
only the others are sent the stem and middle tensors (``query.pretrained``). Later messages
name the weights by sha256, so the frozen stem never travels per hop.
"""

from __future__ import annotations

from logging import INFO
from pathlib import Path

from flwr.common.logger import log
from flwr.serverapp import Grid

from dmnreid.messages import WEIGHTS, NodeError, ask_nodes, metrics_of, state_record
from dmnreid.reid.model import read_backbone

MESSAGE = "query.pretrained"


def distribute_weights(grid: Grid, nodes: list[tuple[int, int]], weights: Path | None,
                       config: dict, timeout: float, holding: set[int] | None = None) -> dict:
    """Make sure every node holds ``weights``; returns which cameras were sent them, the
    bytes each message carried, and the cameras that did not answer with why (nothing to do
    without pretrained weights). ``holding``: the cameras known to hold them (their
    ``query.info`` replies said so; the others do not), else every node is asked."""
    if weights is None:
        return {"sent": [], "bytes": 0, "missing": {}}
    if holding is None:
        held = ask_nodes(grid, nodes, MESSAGE, config, timeout)
        unanswered = held.missing
        holding = {c for c, content in held.content.items()
                   if int(metrics_of(content).get("held", 0))}
        nodes = [(node, camera) for node, camera in nodes if camera in held.content]
    else:
        unanswered = {}
    missing = [(node, camera) for node, camera in nodes if camera not in holding]
    if not missing:
        log(INFO, "Pretrained weights: every node that answered already holds them")
        return {"sent": [], "bytes": 0, "missing": unanswered}
    record = state_record(read_backbone(weights))
    log(INFO, "Pretrained weights: sending %.1f MB to camera(s) %s (once; later messages name "
        "them by sha256)", record.count_bytes() / 1e6, [c for _, c in missing])
    replies = ask_nodes(grid, missing, MESSAGE, config, timeout, {WEIGHTS: record})
    refused = [c for c, content in replies.content.items()
               if not int(metrics_of(content)["held"])]
    if refused:
        raise NodeError(f"camera(s) {refused} did not store the pretrained weights")
    return {"sent": sorted(replies.content), "bytes": record.count_bytes(),
            "missing": {**unanswered, **replies.missing}}
