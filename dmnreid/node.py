"""What an edge node does, without Flower: find its data, train a hop, describe itself.

Kept free of module-level state: in deployment each message may run in a fresh ClientApp
process, so everything a node reuses (decoded images) lives in its own folder on disk.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import NodeData, load_node, read_partition
from dmnreid.data_prep.records import DatasetError
from dmnreid.reid.images import cached_decode
from dmnreid.reid.model import build_model, load_walking_state, stem_digest, walking_state
from dmnreid.reid.train import TrainConfig, TrainStats, train_local


def node_dir(node_config: Mapping[str, object], partition_dir: str) -> Path | None:
    """The node's data folder: ``data-dir`` in deployment, else its simulation partition.

    Returns None for a simulated node beyond the number of cameras (it has no data).
    """
    if "data-dir" in node_config:
        return Path(str(node_config["data-dir"]))
    if "partition-id" not in node_config:
        raise DatasetError("node has neither a data-dir nor a partition-id in its node config")
    if not partition_dir:
        raise DatasetError("simulation node got no partition folder from the server")
    nodes = read_partition(Path(partition_dir))["nodes"]
    index = int(node_config["partition-id"])  # type: ignore[call-overload]
    return Path(partition_dir) / nodes[index]["node"] if index < len(nodes) else None


@dataclass(frozen=True)
class HopResult:
    state: OrderedDict[str, torch.Tensor]
    stats: TrainStats
    num_classes: int
    stem_digest: int


def training_images(data: NodeData, cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """All frames of the node's tracklets (decoded, cached on disk) with their local labels."""
    paths = [p for frames in data.frames for p in frames]
    labels = torch.tensor([lab for lab, frames in zip(data.labels, data.frames, strict=True)
                           for _ in frames], dtype=torch.long)
    images = cached_decode(paths, cfg.image_height, cfg.image_width, data.root / "cache", "train")
    return images, labels


def walk_hop(directory: Path, cfg: RunConfig, weights: Path | None,
             state: Mapping[str, torch.Tensor], hop: int) -> HopResult:
    """One random-walk hop (paper 3.2): fresh local head, local epochs, walking weights back."""
    data = load_node(directory)
    images, labels = training_images(data, cfg)
    model = build_model(cfg.arch, weights, data.num_classes, cfg.freeze_stem,
                        cfg.bn_statistics)
    load_walking_state(model, state, cfg.freeze_stem)
    stats = train_local(model, images, labels, TrainConfig(
        epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr_head=cfg.lr_head,
        lr_backbone=cfg.lr_backbone, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
        seed=cfg.seed * 100_003 + hop,
    ))
    return HopResult(walking_state(model, cfg.freeze_stem), stats, data.num_classes,
                     stem_digest(model))
