"""Model unification (paper 3.5): one model for every node after the incremental walk.

``pick-one``: every node adopts one node's model, chosen by seed (the paper's experiments).
``average``: the element-wise mean of all nodes' models: of their BN running statistics too
with ``bn-mode = "shared"``; with ``"camera"`` the models carry none, so the weights are
averaged and each camera goes on estimating its own statistics.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch


def pick_one(cameras: Sequence[int], seed: int) -> int:
    """The camera whose model everyone adopts, reproducible from ``seed``."""
    if not cameras:
        raise ValueError("no cameras to pick a model from")
    return sorted(cameras)[int(np.random.default_rng(seed).integers(len(cameras)))]


def _mean_as(total: torch.Tensor, count: int, dtype: torch.dtype) -> torch.Tensor:
    """A float64 sum of ``count`` tensors as their mean in ``dtype``: integer buffers (BN
    ``num_batches_tracked``) take the rounded mean."""
    mean = total / count
    return mean.to(dtype) if dtype.is_floating_point else mean.round().to(dtype)


def _add(total: OrderedDict[str, torch.Tensor], state: Mapping[str, torch.Tensor],
         index: int) -> None:
    """Add model ``index`` to the running sums, in float64 (float32 and int64 values convert
    exactly); its layers and shapes must be model 0's."""
    if list(state) != list(total):
        raise ValueError(f"model {index} has other layers than model 0")
    for key, tensor in state.items():
        if tensor.shape != total[key].shape:
            raise ValueError(f"{key}: shapes differ between models")
        total[key].add_(tensor)


def running_mean(states: Iterable[Mapping[str, torch.Tensor]]
                 ) -> OrderedDict[str, torch.Tensor] | None:
    """Element-wise mean of state dicts with identical keys and shapes, taken as they come
    (None when none comes): only the float64 running sums and the model being added are
    held, never all M models.

    Each element is summed from zero in the order given, then divided by M: what
    ``torch.stack(...).mean(0)`` gave, bit for bit, wherever the sum is exact in float64 (each
    element's nonzero values within a factor 2^(29 - ceil(log2 M)) of each other, as in copies
    of one walked model). Elsewhere torch's summation order could round otherwise: by at most
    M 2^-52 times the mean absolute value, plus one unit in the last place of the cast.
    Integer buffers (BN ``num_batches_tracked``) take the rounded mean.
    """
    total: OrderedDict[str, torch.Tensor] = OrderedDict()
    dtypes: dict[str, torch.dtype] = {}
    count = 0
    for state in states:  # not enumerate: its reused tuple would hold the previous model
        if not count:
            total = OrderedDict((k, torch.zeros_like(t, dtype=torch.float64))
                                for k, t in state.items())
            dtypes = {k: t.dtype for k, t in state.items()}
        _add(total, state, count)
        count += 1
        del state  # released before the next model is made (a reply decoded, a file read)
    if not count:
        return None
    return OrderedDict((k, _mean_as(t, count, dtypes[k])) for k, t in total.items())


def average_states(states: Iterable[Mapping[str, torch.Tensor]]) -> OrderedDict[str, torch.Tensor]:
    """:func:`running_mean` of at least one model (a list, or any iterable of them)."""
    mean = running_mean(states)
    if mean is None:
        raise ValueError("no models to average")
    return mean
