"""Server-side checks of what nodes send in the clustering rounds: a bad bank is refused,
naming its camera and node, and only that camera is left out."""

from __future__ import annotations

import re

import numpy as np

from dmnreid.memory.protocol import Pairs
from dmnreid.strategies.clustering import graph_clusters, usable_banks

NODES = {1: 101, 2: 102, 3: 103}
SIZES = {1: 2, 2: 3, 3: 1}


def banks(width: int = 4) -> dict[int, np.ndarray]:
    return {c: np.ones((n, width), np.float32) for c, n in SIZES.items()}


def test_good_banks_pass():
    checked, refused = usable_banks(banks(), SIZES, NODES)
    assert set(checked) == {1, 2, 3} and refused == {}


def test_a_bank_of_the_wrong_width_names_its_node():
    bad = banks()
    bad[2] = np.ones((3, 5), np.float32)
    checked, refused = usable_banks(bad, SIZES, NODES)
    assert set(checked) == {1, 3} and set(refused) == {2}
    assert re.search(r"camera 2 \(node 102\).*width 5", refused[2])


def test_wrong_rows_missing_banks_and_nan_are_refused_naming_camera_and_node():
    bad = banks()
    bad[3] = np.ones((2, 4), np.float32)
    bad[1] = None
    bad[2][0, 0] = np.nan
    checked, refused = usable_banks(bad, SIZES, NODES)
    assert checked == {} and set(refused) == {1, 2, 3}
    assert re.search(r"camera 3 \(node 103\).*expected \(1, d\)", refused[3])
    assert refused[1] == "no memory bank from camera 1 (node 101)"
    assert re.search(r"camera 2 .*non-finite", refused[2])


def test_graph_clusters_are_components_labelled_by_smallest_id():
    edges = Pairs(np.array([0, 3, 4]), np.array([2, 4, 5]))
    assert graph_clusters(edges, 7).tolist() == [0, 1, 0, 3, 3, 3, 6]
