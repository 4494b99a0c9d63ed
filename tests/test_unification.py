"""Model unification: pick one node's model, or average all of them (BN buffers included)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from dmnreid.reid.model import build_model, walking_state
from dmnreid.strategies.unification import average_states, pick_one


def test_pick_one_is_seeded_and_fair():
    assert pick_one([3, 1, 2], 7) == pick_one([1, 2, 3], 7)
    counts = Counter(pick_one([1, 2, 3, 4], seed) for seed in range(400))
    assert set(counts) == {1, 2, 3, 4} and min(counts.values()) > 60
    with pytest.raises(ValueError):
        pick_one([], 0)


def test_average_is_elementwise_including_bn_statistics():
    states = []
    for k in range(3):
        state = walking_state(build_model("resnet18", None))
        for tensor in state.values():
            tensor.fill_(float(k + 1) if tensor.is_floating_point() else k * 10)
        states.append(state)
    mean = average_states(states)
    assert set(mean) == set(states[0])
    for name, tensor in mean.items():
        if tensor.is_floating_point():
            assert torch.all(tensor == 2.0), name  # (1 + 2 + 3) / 3
        else:
            assert tensor.dtype == torch.int64 and int(tensor) == 10  # num_batches_tracked
    assert any("running_var" in k for k in mean)
    real = [walking_state(build_model("resnet18", None)) for _ in range(2)]
    real[1]["middle.layer3.0.bn1.running_mean"] += 2.0
    avg = average_states(real)
    assert torch.allclose(avg["middle.layer3.0.bn1.running_mean"],
                          real[0]["middle.layer3.0.bn1.running_mean"] + 1.0)


def test_average_refuses_mismatched_models():
    a = walking_state(build_model("resnet18", None))
    b = dict(a)
    b.pop(next(iter(b)))
    with pytest.raises(ValueError, match="other layers"):
        average_states([a, b])
    with pytest.raises(ValueError):
        average_states([])
