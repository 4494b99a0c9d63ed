"""Checks on states that cross the wire or are checkpointed."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

from dmnreid.checks import StateError, check_features, check_state, non_finite

LIKE = OrderedDict(w=torch.zeros(3, 2), b=torch.zeros(3), n=torch.tensor(0))


def test_a_matching_finite_state_passes():
    check_state(OrderedDict(w=torch.ones(3, 2), b=torch.ones(3), n=torch.tensor(7)), "x",
                like=LIKE)
    assert non_finite(LIKE) == []


@pytest.mark.parametrize(("state", "match"), [
    ({"w": torch.zeros(3, 2), "b": torch.zeros(3)}, r"missing \[n\]"),
    ({**LIKE, "extra": torch.zeros(1)}, r"unexpected \[extra\]"),
    ({**LIKE, "w": torch.zeros(2, 3)}, r"w \(2, 3\) torch.float32 instead of \(3, 2\)"),
    ({**LIKE, "w": torch.zeros(3, 2, dtype=torch.float64)}, "float64 instead of"),
    ({**LIKE, "b": torch.tensor([0.0, float("nan"), 1.0])}, r"non-finite .* in b"),
    ({**LIKE, "w": torch.full((3, 2), float("-inf"))}, r"non-finite .* in w"),
])
def test_what_is_wrong_is_named(state, match):
    with pytest.raises(StateError, match=rf"camera 2's weights: .*{match}"):
        check_state(state, "camera 2's weights", like=LIKE)


def test_finiteness_alone_without_a_reference():
    check_state({"w": torch.ones(5)}, "checkpoint")
    with pytest.raises(StateError, match="checkpoint: non-finite"):
        check_state({"w": torch.tensor([1.0, float("inf")])}, "checkpoint")


def test_features_are_2d_float_finite_and_of_the_expected_size():
    good = np.ones((4, 8), np.float64)
    assert check_features(good, "bank", rows=4, width=8).dtype == np.float32
    for bad, match in ((np.ones(8), "2-D float"), (np.ones((4, 8), np.int64), "2-D float"),
                       (np.ones((3, 8)), "3 rows, expected 4"),
                       (np.ones((4, 7)), "7 dimensions, expected 8"),
                       (np.full((4, 8), np.nan), "non-finite")):
        with pytest.raises(StateError, match=f"bank: .*{match}"):
            check_features(bad, "bank", rows=4, width=8)
