"""ClientApp: one handler per message type, each a thin adapter over :mod:`dmnreid.node`
(training, embedding), :mod:`dmnreid.memory.protocol` (clustering) and
:mod:`dmnreid.node_state` (what a node keeps between messages)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import load_node
from dmnreid.memory.protocol import (
    FloodPayload,
    Pairs,
    Top1Payload,
    TrianglePayload,
    node_flood,
    node_top1,
    node_triangle,
)
from dmnreid.memory.reference import GlobalIds
from dmnreid.messages import (
    CLASSES,
    CONFIG,
    HEAD,
    METRICS,
    PAYLOAD,
    PROTOTYPES,
    WEIGHTS,
    arrays_record,
    audit_mod,
    record_state,
    required,
    state_record,
    wire_features,
)
from dmnreid.node_state import load_memory_bank, node_dir, save_memory_bank

# Handlers that train or embed import torch and the model code inside (dmnreid.node,
# dmnreid.node_weights, dmnreid.style.node_transfer): in deployment every message runs in a
# fresh process, and the clustering rounds, which need none of it, start in a second, not ten.

app = ClientApp(mods=[audit_mod])


def _config(msg: Message) -> ConfigRecord:
    record = msg.content.get(CONFIG)
    if not isinstance(record, ConfigRecord):
        raise ValueError(f"{msg.metadata.message_type} message without a config record")
    return record


def _setting(msg: Message, key: str, kind: type[int] | type[str] = int) -> int | str:
    return required(_config(msg), key, kind, msg.metadata.message_type)


def _run_config(msg: Message) -> RunConfig:
    """The run's effective settings, as the server sends them with every message.

    A resumed run is started with little more than ``resume-from``; its saved settings live
    with the server, so a node must not use its own copy of the run config.
    """
    sent = _config(msg).get("run-config")
    if not isinstance(sent, str):
        raise ValueError(f"{msg.metadata.message_type} message without the run's settings")
    return RunConfig.from_mapping(json.loads(sent))


def _directory(msg: Message, context: Context) -> Path:
    directory = node_dir(context.node_config, str(_config(msg).get("partition-dir", "")))
    if directory is None:
        raise ValueError("this node holds no camera's data")
    return directory


def _weights_file(msg: Message, context: Context) -> Path | None:
    """The run's pretrained weights on this node (its own copy, or the one the server sent)."""
    from dmnreid.node_weights import node_weights_file

    return node_weights_file(_directory(msg, context), context.node_config,
                             _setting(msg, "weights-sha256", str))


def _arrays(msg: Message, name: str) -> ArrayRecord:
    record = msg.content.get(name)
    if not isinstance(record, ArrayRecord):
        raise ValueError(f"{msg.metadata.message_type} message without a {name!r} record")
    return record


def _reply(msg: Message, metrics: dict, **arrays: ArrayRecord) -> Message:
    return Message(RecordDict({**arrays, METRICS: MetricRecord(metrics)}), reply_to=msg)


@app.query("info")
def info(msg: Message, context: Context) -> Message:
    """Which camera this node holds and how much data: counts only, no names or paths."""
    directory = node_dir(context.node_config, str(_config(msg).get("partition-dir", "")))
    if directory is None:
        return _reply(msg, {"camera": -1, "tracklets": 0, "images": 0})
    data = load_node(directory)
    reply = {"camera": data.camera, "tracklets": data.num_classes, "images": data.num_images}
    sha256 = str(_config(msg).get("weights-sha256", ""))
    if sha256:  # answered here, so nodes that hold the weights need no query.pretrained round
        from dmnreid.node_weights import holds_weights

        try:
            reply["held"] = int(holds_weights(directory, context.node_config, sha256))
        except (OSError, ValueError):  # not the run's weights: query.pretrained says why
            reply["held"] = 0
    return _reply(msg, reply)


@app.query("pretrained")
def pretrained(msg: Message, context: Context) -> Message:
    """Whether this node holds the run's pretrained weights; stores them when they are sent.

    Its own copy (node config ``weights-file``) must have the server's sha256.
    """
    from dmnreid.node_weights import holds_weights, own_copy, store_weights

    directory = _directory(msg, context)
    sha256 = _setting(msg, "weights-sha256", str)
    sent = msg.content.get(WEIGHTS)
    if isinstance(sent, ArrayRecord) and own_copy(context.node_config) is None:
        store_weights(directory, sha256, record_state(sent))
    return _reply(msg, {"held": int(holds_weights(directory, context.node_config, sha256))})


@app.train("style")
def style(msg: Message, context: Context) -> Message:
    """Train this node's CycleGAN and translate its frames (paper 3.1), all on its own disk.

    The reply holds losses, counts and timings, and with ``send-generator`` the trained
    generator's weights (for the server's held-out check of the translation on the
    query/gallery images it holds anyway).
    """
    from dmnreid.style.node_transfer import trained_generator, transfer_style

    cfg = _run_config(msg)
    data = load_node(_directory(msg, context))
    metrics = transfer_style(data, cfg)
    if not int(_config(msg).get("send-generator", 0)):
        return _reply(msg, metrics)
    state = trained_generator(data, cfg).state_dict()
    return _reply(msg, metrics, **{WEIGHTS: state_record(state)})


@app.train("walk")
def walk(msg: Message, context: Context) -> Message:
    """A hop of the first walk (local labels) or of the incremental walk (global classes)."""
    from dmnreid.checks import TrainingDiverged
    from dmnreid.memory.prototypes import PrototypeMemory
    from dmnreid.node import (
        Targets,
        load_local_head,
        save_local_head,
        save_model_copy,
        walk_hop,
    )

    cfg = _run_config(msg)
    config = _config(msg)
    directory = _directory(msg, context)
    incremental = str(config.get("phase", "walk")) == "incremental"
    targets = None
    if incremental and CLASSES in msg.content:
        head, memory = msg.content.get(HEAD), msg.content.get(PROTOTYPES)
        classes = _arrays(msg, CLASSES)
        if "classes" not in classes:
            raise ValueError("train.walk message: the classes record has no 'classes' array")
        targets = Targets(
            classes=classes["classes"].numpy(),
            num_classes=_setting(msg, "num-classes"),
            head=record_state(head) if isinstance(head, ArrayRecord) else None,
            memory=PrototypeMemory.from_state(record_state(memory))
            if isinstance(memory, ArrayRecord) else None,
        )
    local_head = str(config.get("local-head", ""))  # FedAvg: this node's head, kept here
    if local_head:
        targets = replace(targets or Targets(), head=load_local_head(
            directory, _setting(msg, "run-key", str), local_head))
    hop = _setting(msg, "hop")
    try:
        result = walk_hop(directory, cfg, _weights_file(msg, context),
                          record_state(_arrays(msg, WEIGHTS)), hop, targets)
    except TrainingDiverged as err:  # no weights go back: the server keeps the last good ones
        return _reply(msg, {"diverged": 1, "diverged-step": err.step})
    if incremental:  # every node keeps its own copy for unification (paper 3.5)
        save_model_copy(directory, _setting(msg, "run-key", str), result.state)
    if local_head:
        save_local_head(directory, _setting(msg, "run-key", str), local_head, result.head)
    records = {WEIGHTS: state_record(result.state, cfg.transfer_dtype)}
    if targets is not None and cfg.incremental_head == "travel":
        records[HEAD] = state_record(result.head, cfg.transfer_dtype)
    if result.memory is not None:  # refreshed by this hop, on to the next
        records[PROTOTYPES] = state_record(result.memory.to_state(), cfg.transfer_dtype)
    return _reply(msg, {
        "loss": result.stats.loss, "accuracy": result.stats.accuracy,
        "images": result.stats.images, "seconds": result.stats.seconds,
        "num-classes": result.num_classes, "stem-digest": result.stem_digest,
    }, **records)


@app.query("memory")
def memory(msg: Message, context: Context) -> Message:
    """The node's memory bank (paper eq. 4): one feature vector per local tracklet.

    The node keeps it too: the next round needs its own bank, the server need not resend it.
    """
    from dmnreid.node import memory_bank

    cfg = _run_config(msg)
    directory = _directory(msg, context)
    bank = wire_features(memory_bank(directory, cfg, _weights_file(msg, context),
                                     record_state(_arrays(msg, WEIGHTS))), cfg.feature_dtype)
    save_memory_bank(directory, _setting(msg, "run-key", str), bank.astype(np.float32))
    return _reply(msg, {"memories": int(bank.shape[0]), "dim": int(bank.shape[1])},
                  memory=arrays_record({"features": bank}))


def _payload(msg: Message, needed: Iterable[str]) -> tuple[dict[str, np.ndarray], GlobalIds]:
    """The round's arrays and the gid encoding; every array the round needs present."""
    arrays = {k: a.numpy() for k, a in _arrays(msg, PAYLOAD).items()}
    missing = sorted({*needed, "ids_cameras", "ids_sizes"} - set(arrays))
    if missing:
        raise ValueError(f"{msg.metadata.message_type} payload without {missing}")
    return arrays, GlobalIds.from_arrays(arrays)


def _camera(msg: Message, context: Context) -> tuple[Path, int]:
    directory = _directory(msg, context)
    return directory, load_node(directory).camera


def _pairs_reply(msg: Message, pairs: Pairs, **metrics: int) -> Message:
    return _reply(msg, {"pairs": len(pairs), **metrics},
                  **{PAYLOAD: arrays_record(pairs.to_arrays("pairs"))})


@app.query("top1")
def top1(msg: Message, context: Context) -> Message:
    """Mutual top-1 edges of the camera pairs the server dealt to this node (paper 3.3)."""
    arrays, ids = _payload(msg, Top1Payload.KEYS)
    directory, camera = _camera(msg, context)
    bank = load_memory_bank(directory, _setting(msg, "run-key", str))
    limit = float(_config(msg).get("max-distance", 0.0))
    if not math.isfinite(limit) or limit < 0:
        raise ValueError(f"query.top1 message: max-distance {limit} is not a finite number >= 0")
    return _pairs_reply(msg, node_top1(camera, bank, Top1Payload.from_arrays(arrays), ids,
                                       limit or None))


@app.query("triangle")
def triangle(msg: Message, context: Context) -> Message:
    """This camera's edges that pass the triangle relation with threshold alpha, and its
    memories' first labels."""
    arrays, ids = _payload(msg, TrianglePayload(Pairs.empty(), Pairs.empty()).to_arrays())
    _, camera = _camera(msg, context)
    reply = node_triangle(camera, TrianglePayload.from_arrays(arrays),
                          _setting(msg, "alpha"), ids)
    return _reply(msg, {"pairs": len(reply.kept)},
                  **{PAYLOAD: arrays_record(reply.to_arrays())})


@app.query("flood")
def flood(msg: Message, context: Context) -> Message:
    """One flooding step: each of this camera's memories takes the smallest label it got."""
    arrays, ids = _payload(msg, FloodPayload(np.empty(0), Pairs.empty()).to_arrays())
    _, camera = _camera(msg, context)
    payload = FloodPayload.from_arrays(arrays)
    labels = node_flood(camera, payload, ids)
    return _reply(msg, {"changed": int(np.any(labels < payload.labels))},
                  **{PAYLOAD: arrays_record({"labels": labels})})


@app.query("weights")
def weights(msg: Message, context: Context) -> Message:
    """This node's own copy of the model, for unification."""
    from dmnreid.node import load_model_copy

    state = load_model_copy(_directory(msg, context), _setting(msg, "run-key", str))
    return _reply(msg, {"layers": len(state)},
                  **{WEIGHTS: state_record(state, _run_config(msg).transfer_dtype)})


@app.query("embed")
def embed(msg: Message, context: Context) -> Message:
    """This camera's query/gallery features (federated evaluation): vectors and ids only."""
    from dmnreid.node import embed_own_tests

    cfg = _run_config(msg)
    embedded = embed_own_tests(_directory(msg, context), cfg, _weights_file(msg, context),
                               record_state(_arrays(msg, WEIGHTS)))
    arrays = {k: wire_features(v, cfg.feature_dtype) if k.endswith("-features") else v
              for split, features in embedded.items()
              for k, v in features.to_arrays(split).items()}
    return _reply(msg, {split: len(features.items) for split, features in embedded.items()},
                  **{PAYLOAD: arrays_record(arrays)})
