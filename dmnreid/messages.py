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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

if TYPE_CHECKING:  # nodes import this module for clustering rounds, which need no torch
    import torch

WEIGHTS = "weights"
HEAD = "head"
PROTOTYPES = "prototypes"  # the cluster-prototype memory (incremental-loss = "prototype")
CLASSES = "classes"
CONFIG = "config"
METRICS = "metrics"
PAYLOAD = "payload"


class NodeError(RuntimeError):
    """A node answered with an error or with content the server cannot use."""


TRANSFER_DTYPES = ("float32", "float16", "bfloat16")
FEATURE_DTYPES = ("float32", "float16")
FLOAT16_MAX = float(np.finfo(np.float16).max)


def wire_features(features: np.ndarray, dtype: str) -> np.ndarray:
    """Feature vectors as they travel (``feature-dtype``).

    A node that sends its memory bank keeps ``wire_features(bank, dtype).astype(float32)``:
    the same rounding the other cameras receive, so both ends of a camera pair compute
    identical distances and decide its edges alike.
    """
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"feature dtype {dtype!r}; expected one of {list(FEATURE_DTYPES)}")
    return np.asarray(features, np.float32).astype(dtype)


def state_record(state: OrderedDict[str, torch.Tensor], dtype: str = "float32") -> ArrayRecord:
    """A state dict as an ArrayRecord, its float tensors in ``dtype`` on the wire.

    numpy has no bfloat16: those tensors travel as their 16-bit patterns, in an array whose
    declared dtype says ``bfloat16`` so that :func:`record_state` restores them. A tensor
    with a value beyond float16's range (65504; e.g. a BN running variance of an untrained
    network) travels in float32 rather than as infinity.
    """
    if dtype not in TRANSFER_DTYPES:
        raise ValueError(f"transfer dtype {dtype!r}: expected one of {TRANSFER_DTYPES}")
    arrays: dict[str, Array] = {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu()
        if dtype == "float32" or not tensor.is_floating_point() or (
                dtype == "float16" and tensor.numel()
                and float(tensor.abs().max()) > FLOAT16_MAX):
            arrays[key] = Array(tensor.numpy())
        elif dtype == "float16":
            arrays[key] = Array(tensor.half().numpy())
        else:
            import torch

            bits = Array(tensor.bfloat16().view(torch.int16).numpy())
            arrays[key] = Array(dtype="bfloat16", shape=bits.shape, stype=bits.stype,
                                data=bits.data)
    return ArrayRecord(arrays)


def record_state(record: ArrayRecord) -> OrderedDict[str, torch.Tensor]:
    """The state dict an ArrayRecord carries; tensors sent in 16 bits come back as float32,
    as every model here trains in float32."""
    import torch

    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, array in record.items():
        tensor = torch.from_numpy(array.numpy())
        if array.dtype == "bfloat16":
            tensor = tensor.view(torch.bfloat16).float()
        elif tensor.dtype == torch.float16:
            tensor = tensor.float()
        state[key] = tensor
    return state


def as_sent(state: OrderedDict[str, torch.Tensor], dtype: str) -> OrderedDict[str, torch.Tensor]:
    """``state`` as the receiver of a message in ``dtype`` gets it (float32 again)."""
    return record_state(state_record(state, dtype))


def arrays_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Numpy arrays (ids, edges, feature vectors) as one ArrayRecord."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


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


# Flower's error codes for a reply the SuperLink writes because the node is not there
GONE_CODES = {3, 4, 5}  # MESSAGE_UNAVAILABLE, REPLY_MESSAGE_UNAVAILABLE, NODE_UNAVAILABLE


@dataclass
class Answers:
    """One round's replies by camera, why each camera that gave none is missing, and which
    of those are gone (no answer in time, or the node unavailable) rather than erring;
    ``replies`` holds the messages whose content is in ``content``."""

    content: dict[int, RecordDict]
    missing: dict[int, str]
    gone: set[int] = field(default_factory=set)
    replies: dict[int, Message] = field(default_factory=dict)


def causes(missing: Mapping[int, str]) -> str:
    """Each camera's cause, for a message that names them all."""
    return "; ".join(f"camera {c}: {why}" for c, why in sorted(missing.items()))


def exchange(grid: Grid, messages: Mapping[int, Message], timeout: float) -> Answers:
    """Send one message per camera (``messages[camera]``) at once and wait up to ``timeout``.

    A camera whose node errs, is unavailable (the SuperLink answers for an offline node, so
    replies are matched by the message they answer, not by sender) or does not answer in
    time is missing, with the cause; nothing is raised.
    """
    pending = list(messages.items())
    replies = list(grid.send_and_receive([m for _, m in pending], timeout=timeout))
    camera_of_message = {m.metadata.message_id: c for c, m in pending}
    camera_of_node = {m.metadata.dst_node_id: c for c, m in pending}
    content: dict[int, RecordDict] = {}
    answered: dict[int, Message] = {}
    missing: dict[int, str] = {}
    gone: set[int] = set()
    for reply in replies:
        camera = camera_of_message.get(reply.metadata.reply_to_message_id,
                                       camera_of_node.get(reply.metadata.src_node_id))
        if camera is None:
            continue
        node = f"{messages[camera].metadata.dst_node_id} (camera {camera})"
        try:
            content[camera] = reply_content(reply, node)
            answered[camera] = reply
        except NodeError as err:
            missing[camera] = str(err)
            if reply.has_error() and reply.error.code in GONE_CODES:
                gone.add(camera)
    for camera, message in pending:
        if camera not in content and camera not in missing:
            missing[camera] = (f"node {message.metadata.dst_node_id} did not answer within "
                               f"{timeout:g} s")
            gone.add(camera)
    return Answers(content, missing, gone, answered)


def ask_nodes(grid: Grid, nodes: Iterable[tuple[int, int]], message_type: str, config: dict,
              timeout: float, records: Mapping[str, ArrayRecord] | None = None) -> Answers:
    """The same message (config, and ``records`` if given) to each (node id, camera) at once;
    each camera's reply content, and the cameras that gave none."""
    messages = {camera: Message(RecordDict({CONFIG: ConfigRecord(config), **(records or {})}),
                                dst_node_id=node, message_type=message_type)
                for node, camera in nodes}
    return exchange(grid, messages, timeout)


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
