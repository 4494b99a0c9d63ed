"""The supervised upper bound: the same network trained centrally on every camera's training
images with their true identities.

Not a federated method (all images in one place, true labels): it tells how far this data
and network could go with the same training budget, so the gap between it and the walk is
the headroom any unsupervised stage could close.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from dmnreid.compute import resolve_device
from dmnreid.data_prep.partition import load_node
from dmnreid.experiments.driver import Network, State
from dmnreid.node import training_images
from dmnreid.reid.model import build_model, walking_state
from dmnreid.reid.train import TrainConfig, train_local


def centralised_images(network: Network) -> tuple[torch.Tensor, torch.Tensor, int]:
    """All cameras' original training frames, each labelled with its true identity
    (0..K-1), and K."""
    truth = network.truth()
    assert truth.classes is not None
    cfg = replace(network.cfg, style_transfer=False)
    images, labels = [], []
    for camera in network.cameras:
        frames, local = training_images(load_node(network.nodes[camera]), cfg)
        images.append(frames)
        labels.append(torch.as_tensor(truth.classes[camera], dtype=torch.long)[local])
    return torch.cat(images), torch.cat(labels), truth.num_classes


def train_upper_bound(network: Network, budget: int) -> tuple[State, dict]:
    """Train on ``budget`` images seen (rounded to whole epochs over all cameras' images,
    at least one) from the pretrained weights, with the walk's optimiser settings."""
    cfg = network.cfg
    images, labels, identities = centralised_images(network)
    epochs = max(1, round(budget / len(images)))
    model = build_model(cfg.arch, network.weights, identities, cfg.freeze_stem,
                        cfg.bn_statistics)
    network.progress(f"upper bound: {len(images)} images of {identities} identities, "
                     f"{epochs} epoch(s) for a budget of {budget} images")
    stats = train_local(model, images, labels, TrainConfig(
        epochs=epochs, batch_size=cfg.batch_size, lr_head=cfg.lr_head,
        lr_backbone=cfg.lr_backbone, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
        seed=cfg.seed), on_epoch=lambda epoch, running: network.progress(
            f"upper bound: epoch {epoch + 1}/{epochs}, loss {running.loss:.3f}"),
        device=resolve_device(cfg.device))
    return walking_state(model, cfg.freeze_stem, cfg.bn_mode), {
        "images": stats.images, "epochs": epochs, "identities": identities,
        "budget": budget, "loss": stats.loss}
