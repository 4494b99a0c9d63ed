"""ClientApp: one handler per message type, each a thin adapter over :mod:`dmnreid.node`."""

from __future__ import annotations

from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import load_node
from dmnreid.messages import CONFIG, METRICS, WEIGHTS, audit_mod, record_state, state_record
from dmnreid.node import node_dir, walk_hop

app = ClientApp(mods=[audit_mod])


def _config(msg: Message) -> ConfigRecord:
    record = msg.content.get(CONFIG)
    if not isinstance(record, ConfigRecord):
        raise ValueError(f"{msg.metadata.message_type} message without a config record")
    return record


@app.query("info")
def info(msg: Message, context: Context) -> Message:
    """Which camera this node holds and how much data: counts only, no names or paths."""
    directory = node_dir(context.node_config, str(_config(msg).get("partition-dir", "")))
    if directory is None:
        metrics = MetricRecord({"camera": -1, "tracklets": 0, "images": 0})
    else:
        data = load_node(directory)
        metrics = MetricRecord({"camera": data.camera, "tracklets": data.num_classes,
                                "images": data.num_images})
    return Message(RecordDict({METRICS: metrics}), reply_to=msg)


@app.train("walk")
def walk(msg: Message, context: Context) -> Message:
    """A random-walk hop: train the walking weights on local data, send them back."""
    cfg = RunConfig.from_mapping(context.run_config)
    config = _config(msg)
    directory = node_dir(context.node_config, str(config.get("partition-dir", "")))
    if directory is None:
        raise ValueError("this node holds no camera's data and cannot take a hop")
    record = msg.content.get(WEIGHTS)
    if not isinstance(record, ArrayRecord):
        raise ValueError("train.walk message without walking weights")
    weights_file = str(config.get("weights-file", ""))
    result = walk_hop(directory, cfg, Path(weights_file) if weights_file else None,
                      record_state(record), int(config["hop"]))
    metrics = MetricRecord({
        "loss": result.stats.loss, "accuracy": result.stats.accuracy,
        "images": result.stats.images, "seconds": result.stats.seconds,
        "num-classes": result.num_classes, "stem-digest": result.stem_digest,
    })
    return Message(RecordDict({WEIGHTS: state_record(result.state), METRICS: metrics}),
                   reply_to=msg)
