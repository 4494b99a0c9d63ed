"""What an edge node does, without Flower: find its data, train a hop, describe itself.

Kept free of module-level state: in deployment each message may run in a fresh ClientApp
process, so everything a node reuses (decoded images) lives in its own folder on disk.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dmnreid.atomic import save_torch
from dmnreid.checks import check_state
from dmnreid.compute import resolve_device
from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import NodeData, load_node, read_test_tables
from dmnreid.memory.prototypes import PrototypeMemory, prototype_objective, refreshed
from dmnreid.node_state import local_head_path, model_copy_path
from dmnreid.reid.camera_bn import estimate_bn_statistics
from dmnreid.reid.evaluator import ItemFeatures, SplitFrames, embed_camera
from dmnreid.reid.images import cached_decode
from dmnreid.reid.model import (
    ReidNet,
    build_model,
    load_walking_state,
    stem_digest,
    walking_state,
)
from dmnreid.reid.train import TrainConfig, TrainStats, extract_features, train_local
from dmnreid.style.node_transfer import needs_style, translated_frames


@dataclass(frozen=True)
class HopResult:
    state: OrderedDict[str, torch.Tensor]
    head: OrderedDict[str, torch.Tensor]
    stats: TrainStats
    num_classes: int
    stem_digest: int
    memory: PrototypeMemory | None = None  # refreshed by a prototype hop


@dataclass(frozen=True)
class Targets:
    """What the classifier learns at a hop.

    The first walk uses the node's local labels and a fresh head (``classes`` None). The
    incremental walk (paper eq. 5) maps every local tracklet to its global cluster class, with
    a head of ``num_classes`` outputs that is either fresh or the one that travelled in.
    With a prototype ``memory`` (``incremental-loss = "prototype"``) the hop trains against
    the memory's centroids instead of a head and refreshes this camera's entries.
    """

    classes: np.ndarray | None = None
    num_classes: int = 0
    head: Mapping[str, torch.Tensor] | None = None
    memory: PrototypeMemory | None = None


def training_images(data: NodeData, cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """All frames of the node's tracklets (decoded, cached on disk) with their local labels.

    With style transfer on, a non-target node trains on its frames translated to the target
    camera's style (``style-use = "translated"``), or on originals and translations together
    (``"both"``); the memory bank is built from the same frames.
    """
    paths = [p for frames in data.frames for p in frames]
    labels = torch.tensor([lab for lab, frames in zip(data.labels, data.frames, strict=True)
                           for _ in frames], dtype=torch.long)
    if needs_style(data, cfg) and cfg.style_use == "translated":
        return translated_frames(data, cfg), labels
    images = cached_decode(paths, cfg.image_height, cfg.image_width, data.root / "cache", "train")
    if needs_style(data, cfg):  # style-use = "both"
        return torch.cat([images, translated_frames(data, cfg)]), torch.cat([labels, labels])
    return images, labels


def _model(cfg: RunConfig, weights: Path | None, num_classes: int,
           state: Mapping[str, torch.Tensor]) -> ReidNet:
    model = build_model(cfg.arch, weights, num_classes, cfg.freeze_stem, cfg.bn_statistics)
    load_walking_state(model, state, cfg.freeze_stem, cfg.bn_mode)
    return model


def own_statistics(model: ReidNet, images: torch.Tensor, cfg: RunConfig, seed: int) -> None:
    """``bn-mode = "camera"``: BN statistics of this camera's images under the weights that
    just arrived (statistics of an earlier visit would describe other weights)."""
    if cfg.bn_mode == "camera":
        estimate_bn_statistics(model, images, cfg.bn_adapt_images, seed,
                               resolve_device(cfg.device))


def check_classes(classes: np.ndarray, tracklets: int, num_classes: int) -> None:
    """An incremental hop's targets: one global class in [0, num_classes) per local tracklet."""
    classes = np.asarray(classes)
    if classes.ndim != 1 or classes.dtype.kind not in "iu":
        raise ValueError(f"global classes must be a 1-D integer array, got {classes.dtype} "
                         f"{classes.shape}")
    if len(classes) != tracklets:
        raise ValueError(f"{len(classes)} global classes sent for {tracklets} local tracklets")
    if len(classes) and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"global classes range over [{classes.min()}, {classes.max()}], "
                         f"outside the head's [0, {num_classes}) (num-classes)")


def walk_hop(directory: Path, cfg: RunConfig, weights: Path | None,
             state: Mapping[str, torch.Tensor], hop: int,
             targets: Targets | None = None) -> HopResult:
    """One random-walk hop (paper 3.2 / 3.4): train on local data, walking weights back."""
    data = load_node(directory)
    images, labels = training_images(data, cfg)
    targets = targets or Targets()
    if targets.memory is not None:
        return _prototype_hop(directory, data.camera, cfg, weights, state, hop, targets,
                              images, labels)
    num_classes = data.num_classes
    if targets.classes is not None:
        check_classes(targets.classes, data.num_classes, targets.num_classes)
        labels = torch.as_tensor(targets.classes, dtype=torch.long)[labels]
        num_classes = targets.num_classes
    model = _model(cfg, weights, num_classes, state)
    digest = stem_digest(model)  # as built from the weights file, before any local statistic
    # bn-statistics = frozen trains under the weights file's statistics, the same on every
    # node (camera statistics re-estimated per hop and then frozen drifted, see README);
    # update starts from this camera's own and then follows the batches
    if cfg.bn_statistics == "update":
        own_statistics(model, images, cfg, hop)
    if targets.head is not None:
        check_state(targets.head, "travelling head", like=model.head.state_dict())
        model.head.load_state_dict(dict(targets.head))
    stats = train_local(model, images, labels, hop_config(cfg, hop),
                        device=resolve_device(cfg.device))
    head = OrderedDict((k, v.detach().clone()) for k, v in model.head.state_dict().items())
    return HopResult(walking_state(model, cfg.freeze_stem, cfg.bn_mode), head, stats,
                     num_classes, digest)


def hop_config(cfg: RunConfig, hop: int) -> TrainConfig:
    return TrainConfig(epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr_head=cfg.lr_head,
                       lr_backbone=cfg.lr_backbone, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay, seed=cfg.seed * 100_003 + hop)


def _prototype_hop(directory: Path, camera: int, cfg: RunConfig, weights: Path | None,
                   state: Mapping[str, torch.Tensor], hop: int, targets: Targets,
                   images: torch.Tensor, labels: torch.Tensor) -> HopResult:
    """An incremental hop against the travelling memory (issue 17): each frame's targets are
    its cluster's entries in the other cameras; then this camera's entries are refreshed
    from its memory bank under the trained weights."""
    if targets.classes is None or targets.memory is None:
        raise ValueError("a prototype hop needs the global classes and the memory")
    check_classes(targets.classes, len(torch.unique(labels)), targets.num_classes)
    distinct, of_tracklet = np.unique(targets.classes, return_inverse=True)
    device = resolve_device(cfg.device)
    model = _model(cfg, weights, 1, state)  # no head: the memory is the classifier
    digest = stem_digest(model)
    if cfg.bn_statistics == "update":
        own_statistics(model, images, cfg, hop)
    objective = prototype_objective(targets.memory, camera, distinct,
                                    cfg.prototype_temperature, device,
                                    cfg.prototype_negatives)
    stats = train_local(model, images, torch.from_numpy(of_tracklet)[labels],
                        hop_config(cfg, hop), device=device, objective=objective)
    trained = walking_state(model, cfg.freeze_stem, cfg.bn_mode)
    bank = memory_bank(directory, cfg, weights, trained)
    memory = refreshed(targets.memory, camera, bank, targets.classes, cfg.prototype_momentum)
    return HopResult(trained, OrderedDict(), stats, targets.num_classes, digest, memory)


def memory_bank(directory: Path, cfg: RunConfig, weights: Path | None,
                state: Mapping[str, torch.Tensor]) -> np.ndarray:
    """One memory per local tracklet (paper eq. 4), row = local label, float32 (N_m, d).

    Each frame feature is L2-normalised (as for retrieval) so every frame votes equally, the
    frames of a tracklet are summed as in eq. 4, and the sum is L2-normalised again: tracklets
    hold 4 to several hundred frames, and without the second normalisation a sum's length
    (set by the frame count) would dominate the L2 distances of mutual top-1.

    ``memory-features = "centred"`` also subtracts the mean of the camera's own memories before
    the second normalisation: a camera's style shifts all its features alike, and the node can
    remove that shift from its own data alone.
    """
    data = load_node(directory)
    images, labels = training_images(data, cfg)
    model = _model(cfg, weights, 1, state)
    own_statistics(model, images, cfg, 0)
    frames = torch.from_numpy(extract_features(model, images,
                                               device=resolve_device(cfg.device)))
    bank = torch.zeros((data.num_classes, frames.shape[1]), dtype=torch.float64)
    bank.index_add_(0, labels, frames.double())
    bank = torch.nn.functional.normalize(bank, dim=1)
    if cfg.memory_features == "centred":
        bank = torch.nn.functional.normalize(bank - bank.mean(0, keepdim=True), dim=1)
    return bank.float().numpy()


def embed_own_tests(directory: Path, cfg: RunConfig, weights: Path | None,
                    state: Mapping[str, torch.Tensor]) -> dict[str, ItemFeatures]:
    """This camera's query and gallery features (``eval-mode = "federated"``).

    The same computation as the server's evaluation of this camera, on the node's own copy
    of the images; only feature vectors and item/person/camera ids leave the node.
    """
    tables = read_test_tables(directory)
    frames = {split: SplitFrames.read(table, list(table["frame"]), cfg.image_height,
                                     cfg.image_width, directory / "cache", f"test-{split}")
              for split, table in tables.items()}
    return embed_camera(_model(cfg, weights, 1, state), frames["query"], frames["gallery"],
                        cfg.bn_mode, cfg.bn_adapt_images, resolve_device(cfg.device))


def save_model_copy(directory: Path, run_key: str, state: Mapping[str, torch.Tensor]) -> None:
    save_torch(OrderedDict(state), model_copy_path(directory, run_key))


def load_model_copy(directory: Path, run_key: str) -> OrderedDict[str, torch.Tensor]:
    path = model_copy_path(directory, run_key)
    if not path.is_file():
        raise FileNotFoundError(f"{directory.name} holds no model copy for run {run_key}")
    return OrderedDict(torch.load(path, map_location="cpu", weights_only=True))


def save_local_head(directory: Path, run_key: str, name: str,
                    head: Mapping[str, torch.Tensor]) -> None:
    save_torch(OrderedDict(head), local_head_path(directory, run_key, name))


def load_local_head(directory: Path, run_key: str, name: str
                    ) -> OrderedDict[str, torch.Tensor] | None:
    """The head this node trained in the phase's last FedAvg round; None before its first."""
    path = local_head_path(directory, run_key, name)
    if not path.is_file():
        return None
    return OrderedDict(torch.load(path, map_location="cpu", weights_only=True))
