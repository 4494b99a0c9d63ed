"""Model unification (paper 3.5): one model for every node after the incremental walk.

``pick-one``: every node adopts one node's model, chosen by seed (the paper's experiments).
``average``: the element-wise mean of all nodes' models: of their BN running statistics too
with ``bn-mode = "shared"``; with ``"camera"`` the models carry none, so the weights are
averaged and each camera goes on estimating its own statistics.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import torch


def pick_one(cameras: Sequence[int], seed: int) -> int:
    """The camera whose model everyone adopts, reproducible from ``seed``."""
    if not cameras:
        raise ValueError("no cameras to pick a model from")
    return sorted(cameras)[int(np.random.default_rng(seed).integers(len(cameras)))]


def average_states(states: Sequence[Mapping[str, torch.Tensor]]) -> OrderedDict[str, torch.Tensor]:
    """Element-wise mean of state dicts with identical keys and shapes.

    Floating tensors (weights, BN running mean and variance) are averaged in float64 and cast
    back; integer buffers (BN ``num_batches_tracked``) take the rounded mean.
    """
    if not states:
        raise ValueError("no models to average")
    keys = list(states[0])
    for i, state in enumerate(states[1:], start=1):
        if list(state) != keys:
            raise ValueError(f"model {i} has other layers than model 0")
    averaged: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key in keys:
        tensors = [s[key] for s in states]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise ValueError(f"{key}: shapes differ between models")
        mean = torch.stack([t.double() for t in tensors]).mean(0)
        dtype = tensors[0].dtype
        averaged[key] = mean.round().to(dtype) if not dtype.is_floating_point else mean.to(dtype)
    return averaged
