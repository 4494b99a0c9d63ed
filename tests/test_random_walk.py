"""Hop order: reproducible, never stays on a node, permutations cover every node per cycle."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnreid.strategies.walk_strategy import hop_order


@given(st.integers(2, 15), st.integers(0, 60), st.integers(0, 10**6))
def test_random_walk_moves_every_hop(nodes: int, hops: int, seed: int):
    order = hop_order(nodes, hops, "random", seed)
    assert len(order) == hops and all(0 <= n < nodes for n in order)
    assert all(a != b for a, b in pairwise(order))
    assert order == hop_order(nodes, hops, "random", seed)


def test_random_walk_is_roughly_uniform():
    order = hop_order(6, 6000, "random", 1)
    counts = [order.count(n) for n in range(6)]
    assert min(counts) > 800 and max(counts) < 1200


@given(st.integers(2, 12), st.integers(1, 5), st.integers(0, 10**6))
def test_permutation_visits_each_node_once_per_cycle(nodes: int, cycles: int, seed: int):
    order = hop_order(nodes, nodes * cycles, "permutation", seed)
    for c in range(cycles):
        assert sorted(order[c * nodes:(c + 1) * nodes]) == list(range(nodes))
    assert all(a != b for a, b in pairwise(order))


def test_seeds_differ_and_bad_input():
    assert hop_order(6, 20, "random", 0) != hop_order(6, 20, "random", 1)
    assert hop_order(1, 3, "random", 0) == [0, 0, 0]
    with pytest.raises(ValueError, match="walk order 'spiral'"):
        hop_order(3, 3, "spiral", 0)
    with pytest.raises(ValueError):
        hop_order(0, 3, "random", 0)
