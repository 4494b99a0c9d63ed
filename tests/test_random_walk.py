"""Hop order: reproducible, never stays on a node, permutations cover every node per cycle;
what a walk of some passes covers."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnreid.config import RunConfig
from dmnreid.strategies.walk_strategy import Coverage, coverage, hop_order


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


def test_coverage_counts_distinct_nodes_overall_and_per_pass():
    assert coverage([0, 1, 0, 2, 1, 0, 1], 3) == Coverage(visited=3, per_pass=(2, 3, 1))
    assert coverage([], 4) == Coverage(visited=0, per_pass=())


@pytest.mark.parametrize("cameras", [6, 15, 30, 60])
def test_a_permutation_walk_visits_every_camera_once_per_pass(cameras: int):
    cfg = RunConfig(walk_order="permutation")
    hops = cfg.schedule(cameras).walk
    assert coverage(hop_order(cameras, hops, cfg.walk_order, cfg.seed), cameras) == \
        Coverage(cameras, (cameras,) * cfg.walk_passes)


def test_a_random_walk_leaves_cameras_out():
    """Each hop picks among the other cameras, so a pass of M hops misses about 1/e of
    them and 3 passes about 1/e^3 (5%): the default walk's coverage, over 100 seeds."""
    for cameras in (15, 30, 60):
        covered = [coverage(hop_order(cameras, RunConfig().schedule(cameras).walk, "random",
                                      seed), cameras) for seed in range(100)]
        per_pass = np.mean([np.mean(c.per_pass) for c in covered]) / cameras
        overall = np.mean([c.visited for c in covered]) / cameras
        assert per_pass == pytest.approx(1 - (1 - 1 / (cameras - 1)) ** cameras, abs=0.03)
        assert overall == pytest.approx(1 - (1 - 1 / (cameras - 1)) ** (3 * cameras), abs=0.02)
