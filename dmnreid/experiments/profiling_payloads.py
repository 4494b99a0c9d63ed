"""Table 3 without a run: the payloads whose size depends on the model alone.

Each is built from a real network of the configured sizes with the functions the server and
the nodes send it with (``state_record`` in the configured dtype, ``wire_features``) and
measured with ``message_bytes``, the count ``messages.json`` of a run holds. What else a
message carries (memory ids, edges, cluster ids, settings) depends on the data and the run.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from dmnreid.config import RunConfig
from dmnreid.messages import WEIGHTS, message_bytes, state_record, wire_features
from dmnreid.reid.model import build_model, walking_state
from dmnreid.reid.pretrain import torchvision_state
from dmnreid.style.networks import ResnetGenerator


@dataclass(frozen=True)
class Payload:
    """Bytes of one payload each way (None: it does not go that way) and the message types
    that carry it."""

    item: str
    to_node: int | None
    to_server: int | None
    carried_by: str
    note: str = ""


def weights_bytes(record: ArrayRecord) -> int:
    """A weights record as a message counts it (the rest of the message is a few hundred
    bytes of settings or metrics)."""
    return message_bytes(RecordDict({WEIGHTS: record}))


def model_payloads(cfg: RunConfig) -> list[Payload]:
    """The walking weights, the pretrained weights, the CycleGAN generator and one feature
    vector, for ``cfg``'s model sizes and dtypes."""
    model = build_model(cfg.arch, None, 1, cfg.freeze_stem, cfg.bn_statistics)
    walking = weights_bytes(state_record(walking_state(model, cfg.freeze_stem, cfg.bn_mode),
                                         cfg.transfer_dtype))
    backbone = weights_bytes(state_record(OrderedDict(torchvision_state(model))))
    generator = weights_bytes(state_record(ResnetGenerator(
        cfg.style_generator_filters, cfg.style_generator_blocks).state_dict()))
    feature = wire_features(np.zeros(model.feature_dim), cfg.feature_dtype).nbytes
    return [
        Payload(f"walking weights ({cfg.transfer_dtype})", walking, walking,
                "train.walk both ways; query.memory, query.embed to the node; "
                "query.weights to the server",
                f"bn-mode {cfg.bn_mode}, freeze-stem {str(cfg.freeze_stem).lower()}"),
        Payload("pretrained weights: stem and middle (float32)", backbone, None,
                "query.pretrained", "once per node without its own copy"
                if cfg.pretrained_weights != "none" else "not sent: pretrained-weights = none"),
        Payload("CycleGAN generator (float32)", None, generator, "train.style",
                _generator_note(cfg)),
        Payload(f"feature vector ({cfg.feature_dtype}), per tracklet or query/gallery item",
                feature, feature, "query.top1 to the node; query.memory, query.embed to the "
                "server", f"{model.feature_dim} values"),
    ]


def _generator_note(cfg: RunConfig) -> str:
    """The server asks for the generators to check the translation on the data it holds."""
    if not cfg.style_transfer:
        return "not sent: style-transfer = false"
    if cfg.dataset == "devices":
        return "not sent: dataset = devices (the server holds no images to check it on)"
    return "every camera but the target's, for the server's check of the translation"
