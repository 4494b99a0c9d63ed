"""Local cross-entropy training on one node (paper eq. 3), and pool5 feature extraction."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dmnreid.checks import TrainingDiverged, non_finite
from dmnreid.compute import CPU, on_device
from dmnreid.reid.images import augment, normalise, train_augmentation
from dmnreid.reid.model import ReidNet


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 32
    lr_head: float = 0.1
    lr_backbone: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0


@dataclass(frozen=True)
class TrainStats:
    loss: float
    accuracy: float
    images: int
    seconds: float


# (model, augmented batch, targets) -> (loss, number of correct predictions)
Objective = Callable[[ReidNet, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def cross_entropy(model: ReidNet, x: torch.Tensor, y: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's objective: softmax cross-entropy of the classifier head."""
    logits = model(x)
    return nn.functional.cross_entropy(logits, y), (logits.argmax(1) == y).sum()


def make_optimizer(model: ReidNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with the paper's lr 0.1 on the fresh head and a lower lr on the pretrained body."""
    body = [p for n, p in model.named_parameters()
            if p.requires_grad and not n.startswith("head.")]
    return torch.optim.SGD(
        [{"params": body, "lr": cfg.lr_backbone},
         {"params": model.head.parameters(), "lr": cfg.lr_head}],
        momentum=cfg.momentum, weight_decay=cfg.weight_decay,
    )


def train_local(model: ReidNet, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
                on_epoch: Callable[[int, TrainStats], None] | None = None,
                device: torch.device = CPU, objective: Objective = cross_entropy,
                on_step: Callable[[int], None] | None = None) -> TrainStats:
    """Train ``model`` in place on uint8 images with labels (targets of ``objective``, on
    ``device``); returns mean loss and accuracy.

    ``on_epoch`` receives the epoch index and the running statistics (for progress output),
    ``on_step`` the number of optimizer steps taken, after each (for snapshots).
    Stops with TrainingDiverged at the first non-finite loss, or when the trained weights
    hold a NaN or an infinity. Computes on ``device``; the model is back on the CPU after.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise ValueError("no training images")
    with on_device(model, device):
        return _train(model, images, labels, cfg, on_epoch, device, objective, on_step)


def _train(model: ReidNet, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
           on_epoch: Callable[[int, TrainStats], None] | None,
           device: torch.device, objective: Objective,
           on_step: Callable[[int], None] | None) -> TrainStats:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    transform = train_augmentation(images.shape[2], images.shape[3])
    optimizer = make_optimizer(model, cfg)
    model.train()
    start = time.perf_counter()
    total_loss = correct = seen = 0.0
    step = 0
    for epoch in range(cfg.epochs):
        order = torch.from_numpy(rng.permutation(len(images)))
        for begin in range(0, len(order), cfg.batch_size):
            idx = order[begin:begin + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a single image
                continue
            x = augment(images[idx].to(device), transform)
            y = labels[idx].to(device)
            loss, hits = objective(model, x, y)
            step += 1
            if not bool(torch.isfinite(loss)):
                raise TrainingDiverged(step, f"loss {float(loss)} in epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(step)
            total_loss += float(loss.detach()) * len(idx)
            correct += float(hits)
            seen += len(idx)
        if on_epoch is not None:
            on_epoch(epoch, _stats(total_loss, correct, seen, start))
    broken = non_finite(model.state_dict())
    if broken:
        raise TrainingDiverged(step, f"non-finite weights in {broken[:3]}")
    return _stats(total_loss, correct, seen, start)


def _stats(total_loss: float, correct: float, seen: float, start: float) -> TrainStats:
    return TrainStats(loss=total_loss / max(seen, 1), accuracy=correct / max(seen, 1),
                      images=int(seen), seconds=time.perf_counter() - start)


@torch.no_grad()
def extract_features(model: ReidNet, images: torch.Tensor, batch_size: int = 128,
                     device: torch.device = CPU) -> np.ndarray:
    """L2-normalised pool5 features of uint8 images, as float32 (N, d), computed on
    ``device``."""
    model.eval()
    with on_device(model, device):
        chunks = [nn.functional.normalize(
            model.features(normalise(images[i:i + batch_size].to(device))), dim=1).cpu()
            for i in range(0, len(images), batch_size)]
    if not chunks:
        return np.zeros((0, model.feature_dim), dtype=np.float32)
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)
