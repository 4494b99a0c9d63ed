"""Distributed clustering (paper §3.3): protocol == centralised reference == brute force.

The brute force below is a third, independent implementation in plain Python with exact integer
arithmetic, so on integer-valued features it pins down the semantics (ties to the lowest label,
simultaneous triangle filter, min-gid labels) for both numpy implementations. Cameras lost
after the memory round are simulated on the in-process transport: the protocol must then give
exactly what the reference gives on the remaining cameras.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from benchmarks.bench_clustering import make_banks
from dmnreid.memory.diagnostics import cluster_scores
from dmnreid.memory.protocol import (
    AllCamerasLost,
    FloodPayload,
    Pairs,
    ProtocolError,
    RoundStats,
    Top1Payload,
    TrianglePayload,
    TriangleReply,
    assign_pairs,
    check_flood_replies,
    check_top1_replies,
    check_triangle_replies,
    cluster_distributed,
    drop_cameras,
    flood_settled,
    in_process,
    node_flood,
    node_top1,
    node_triangle,
    route_flood,
    route_top1,
    route_triangle,
    run_protocol,
)
from dmnreid.memory.reference import (
    ClusterResult,
    GlobalIds,
    cluster_centralised,
    validate_banks,
)

# ---------------------------------------------------------------------------------------------
# brute force oracle


def brute_force(banks: dict[int, np.ndarray], alpha: int) -> tuple[list[int], set, set]:
    """(cluster id per gid, mutual edges, kept edges) with Python ints; integer features only."""
    cams = sorted(banks)
    rows = [(c, i, [int(v) for v in banks[c][i]]) for c in cams for i in range(len(banks[c]))]
    gid = {(c, i): k for k, (c, i, _) in enumerate(rows)}

    def nearest(vec: list[int], cam: int) -> int | None:
        best = None
        for i, other in enumerate(banks[cam]):
            d = sum((a - int(b)) ** 2 for a, b in zip(vec, other, strict=True))
            if best is None or d < best[0]:  # strict: the lowest label wins ties
                best = (d, i)
        return None if best is None else best[1]

    mutual = set()
    for (ca, i, vec), cb in itertools.product(rows, cams):
        if cb == ca:
            continue
        j = nearest(vec, cb)
        if j is not None and nearest([int(v) for v in banks[cb][j]], ca) == i:
            mutual.add(tuple(sorted((gid[ca, i], gid[cb, j]))))
    nbrs = {k: set() for k in range(len(rows))}
    for u, v in mutual:
        nbrs[u].add(v)
        nbrs[v].add(u)
    kept = {(u, v) for u, v in mutual if len(nbrs[u] & nbrs[v]) >= alpha}
    parent = list(range(len(rows)))

    def root(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    for u, v in kept:
        a, b = sorted((root(u), root(v)))
        parent[b] = a  # the smaller root wins, so a root is its component's smallest gid
    return [root(k) for k in range(len(rows))], mutual, kept


def edge_set(edges: np.ndarray) -> set:
    return {(int(u), int(v)) for u, v in edges}


# ---------------------------------------------------------------------------------------------
# random inputs


@st.composite
def integer_banks(draw) -> dict[int, np.ndarray]:
    """1-5 cameras with arbitrary ids, 0-6 memories each, tiny integer features: many ties."""
    cams = draw(st.lists(st.integers(1, 40), min_size=1, max_size=5, unique=True))
    dim = draw(st.integers(1, 3))
    values = st.integers(-2, 2)
    banks = {}
    for cam in cams:
        n = draw(st.integers(0, 6))
        flat = draw(st.lists(values, min_size=n * dim, max_size=n * dim))
        banks[cam] = np.array(flat, np.float32).reshape(n, dim)
    return banks


def gaussian_banks(seed: int, cameras: int = 6, identities: int = 30, dim: int = 16,
                   gap: float = 0.5, noise: float = 0.6) -> dict[int, np.ndarray]:
    """Synthetic-like: identity centres + camera offsets + noise, L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((identities, dim))
    banks = {}
    for cam in range(1, cameras + 1):
        who = rng.choice(identities, size=int(rng.integers(1, identities)), replace=False)
        offset = gap * rng.standard_normal(dim)
        feats = centres[who] + offset + noise * rng.standard_normal((len(who), dim))
        banks[cam] = (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)
    return banks


def assert_same(a, b) -> None:
    assert np.array_equal(a.cluster_of, b.cluster_of)
    assert np.array_equal(a.mutual_edges, b.mutual_edges)
    assert np.array_equal(a.kept_edges, b.kept_edges)
    assert (a.edges_mutual, a.edges_kept, a.clusters) == (b.edges_mutual, b.edges_kept,
                                                          b.clusters)
    assert a.labels.keys() == b.labels.keys()
    for cam in a.labels:
        assert np.array_equal(a.labels[cam], b.labels[cam])


# ---------------------------------------------------------------------------------------------
# equivalence


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(banks=integer_banks(), alpha=st.integers(0, 3))
def test_reference_and_protocol_match_brute_force(banks, alpha):
    ref = cluster_centralised(banks, alpha)
    event(f"kept edges: {min(ref.edges_kept, 3)}+, clusters < memories: "
          f"{ref.clusters < ref.ids.total}")
    labels, mutual, kept = brute_force(banks, alpha)
    assert ref.cluster_of.tolist() == labels
    assert edge_set(ref.mutual_edges) == mutual
    assert edge_set(ref.kept_edges) == kept
    runners = len(assign_pairs(ref.ids))
    for reach, top1_on in itertools.product(("edges", "sets"), ("nodes", "server")):
        dist, rounds = cluster_distributed(banks, alpha, reach=reach, top1_on=top1_on)
        assert_same(ref, dist)
        names = [r.name for r in rounds]
        top1 = ["top1"] if runners and top1_on == "nodes" else []
        assert names[:len(top1) + 2] == [*top1, "triangle", "flood-1"]
        assert all(r.messages == (runners if r.name == "top1" else len(banks)) for r in rounds)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(banks=integer_banks(), alpha=st.integers(0, 2), limit=st.integers(0, 40))
def test_distance_limit_matches_and_only_removes_far_pairs(banks, alpha, limit):
    ref = cluster_centralised(banks, alpha, max_distance=float(limit))
    assert_same(ref, cluster_distributed(banks, alpha, max_distance=float(limit))[0])
    unlimited = cluster_centralised(banks, 0)
    assert edge_set(ref.mutual_edges) <= edge_set(unlimited.mutual_edges)
    x = np.concatenate([banks[c] for c in sorted(banks)]).astype(np.float64)
    for a, b in ref.mutual_edges:
        assert ((x[a] - x[b]) ** 2).sum() <= limit + 1e-9
    for a, b in edge_set(unlimited.mutual_edges) - edge_set(ref.mutual_edges):
        assert ((x[a] - x[b]) ** 2).sum() > limit - 1e-9


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alpha", [0, 1, 2])
def test_protocol_matches_reference_on_gaussian_identities(seed, alpha):
    banks = gaussian_banks(seed)
    ref = cluster_centralised(banks, alpha)
    assert ref.edges_mutual > 0
    for reach, top1_on in itertools.product(("edges", "sets"), ("nodes", "server")):
        assert_same(ref, cluster_distributed(banks, alpha, reach=reach, top1_on=top1_on)[0])


def test_single_tracklet_empty_and_partnerless_cameras():
    banks = {
        3: np.array([[0.0, 0.0], [5.0, 5.0]], np.float32),
        7: np.array([[0.0, 1.0]], np.float32),            # one tracklet
        9: np.empty((0, 2), np.float32),                   # no memories at all
        12: np.array([[40.0, 40.0]], np.float32),          # far away: still mutual with someone
    }
    for alpha in range(3):
        ref = cluster_centralised(banks, alpha)
        assert_same(ref, cluster_distributed(banks, alpha)[0])
        assert ref.labels[9].shape == (0,) and ref.ids.total == 4
    only = {5: np.ones((1, 3), np.float32)}               # one camera: no pair, no edge
    res, rounds = cluster_distributed(only, 1)
    assert res.clusters == 1 and res.edges_mutual == 0 and res.labels[5].tolist() == [0]
    assert [r.name for r in rounds] == ["triangle", "flood-1"]  # no pair: no top-1 round


# ---------------------------------------------------------------------------------------------
# hand-made examples


def point(*xs: float) -> np.ndarray:
    return np.array(xs, np.float32)[:, None]


def test_triangle_across_three_cameras_survives_alpha_one():
    banks = {1: point(0.0), 2: point(1.0), 3: point(2.0)}
    res = cluster_centralised(banks, 1)
    assert res.edges_mutual == 3 and res.edges_kept == 3
    assert {c: v.tolist() for c, v in res.labels.items()} == {1: [0], 2: [0], 3: [0]}
    cut = cluster_centralised(banks, 2)                     # only one common neighbour each
    assert cut.edges_kept == 0 and cut.clusters == 3
    assert_same(cut, cluster_distributed(banks, 2)[0])


def test_two_camera_pair_is_cut_by_alpha_but_kept_by_alpha_zero():
    banks = {4: point(0.0, 10.0), 8: point(0.5, 10.5)}
    zero = cluster_centralised(banks, 0)
    assert edge_set(zero.mutual_edges) == {(0, 2), (1, 3)}
    assert np.array_equal(zero.kept_edges, zero.mutual_edges)
    assert zero.labels[4].tolist() == [0, 1] and zero.labels[8].tolist() == [0, 1]
    for alpha in (1, 2, 3):
        res, _ = cluster_distributed(banks, alpha)
        assert res.edges_kept == 0 and res.clusters == 4
        assert res.labels[8].tolist() == [2, 3]


def test_ties_go_to_the_lowest_label():
    # camera 2 holds two identical memories: camera 1's memory must pick label 0
    banks = {1: point(0.0), 2: point(1.0, 1.0, 9.0)}
    res, _ = cluster_distributed(banks, 0)
    assert edge_set(res.mutual_edges) == {(0, 1)}
    assert res.labels[2].tolist() == [0, 2, 3]


def test_chain_floods_into_one_cluster():
    # 1-D points whose mutual top-1 graph is the path 4-2-0-5-3-1 (gids)
    banks = {1: point(23, 29), 2: point(19, 28), 3: point(20, 24)}
    ref = cluster_centralised(banks, 0)
    assert edge_set(ref.kept_edges) == {(0, 2), (0, 5), (1, 3), (2, 4), (3, 5)}
    assert ref.clusters == 1 and ref.cluster_of.tolist() == [0] * 6
    dist, rounds = cluster_distributed(banks, 0)
    assert_same(ref, dist)
    assert sum(r.name.startswith("flood") for r in rounds) >= 2
    assert cluster_distributed(banks, 1)[0].clusters == 6   # a path has no triangles


def flood_only(edges: list[tuple[int, int]], sizes: dict[int, int], reach: str) -> tuple:
    """Run only the triangle (alpha 0: it keeps every edge and gives the first labels) and
    the flood rounds on a hand-made graph: (labels, flood rounds)."""
    ids = GlobalIds.from_sizes(sizes)
    step1 = Pairs(np.array([min(e) for e in edges], np.int64),
                  np.array([max(e) for e in edges], np.int64))
    replies = {c: node_triangle(c, p, 0, ids) for c, p in route_triangle(step1, ids).items()}
    kept, labels = check_triangle_replies(replies, step1, ids)

    def flood_round(labels: np.ndarray) -> np.ndarray:
        payloads = route_flood(labels, kept, ids, reach)
        return check_flood_replies({c: node_flood(c, p, ids) for c, p in payloads.items()},
                                   labels, ids)

    for rounds in itertools.count(1):
        labels = flood_round(labels)
        if flood_settled(labels, kept):
            # the server's shortcut is exact: one more round would change nothing
            assert np.array_equal(flood_round(labels), labels)
            return labels.tolist(), rounds


def test_flooding_rounds_on_a_path_one_memory_per_camera():
    path = [(k, k + 1) for k in range(7)]                   # 8 memories, 8 cameras, diameter 7
    sizes = {c: 1 for c in range(1, 9)}
    labels, hop_rounds = flood_only(path, sizes, "edges")
    assert labels == [0] * 8
    assert hop_rounds == 6           # label 0 reaches 1 in the triangle round, 7 in 6 more
    labels, set_rounds = flood_only(path, sizes, "sets")
    assert labels == [0] * 8
    assert set_rounds == 2


def test_sets_reach_needs_rounds_in_the_log_of_the_component_not_its_diameter():
    rng = np.random.default_rng(5)
    order = rng.permutation(512)                            # a path through gids in random order
    path = [(int(a), int(b)) for a, b in itertools.pairwise(order)]
    sizes = {c: 64 for c in range(1, 9)}
    labels, set_rounds = flood_only(path, sizes, "sets")
    assert labels == [0] * 512
    assert set_rounds <= 2 * math.log2(512)
    _, hop_rounds = flood_only(path, sizes, "edges")
    where = int(np.flatnonzero(order == 0)[0])              # label 0 walks to both path ends
    assert hop_rounds == max(where, 511 - where) - 1


def test_flooding_keeps_separate_components_apart():
    for reach in ("edges", "sets"):
        labels, _ = flood_only([(0, 3), (3, 5), (1, 4)], {1: 3, 2: 2, 3: 1}, reach)
        assert labels == [0, 1, 2, 0, 1, 0]


# ---------------------------------------------------------------------------------------------
# balanced top-1 blocks, and the benchmark's 15-camera network


def block_stats(assignment: dict[int, np.ndarray], sizes: dict[int, int]) -> tuple:
    """(banks each runner receives, work of each runner: sum of N_a N_b over its pairs)."""
    banks = [len(set(p.ravel().tolist()) - {r}) for r, p in assignment.items()]
    work = [sum(sizes[a] * sizes[b] for a, b in p.tolist()) for p in assignment.values()]
    return banks, work


@pytest.mark.parametrize("cameras", range(2, 61))
def test_blocks_cover_every_camera_pair_once_with_sqrt_2m_banks_and_even_work(cameras):
    sizes = {c: 100 for c in range(1, cameras + 1)}
    ids = GlobalIds.from_sizes(sizes)
    assignment = assign_pairs(ids)
    decided = sorted(tuple(p) for pairs in assignment.values() for p in pairs.tolist())
    assert decided == list(itertools.combinations(range(1, cameras + 1), 2))  # once each
    assert all(r in pairs for r, pairs in assignment.items())  # a runner holds one bank
    banks, work = block_stats(assignment, sizes)
    assert max(banks) <= math.sqrt(2 * cameras) + 1.5               # proved in assign_pairs
    assert sum(banks) <= cameras * (cameras - 1) // 2               # never more than before
    mean = sum(work) / cameras                                      # over all M nodes
    # measured for M = 2..60: max/mean 2.0 (M = 2, 4, 5), <= 1.75 from M = 6 (the old
    # routing: 2.0, camera 1 judging M - 1 pairs); max/min over the nodes given pairs 4.0
    # (M = 6), 3.0 (M = 4), <= 1.8 from M = 7
    assert max(work) <= (2.0 if cameras < 6 else 1.75) * mean
    assert max(work) <= (4.0 if cameras < 7 else 1.8) * min(work)


def test_blocks_skip_empty_cameras_and_balance_unequal_banks():
    rng = np.random.default_rng(0)
    for cameras in (15, 30, 60):
        sizes = {c: int(rng.integers(50, 700)) for c in range(1, cameras + 1)}
        sizes[3] = 0
        assignment = assign_pairs(GlobalIds.from_sizes(sizes))
        decided = sorted(tuple(p) for pairs in assignment.values() for p in pairs.tolist())
        with_memories = [c for c in sorted(sizes) if sizes[c]]
        assert decided == list(itertools.combinations(with_memories, 2))
        _, work = block_stats(assignment, sizes)
        everything = sum(sizes[a] * sizes[b] for a, b in decided)
        # measured over 20 draws of sizes 50..700: max/mean <= 1.75 from M = 8 (2.55 below)
        assert max(work) <= 1.75 * everything / len(with_memories)
    assert assign_pairs(GlobalIds.from_sizes({4: 3, 5: 0})) == {}


@pytest.fixture(scope="module")
def network15() -> dict[int, np.ndarray]:
    """The benchmark's 15-camera network (1 + Poisson(2) cameras per identity), d = 128."""
    return make_banks(cameras=15, dim=128)[0]


@pytest.mark.parametrize("reach", ["edges", "sets"])
def test_fifteen_cameras_equal_the_reference_and_rounds_stay_few(network15, reach):
    ref = cluster_centralised(network15, 1)
    dist, rounds = cluster_distributed(network15, 1, reach=reach)
    assert_same(ref, dist)
    assert ref.clusters < ref.ids.total and ref.edges_kept < ref.edges_mutual
    top1 = rounds[0]
    banks = sum(b.nbytes for b in network15.values())
    # every bank about sqrt(2M) times instead of (M - 1) / 2 times (4.0 and 7.0 for M = 15)
    assert top1.name == "top1" and top1.bytes_sent < 4.2 * banks
    assert sum(r.name.startswith("flood") for r in rounds) <= (6 if reach == "sets" else 40)


def test_top1_on_the_server_gives_the_same_clusters_without_a_top1_round(network15):
    ref, rounds = cluster_distributed(network15, 1, reach="sets")
    served, served_rounds = cluster_distributed(network15, 1, reach="sets", top1_on="server")
    assert_same(ref, served)
    assert [r.name for r in served_rounds] == [r.name for r in rounds[1:]]


# ---------------------------------------------------------------------------------------------
# a camera lost after the memory round


def losing(cameras: dict[str, set[int]], send):
    """The in-process transport, with ``cameras[round]`` lost in that round (no reply)."""

    def lossy(name, ids, payloads):
        gone = cameras.get(name, set()) & set(payloads)
        replies, _ = send(name, ids, {c: p for c, p in payloads.items() if c not in gone})
        return replies, {c: "lost (test)" for c in gone}

    return lossy


def clusters_without(banks, lost: dict[str, set[int]], alpha: int = 1, reach: str = "sets"):
    """(reference on the cameras left, the protocol losing ``lost``, its rounds' names)."""
    _, feats = validate_banks(banks)
    stats: list[RoundStats] = []
    out = run_protocol(feats, alpha, losing(lost, in_process(feats, alpha, None, stats)),
                       reach=reach)
    ref = cluster_centralised({c: b for c, b in banks.items() if c not in out.missing}, alpha)
    return ref, out, [r.name for r in stats]


@pytest.mark.parametrize(("lost", "then"), [
    ({"top1": {2}}, ["top1", "top1", "triangle"]),            # its pairs dealt again
    ({"top1": {1, 9}}, ["top1", "top1", "triangle"]),
    ({"triangle": {5}}, ["top1", "triangle", "triangle"]),    # the top-1 edges are kept
    ({"flood-1": {15}}, ["top1", "triangle", "flood-1", "triangle"]),
    ({"flood-2": {7}, "triangle": {3}}, ["top1", "triangle", "triangle", "flood-1", "flood-2",
                                          "triangle"]),
])
def test_a_lost_camera_gives_exactly_the_clusters_of_the_others(network15, lost, then):
    ref, out, names = clusters_without(network15, lost)
    gone = set().union(*lost.values())
    assert sorted(out.missing) == sorted(gone)
    assert all(out.missing[c]["round"] == r for r, cams in lost.items() for c in cams)
    assert out.ids.cameras.tolist() == ref.ids.cameras.tolist()
    assert np.array_equal(out.cluster_of, ref.cluster_of)
    step1 = np.stack([out.step1.owner, out.step1.member], axis=1)
    assert np.array_equal(step1, ref.mutual_edges)
    assert names[:len(then)] == then and names.count("top1") == then.count("top1")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(banks=integer_banks(), alpha=st.integers(0, 2), reach=st.sampled_from(["edges", "sets"]),
       data=st.data())
def test_losing_cameras_in_any_round_equals_the_reference_on_the_others(banks, alpha, reach,
                                                                         data):
    cameras = st.sets(st.sampled_from(sorted(banks)), min_size=1, max_size=2)
    lost = data.draw(st.dictionaries(st.sampled_from(["top1", "triangle", "flood-1",
                                                      "flood-2"]), cameras, max_size=2))
    try:
        ref, out, _ = clusters_without(banks, lost, alpha, reach)
    except AllCamerasLost as err:
        assert set(err.missing) == set(banks)
        return
    assert set(out.missing) <= set().union(*lost.values(), set())
    assert_same(ref, ClusterResult.build(out.ids, out.cluster_of, np.stack(
        [out.step1.owner, out.step1.member], axis=1), np.stack([out.kept.owner, out.kept.member],
                                                               axis=1)))


def test_the_triangle_is_judged_again_because_a_lost_camera_held_the_common_neighbour():
    banks = {1: point(0.0), 2: point(1.0), 3: point(2.0)}   # a triangle: alpha 1 keeps it all
    assert cluster_centralised(banks, 1).clusters == 1
    ref, out, names = clusters_without(banks, {"flood-1": {3}})
    # without camera 3, memories 1:0 and 2:0 share no neighbour: their edge goes
    assert ref.clusters == 2 and out.cluster_of.tolist() == [0, 1]
    assert names == ["top1", "triangle", "flood-1", "triangle", "flood-1"]


def test_losing_every_camera_is_an_error_naming_each():
    banks = gaussian_banks(0, cameras=3)
    with pytest.raises(ProtocolError, match=r"camera 1: round triangle.*camera 3: round "
                                            r"flood-1"):
        clusters_without(banks, {"triangle": {1, 2}, "flood-1": {3}})


def test_dropping_a_camera_renumbers_the_edges_of_the_others():
    ids = GlobalIds.from_sizes({1: 2, 2: 3, 3: 1, 4: 2})
    # gids: camera 1: 0, 1; camera 2: 2, 3, 4; camera 3: 5; camera 4: 6, 7
    edges = Pairs(np.array([0, 1, 2, 4, 5]), np.array([5, 3, 6, 7, 7]))
    left, kept = drop_cameras(ids, edges, {3})
    assert left.cameras.tolist() == [1, 2, 4] and left.total == 7
    assert list(zip(kept.owner.tolist(), kept.member.tolist(), strict=True)) == [
        (1, 3), (2, 5), (4, 6)]


# ---------------------------------------------------------------------------------------------
# node functions and routing, as the Flower layer calls them


def roundtrip(obj):
    """What a Flower ArrayRecord does to a payload: flatten to arrays, copy, rebuild."""
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, Pairs):
        return Pairs.from_arrays({k: v.copy() for k, v in obj.to_arrays("p").items()}, "p")
    return type(obj).from_arrays({k: np.array(v, copy=True) for k, v in obj.to_arrays().items()})


def test_protocol_runs_on_flattened_arrays_only():
    banks = gaussian_banks(3)
    _, feats = validate_banks(banks)

    def send(name, ids, payloads):
        ids = GlobalIds.from_arrays({k: v.copy() for k, v in ids.to_arrays().items()})
        replies = {}
        for cam, payload in payloads.items():
            payload = roundtrip(payload)
            if name == "top1":
                reply = node_top1(cam, feats[cam], payload, ids)
            elif name == "triangle":
                reply = node_triangle(cam, payload, 1, ids)
            else:
                reply = node_flood(cam, payload, ids)
            replies[cam] = roundtrip(reply)
        return replies, {}

    for reach in ("edges", "sets"):
        out = run_protocol(banks, 1, send, reach=reach)
        assert np.array_equal(out.cluster_of, cluster_centralised(banks, 1).cluster_of)


def step1_edges(feats: dict[int, np.ndarray], ids: GlobalIds) -> tuple[Pairs, dict, dict]:
    """The top-1 round in-process: (checked edges, replies, assignment)."""
    assignment = assign_pairs(ids)
    replies = {c: node_top1(c, feats[c], p, ids)
               for c, p in route_top1(feats, assignment, ids).items()}
    return check_top1_replies(replies, assignment, ids), replies, assignment


def test_a_top1_node_decides_its_pairs_only_and_takes_rows_in_any_order():
    banks = gaussian_banks(1, cameras=7)
    ids, feats = validate_banks(banks)
    assignment = assign_pairs(ids)
    payloads = route_top1(feats, assignment, ids)
    for runner, pairs in assignment.items():
        p = payloads[runner]
        needed = set(pairs.ravel().tolist()) - {runner}
        assert set(p.cameras.tolist()) == needed and runner not in p.cameras
        edges = node_top1(runner, feats[runner], p, ids)
        decided = set(zip(ids.camera_of(edges.owner).tolist(),
                          ids.camera_of(edges.member).tolist(), strict=True))
        assert decided <= set(map(tuple, pairs.tolist()))
        # rows shuffled, and the bank of a camera it does not need: the same edges
        extra = next(c for c in ids.cameras.tolist() if c not in needed | {runner})
        feats_x = np.concatenate([p.features, feats[extra]])
        cams_x = np.concatenate([p.cameras, np.full(ids.size(extra), extra)])
        labels_x = np.concatenate([p.labels, np.arange(ids.size(extra))])
        perm = np.random.default_rng(runner).permutation(len(feats_x))
        shuffled = Top1Payload(feats_x[perm], cams_x[perm], labels_x[perm], p.pairs)
        again = node_top1(runner, feats[runner], shuffled, ids)
        assert np.array_equal(edges.owner, again.owner)
        assert np.array_equal(edges.member, again.member)


def test_triangle_routing_gives_each_node_its_edges_and_their_neighbour_lists():
    banks = gaussian_banks(2, cameras=5)
    ids, feats = validate_banks(banks)
    step1, _, _ = step1_edges(feats, ids)
    both = {(int(u), int(v)) for u, v in zip(step1.owner, step1.member, strict=True)}
    both |= {(v, u) for u, v in both}
    for cam, payload in route_triangle(step1, ids).items():
        lo, hi = ids.range(cam)
        mine = {(u, v) for u, v in both if lo <= u < hi}
        got = set(zip(payload.edges.owner.tolist(), payload.edges.member.tolist(), strict=True))
        assert got == mine
        adjacent = {v for _, v in mine}
        want = {(u, v) for u, v in both if u in adjacent}
        got = set(zip(payload.neighbours.owner.tolist(), payload.neighbours.member.tolist(),
                      strict=True))
        assert got == want


def test_flood_routing_relays_neighbour_labels_and_for_sets_what_the_set_sees():
    # path 0 - 1 - 2 - 3 (one memory per camera), labels after the triangle round
    ids = GlobalIds.from_sizes({1: 1, 2: 1, 3: 1, 4: 1})
    kept = Pairs(np.array([0, 1, 1, 2, 2, 3]), np.array([1, 0, 2, 1, 3, 2]))
    labels = np.array([0, 0, 1, 2])
    edges = route_flood(labels, kept, ids, "edges")
    assert {c: p.relayed.member.tolist() for c, p in edges.items()} == {
        1: [0], 2: [0, 1], 3: [0, 2], 4: [1]}
    sets = route_flood(labels, kept, ids, "sets")
    # each a label's label (labels[labels] = 0, 0, 0, 1): memory 3 gets its neighbour 2's
    # (0) and its own (1); memory 1, the label of memories 1 and 2, gets their neighbours'
    assert {c: p.relayed.member.tolist() for c, p in sets.items()} == {
        1: [0], 2: [0, 1], 3: [0, 1], 4: [0, 1]}
    assert all(p.labels.tolist() == [labels[k]] for k, p in enumerate(sets.values()))
    assert [node_flood(c, p, ids).tolist() for c, p in sets.items()] == [[0]] * 4


def test_global_ids_encoding():
    ids = GlobalIds.from_sizes({9: 2, 2: 3, 5: 0, 11: 1})
    assert ids.cameras.tolist() == [2, 5, 9, 11] and ids.total == 6
    assert ids.range(2) == (0, 3) and ids.range(5) == (3, 3) and ids.range(9) == (3, 5)
    gids = np.arange(6)
    assert ids.camera_of(gids).tolist() == [2, 2, 2, 9, 9, 11]
    assert ids.label_of(gids).tolist() == [0, 1, 2, 0, 1, 0]
    assert ids.gids(9, [1]).tolist() == [4] and ids.name(4) == "9:1"
    back = GlobalIds.from_arrays(ids.to_arrays())
    assert back.cameras.tolist() == ids.cameras.tolist() and back.total == 6
    with pytest.raises(ValueError, match="unknown camera"):
        ids.range(3)
    with pytest.raises(ValueError, match="ascending"):
        GlobalIds(np.array([3, 1]), np.array([1, 1]))


def test_class_index_is_dense():
    res = cluster_centralised({1: point(0, 50), 2: point(0.5, 200)}, 0)
    assert res.labels[1].tolist() == [0, 1] and res.labels[2].tolist() == [0, 3]
    dense = res.class_index()
    assert dense[1].tolist() == [0, 1] and dense[2].tolist() == [0, 2]
    assert res.summary() == {"memories": 4, "edges_mutual": 1, "edges_kept": 1, "clusters": 3}


# ---------------------------------------------------------------------------------------------
# bad input and malformed replies


@pytest.mark.parametrize(("banks", "match"), [
    ({}, "non-empty"),
    ({1: np.ones(3, np.float32)}, "2-D"),
    ({1: np.ones((2, 3)), 2: np.ones((2, 4))}, "d=4, expected d=3"),
    ({1: np.array([[0.0, np.nan]])}, "non-finite"),
    ({1: np.array([[np.inf, 0.0]])}, "non-finite"),
    ({1: np.array([[1e300, 0.0]])}, "non-finite"),
    ({1: np.ones((1, 0))}, "d >= 1"),
    ({"a": np.ones((1, 2))}, "camera ids must be ints"),
    ({1: np.array([["a"]])}, "real numbers"),
])
def test_bad_banks_are_rejected(banks, match):
    for fn in (cluster_centralised, cluster_distributed):
        with pytest.raises(ValueError, match=match):
            fn(banks, 1)


@pytest.mark.parametrize("alpha", [-1, 1.5, True, "1"])
def test_bad_alpha_is_rejected(alpha):
    for fn in (cluster_centralised, cluster_distributed):
        with pytest.raises(ValueError, match="alpha"):
            fn({1: np.ones((1, 2))}, alpha)


@pytest.fixture
def four_cams():
    banks = gaussian_banks(4, cameras=4)
    ids, feats = validate_banks(banks)
    _, replies, assignment = step1_edges(feats, ids)
    return ids, feats, replies, assignment


def test_malformed_top1_replies_name_the_camera(four_cams):
    ids, _, replies, assignment = four_cams
    runner = next(r for r in sorted(assignment) if len(replies[r]))
    r1 = replies[runner]
    name = f"camera {runner}"
    cases = [
        (Pairs(r1.owner, r1.member[:-1]), rf"{name}.*equal length"),
        (Pairs(r1.owner + 10_000, r1.member), rf"{name}.*out of range"),
        (Pairs(r1.owner.astype(float), r1.member), rf"{name}.*integers"),
        (Pairs(r1.member, r1.owner), rf"{name}.*not a pair it was given"),
    ]
    for bad, match in cases:
        with pytest.raises(ProtocolError, match=match):
            check_top1_replies({**replies, runner: bad}, assignment, ids)
    with pytest.raises(ProtocolError, match=rf"missing \[{runner}\]"):
        check_top1_replies({c: r for c, r in replies.items() if c != runner}, assignment, ids)
    given = set(map(tuple, assignment[runner].tolist()))
    a, b = next(p for p in itertools.combinations(ids.cameras.tolist(), 2) if p not in given)
    foreign = Pairs(np.array([ids.range(a)[0]]), np.array([ids.range(b)[0]]))
    with pytest.raises(ProtocolError, match=rf"{name}: an edge from camera {a} to camera {b}"):
        check_top1_replies({**replies, runner: foreign}, assignment, ids)
    twice = Pairs(np.r_[r1.owner[:1], r1.owner[:1]], np.r_[r1.member[:1], r1.member[:1] + 1])
    with pytest.raises(ProtocolError, match="two neighbours"):
        check_top1_replies({**replies, runner: twice}, assignment, ids)


def test_triangle_disagreement_names_both_nodes(four_cams):
    ids, _, replies, assignment = four_cams
    step1 = check_top1_replies(replies, assignment, ids)
    tri = {c: node_triangle(c, p, 0, ids) for c, p in route_triangle(step1, ids).items()}
    first = tri[1].kept
    cam_of_partner = int(ids.camera_of(first.member[0]))
    dropped = TriangleReply(Pairs(first.owner[1:], first.member[1:]), tri[1].labels)
    with pytest.raises(ProtocolError, match=rf"cameras (1 and {cam_of_partner}|"
                                            rf"{cam_of_partner} and 1) disagree"):
        check_triangle_replies({**tri, 1: dropped}, step1, ids)
    linked = set(zip(step1.owner.tolist(), step1.member.tolist(), strict=True))
    u = ids.range(1)[0]
    v = next(v for v in ids.gids(3).tolist() if (u, v) not in linked)
    invented = TriangleReply(Pairs(np.r_[first.owner, u], np.r_[first.member, v]),
                             tri[1].labels)
    with pytest.raises(ProtocolError, match=r"camera 1.*not a step-1 edge"):
        check_triangle_replies({**tri, 1: invented}, step1, ids)
    too_big = TriangleReply(first, tri[1].labels + ids.total)
    with pytest.raises(ProtocolError, match=r"triangle reply of camera 1.*\[0, own gid\]"):
        check_triangle_replies({**tri, 1: too_big}, step1, ids)


def test_malformed_flood_replies_and_payloads(four_cams):
    ids, _, _, _ = four_cams
    labels = np.arange(ids.total)
    good = {c: ids.gids(c) for c in ids.cameras.tolist()}
    assert np.array_equal(check_flood_replies(good, labels, ids), labels)
    with pytest.raises(ProtocolError, match="flood reply of camera 2: labels"):
        check_flood_replies({**good, 2: good[2][:-1]}, labels, ids)
    with pytest.raises(ProtocolError, match="flood reply of camera 2: labels"):
        check_flood_replies({**good, 2: good[2].astype(float)}, labels, ids)
    lower = labels.copy()
    lower[ids.range(2)[0]] = 0                              # what camera 2 was sent
    with pytest.raises(ProtocolError, match="flood reply of camera 2: a label grew"):
        check_flood_replies(good, lower, ids)
    with pytest.raises(ProtocolError, match=r"flood: .*missing \[3\]"):
        check_flood_replies({c: r for c, r in good.items() if c != 3}, labels, ids)
    with pytest.raises(ProtocolError, match="flood payload of camera 1 \\(relayed\\)"):
        node_flood(1, FloodPayload(ids.gids(1), Pairs(np.array([0]), np.array([99_999]))), ids)
    with pytest.raises(ProtocolError, match="flood payload of camera 1: a label"):
        node_flood(1, FloodPayload(ids.gids(1) + 1, Pairs.empty()), ids)


def test_bad_node_payloads_are_refused(four_cams):
    ids, feats, _, assignment = four_cams
    runner, pairs = next(iter(assignment.items()))
    p = route_top1(feats, assignment, ids)[runner]
    cut = Top1Payload(p.features[:-1], p.cameras[:-1], p.labels[:-1], p.pairs)
    with pytest.raises(ProtocolError, match="whole bank"):
        node_top1(runner, feats[runner], cut, ids)
    for bad in (pairs[:, ::-1], np.r_[pairs, pairs[:1]], np.array([[runner, 99]])):
        with pytest.raises(ProtocolError, match="pairs must be distinct"):
            node_top1(runner, feats[runner], Top1Payload(p.features, p.cameras, p.labels,
                                                         bad), ids)
    with pytest.raises(ProtocolError, match="own bank"):
        node_top1(runner, feats[runner][:-1], p, ids)
    bad = TrianglePayload(Pairs(np.array([ids.total - 1]), np.array([0])), Pairs.empty())
    with pytest.raises(ProtocolError, match="triangle payload of camera 1"):
        node_triangle(1, bad, 1, ids)
    assert isinstance(Top1Payload.from_arrays(p.to_arrays()), Top1Payload)


# ---------------------------------------------------------------------------------------------
# diagnostics


def test_scores_on_a_hand_example():
    s = cluster_scores(np.array([0, 0, 0, 1]), np.array([5, 5, 7, 7]))
    assert (s["clusters"], s["true_ids"]) == (2, 2)
    assert (s["pairs_predicted"], s["pairs_true"], s["pairs_correct"]) == (3, 2, 1)
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 2)
    assert s["fscore"] == pytest.approx(0.4)
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    h_pred = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert s["nmi"] == pytest.approx(mi / ((h_pred + math.log(2)) / 2))
    assert s["nmi"] == pytest.approx(0.343711, abs=1e-6)


def test_scores_edge_cases():
    perfect = cluster_scores(np.array([3, 3, 9, 1]), np.array([0, 0, 1, 2]))
    assert perfect["fscore"] == 1.0 and perfect["nmi"] == pytest.approx(1.0)
    singletons = cluster_scores(np.arange(4), np.array([0, 0, 1, 1]))
    assert singletons["precision"] == 1.0 and singletons["recall"] == 0.0
    assert singletons["fscore"] == 0.0
    assert cluster_scores(np.zeros(3), np.zeros(3))["nmi"] == 1.0
    assert cluster_scores(np.zeros(4), np.arange(4))["nmi"] == 0.0
    with pytest.raises(ValueError):
        cluster_scores(np.zeros(3), np.zeros(4))


def test_scores_match_counting_every_pair():
    rng = np.random.default_rng(7)
    pred, truth = rng.integers(0, 6, 40), rng.integers(0, 8, 40)
    s = cluster_scores(pred, truth)
    pairs = list(itertools.combinations(range(40), 2))
    same_p = {p for p in pairs if pred[p[0]] == pred[p[1]]}
    same_t = {p for p in pairs if truth[p[0]] == truth[p[1]]}
    assert s["precision"] == pytest.approx(len(same_p & same_t) / len(same_p))
    assert s["recall"] == pytest.approx(len(same_p & same_t) / len(same_t))
