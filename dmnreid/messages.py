"""What crosses the wire: state dicts as ArrayRecords, error checks, and the message audit.

The audit is a ClientApp mod: when ``message-audit`` names a folder, every reply a node sends
is described there (record names, array dtypes and shapes, scalar types, string values) as
one JSON line. The privacy test reads it; the message-size report can too.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

if TYPE_CHECKING:  # nodes import this module for clustering rounds, which need no torch
    import torch

WEIGHTS = "weights"
HEAD = "head"
CLASSES = "classes"
CONFIG = "config"
METRICS = "metrics"
PAYLOAD = "payload"


class NodeError(RuntimeError):
    """A node answered with an error or with content the server cannot use."""


def state_record(state: OrderedDict[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord(OrderedDict((k, v.detach().cpu()) for k, v in state.items()))


def arrays_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Numpy arrays (ids, edges, feature vectors) as one ArrayRecord."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def record_state(record: ArrayRecord) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict(record.to_torch_state_dict())


def message_bytes(content: RecordDict) -> int:
    """Payload bytes of a message: arrays as serialised, plus config/metric values."""
    total = 0
    for record in content.values():
        if isinstance(record, ArrayRecord):
            total += record.count_bytes()
        else:
            total += len(json.dumps(dict(record), default=str).encode())
    return total


def reply_content(reply: Message, node: str) -> RecordDict:
    """The reply's content, or a NodeError naming the node and its error."""
    if reply.has_error():
        raise NodeError(f"node {node} failed: {reply.error.reason}")
    if not reply.has_content():
        raise NodeError(f"node {node} sent an empty reply")
    return reply.content


def replies_by_node(replies: Iterable[Message], expected: Iterable[int],
                    what: str) -> dict[int, Message]:
    """Map replies to their node ids; any node that did not answer is named in the error."""
    got = {r.metadata.src_node_id: r for r in replies}
    missing = sorted(set(expected) - set(got))
    if missing:
        raise NodeError(f"{what}: no reply from node(s) {missing} (dropped out or timed out)")
    return got


def ask_nodes(grid: Grid, nodes: Iterable[tuple[int, int]], message_type: str, config: dict,
              timeout: float, records: Mapping[str, ArrayRecord] | None = None
              ) -> dict[int, RecordDict]:
    """The same message (config, and ``records`` if given) to each (node id, camera) at once;
    each camera's reply content.

    A node that does not answer, or answers with an error, stops the run with the node named.
    """
    nodes = list(nodes)
    messages = [Message(RecordDict({CONFIG: ConfigRecord(config), **(records or {})}),
                        dst_node_id=node, message_type=message_type) for node, _ in nodes]
    replies = replies_by_node(grid.send_and_receive(messages, timeout=timeout),
                              [node for node, _ in nodes], message_type)
    return {camera: reply_content(replies[node], f"{node} (camera {camera})")
            for node, camera in nodes}


def required(config: Mapping[str, object], key: str, kind: type[int] | type[str],
             message_type: str) -> int | str:
    """A value a message must carry in its config, or a ValueError naming the message type
    and the key (a node receiving a malformed message says what is wrong, not KeyError)."""
    value = config.get(key)
    usable = isinstance(value, str) if kind is str else (
        isinstance(value, (int, float)) and not isinstance(value, bool)
        and float(value).is_integer())
    if not usable:
        raise ValueError(f"{message_type} message: config {key!r} is "
                         f"{'missing' if value is None else repr(value)}; expected "
                         f"{'an integer' if kind is int else 'a string'}")
    return kind(value)


def describe(content: RecordDict) -> dict:
    """A JSON-friendly description of everything in a message, values of scalars included."""
    out: dict = {}
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            out[name] = {"kind": "array", "entries": {
                k: {"dtype": a.dtype, "shape": list(a.shape), "bytes": len(a.data)}
                for k, a in record.items()}}
        else:
            kind = "config" if isinstance(record, ConfigRecord) else "metric"
            out[name] = {"kind": kind, "entries": {
                k: {"type": type(v).__name__,
                    "value": v if not isinstance(v, bytes) else f"<{len(v)} bytes>"}
                for k, v in record.items()}}
    return out


def audit_mod(msg: Message, context: Context, call_next: Callable) -> Message:
    """Record every reply this node sends, when ``message-audit`` names a folder."""
    reply = call_next(msg, context)
    folder = str(context.run_config.get("message-audit", ""))
    if folder and reply.has_content():
        entry = {
            "time": time.time(),
            "message_type": msg.metadata.message_type,
            "node_config": {k: str(v) for k, v in context.node_config.items()},
            "records": describe(reply.content),
        }
        path = Path(folder) / f"node-{os.getpid()}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
    return reply


def metrics_of(content: RecordDict) -> dict:
    record = content.get(METRICS)
    if not isinstance(record, MetricRecord):
        raise NodeError("reply carries no metrics record")
    return dict(record)
