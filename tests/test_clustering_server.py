"""Server-side checks of what nodes send in the clustering rounds: bad replies are named."""

from __future__ import annotations

import numpy as np
import pytest

from dmnreid.memory.protocol import Pairs
from dmnreid.messages import NodeError
from dmnreid.strategies.clustering import check_banks, graph_clusters

NODES = {1: 101, 2: 102, 3: 103}
SIZES = {1: 2, 2: 3, 3: 1}


def banks(width: int = 4) -> dict[int, np.ndarray]:
    return {c: np.ones((n, width), np.float32) for c, n in SIZES.items()}


def test_good_banks_pass():
    assert set(check_banks(banks(), SIZES, NODES)) == {1, 2, 3}


def test_a_bank_of_the_wrong_width_names_its_node():
    bad = banks()
    bad[2] = np.ones((3, 5), np.float32)
    with pytest.raises(NodeError, match=r"camera 2 \(node 102\).*width 5"):
        check_banks(bad, SIZES, NODES)


def test_wrong_rows_missing_banks_and_nan_are_refused():
    bad = banks()
    bad[3] = np.ones((2, 4), np.float32)
    with pytest.raises(NodeError, match=r"camera 3 \(node 103\).*expected \(1, d\)"):
        check_banks(bad, SIZES, NODES)
    partial = banks()
    partial[1] = None
    with pytest.raises(NodeError, match=r"no memory bank from camera\(s\) \[1\]"):
        check_banks(partial, SIZES, NODES)
    nan = banks()
    nan[2][0, 0] = np.nan
    with pytest.raises(NodeError, match=r"camera 2 .*non-finite"):
        check_banks(nan, SIZES, NODES)


def test_graph_clusters_are_components_labelled_by_smallest_id():
    edges = Pairs(np.array([0, 3, 4]), np.array([2, 4, 5]))
    assert graph_clusters(edges, 7).tolist() == [0, 1, 0, 3, 3, 3, 6]
