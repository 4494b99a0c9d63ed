"""Camera-aware batch normalisation: every camera normalises its images with its own statistics.

A camera's style (colour cast, brightness, blur) shifts the activations of all its images
alike, and BN's running mean and variance are exactly a per-channel description of that
shift. With ``bn-mode = "camera"`` the running statistics never travel with the walking
weights: wherever a model meets a camera's images (a hop, a memory bank, an embedding of test
images) they are re-estimated from that camera's own unlabeled images under the current
weights, so each camera is normalised by itself (camera-based BN for re-ID; FedBN keeps BN
local in federated learning for the same reason). No label is used, so estimating them on a
camera's test images is test-time adaptation.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from dmnreid.compute import CPU, on_device
from dmnreid.reid.images import normalise

BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
ADAPT_BATCH = 128  # large batches give steady per-batch moments; 64x32 images fit easily


def is_bn_statistic(key: str) -> bool:
    """Whether a state-dict key is a BN running statistic (not a learned weight)."""
    return key.rsplit(".", 1)[-1] in BN_STATISTICS


def without_bn_statistics(state: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((k, v) for k, v in state.items() if not is_bn_statistic(k))


def state_bytes(state: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def adaptation_subset(count: int, max_images: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of the images to estimate from: all of them, or ``max_images`` drawn
    reproducibly, so the server and a node given the same images pick the same ones."""
    if max_images <= 0 or count <= max_images:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, max_images, replace=False))


@torch.no_grad()
def estimate_bn_statistics(model: nn.Module, images: torch.Tensor, max_images: int = 0,
                           seed: int = 0, device: torch.device = CPU) -> int:
    """Replace every BN layer's running statistics by estimates on ``images`` (uint8), in place.

    Each layer's mean and variance are the averages over batches of ``ADAPT_BATCH`` images of
    the batch moments, with each batch normalised by its own moments, as in training.
    Weights do not change and no label is used. Returns the number of images used.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    index = adaptation_subset(len(images), max_images, seed)
    if len(index) < 2:
        raise ValueError(f"BN statistics need at least 2 images, got {len(index)}")
    modes = {m: m.training for m in model.modules()}
    momenta = [layer.momentum for layer in layers]
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches
        layer.train()
    try:
        forward = model.features if hasattr(model, "features") else model
        with on_device(model, device):
            for begin in range(0, len(index), ADAPT_BATCH):
                batch = index[begin:begin + ADAPT_BATCH]
                if len(batch) < 2:  # a single image has no variance; the others suffice
                    continue
                forward(normalise(images[torch.from_numpy(batch)].to(device)))
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        for module, training in modes.items():
            module.training = training
    return len(index)


def adapted_copy(model: nn.Module, images: torch.Tensor, max_images: int = 0,
                 seed: int = 0, device: torch.device = CPU) -> nn.Module:
    """A copy of ``model`` with BN statistics estimated on ``images``; ``model`` is untouched."""
    adapted = copy.deepcopy(model)
    estimate_bn_statistics(adapted, images, max_images, seed, device)
    return adapted
