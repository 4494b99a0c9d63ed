"""Distributed clustering (paper §3.3): protocol == centralised reference == brute force.

The brute force below is a third, independent implementation in plain Python with exact integer
arithmetic, so on integer-valued features it pins down the semantics (ties to the lowest label,
simultaneous triangle filter, min-gid labels) for both numpy implementations.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dmnreid.memory.diagnostics import cluster_scores
from dmnreid.memory.protocol import (
    FloodPayload,
    FloodReply,
    Pairs,
    ProtocolError,
    Top1Payload,
    TrianglePayload,
    check_flood_replies,
    check_top1_replies,
    check_triangle_replies,
    cluster_distributed,
    flood_settled,
    labels_from_flood,
    node_flood,
    node_top1,
    node_triangle,
    route_flood,
    route_top1,
    route_triangle,
)
from dmnreid.memory.reference import GlobalIds, cluster_centralised, validate_banks

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
    for reach in ("edges", "sets"):
        dist, rounds = cluster_distributed(banks, alpha, reach=reach)
        assert_same(ref, dist)
        assert [r.name for r in rounds[:2]] == ["top1", "triangle"]
        assert all(r.messages == len(banks) for r in rounds)


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
    for reach in ("edges", "sets"):
        assert_same(ref, cluster_distributed(banks, alpha, reach=reach)[0])


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
    assert len(rounds) == 3                                # top1, triangle, one quiet flood


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
    """Run only the flood rounds on a hand-made surviving graph: (labels, rounds)."""
    ids = GlobalIds.from_sizes(sizes)
    src = np.array([u for u, v in edges] + [v for u, v in edges], np.int64)
    dst = np.array([v for u, v in edges] + [u for u, v in edges], np.int64)
    order = np.argsort(src, kind="stable")
    kept = Pairs(src[order], dst[order])
    sets = {}
    for cam in ids.cameras.tolist():
        lo, hi = ids.range(cam)
        mine = (kept.owner >= lo) & (kept.owner < hi)
        sets[cam] = Pairs(kept.owner[mine], kept.member[mine])
    for rounds in itertools.count(1):
        replies = {c: node_flood(c, p, ids)
                   for c, p in route_flood(sets, kept, ids, reach).items()}
        sets = {c: r.sets for c, r in replies.items()}
        changed = check_flood_replies(replies, ids)
        payloads = route_flood(sets, kept, ids, reach)
        if not changed or flood_settled(payloads, ids):
            # the server's shortcut is exact: one more round would change nothing
            again = {c: node_flood(c, p, ids) for c, p in payloads.items()}
            assert not check_flood_replies(again, ids)
            assert labels_from_flood(again, ids).tolist() == \
                labels_from_flood(replies, ids).tolist()
            return labels_from_flood(replies, ids).tolist(), rounds


def test_flooding_rounds_on_a_path_one_memory_per_camera():
    path = [(k, k + 1) for k in range(7)]                   # 8 memories, 8 cameras, diameter 7
    sizes = {c: 1 for c in range(1, 9)}
    labels, hop_rounds = flood_only(path, sizes, "edges")
    assert labels == [0] * 8
    assert hop_rounds == 6           # radius 1 -> 7, no quiet round: the server sees it settled
    labels, doubling_rounds = flood_only(path, sizes, "sets")
    assert labels == [0] * 8
    assert doubling_rounds == 3                             # radius 1, 2, 4, 8


def test_flooding_keeps_separate_components_apart():
    labels, _ = flood_only([(0, 3), (3, 5), (1, 4)], {1: 3, 2: 2, 3: 1}, "sets")
    assert labels == [0, 1, 2, 0, 1, 0]


# ---------------------------------------------------------------------------------------------
# node functions and routing, as the Flower layer will call them


def roundtrip(obj):
    """What a Flower ArrayRecord does to a payload: flatten to arrays, copy, rebuild."""
    arrays = {k: np.array(v, copy=True) for k, v in obj.to_arrays().items()}
    return type(obj).from_arrays(arrays)


def test_protocol_runs_on_flattened_arrays_only():
    banks = gaussian_banks(3)
    ids, feats = validate_banks(banks)
    ids = GlobalIds.from_arrays({k: v.copy() for k, v in ids.to_arrays().items()})
    top1 = {}
    for cam, payload in route_top1(feats, ids).items():
        p = roundtrip(payload)
        reply = node_top1(cam, feats[cam], p.features, p.cameras, p.labels, ids)
        top1[cam] = Pairs.from_arrays({k: v.copy() for k, v in reply.to_arrays("e").items()},
                                      "e")
    step1 = check_top1_replies(top1, ids)
    tri = {}
    for cam, payload in route_triangle(step1, ids).items():
        reply = node_triangle(cam, roundtrip(payload), 1, ids)
        tri[cam] = Pairs(reply.owner.copy(), reply.member.copy())
    kept = check_triangle_replies(tri, step1, ids)
    sets: dict[int, Pairs] = tri
    while True:
        replies = {c: roundtrip(node_flood(c, roundtrip(p), ids))
                   for c, p in route_flood(sets, kept, ids).items()}
        sets = {c: r.sets for c, r in replies.items()}
        if not check_flood_replies(replies, ids):
            break
    ref = cluster_centralised(banks, 1)
    assert np.array_equal(labels_from_flood(replies, ids), ref.cluster_of)


def test_top1_decides_only_higher_cameras_and_accepts_all_other_banks():
    banks = gaussian_banks(1, cameras=4)
    ids, feats = validate_banks(banks)
    payloads = route_top1(feats, ids)
    assert payloads[4].features.shape[0] == 0
    assert set(payloads[2].cameras.tolist()) == {3, 4}
    # sending every other bank, shuffled, gives the same edges
    rng = np.random.default_rng(0)
    others = [c for c in feats if c != 2]
    f = np.concatenate([feats[c] for c in others])
    cams = np.concatenate([np.full(len(feats[c]), c) for c in others])
    labs = np.concatenate([np.arange(len(feats[c])) for c in others])
    perm = rng.permutation(len(f))
    p = payloads[2]
    a = node_top1(2, feats[2], p.features, p.cameras, p.labels, ids)
    b = node_top1(2, feats[2], f[perm], cams[perm], labs[perm], ids)
    assert np.array_equal(a.owner, b.owner) and np.array_equal(a.member, b.member)
    assert np.all(ids.camera_of(a.member) > 2) and np.all(ids.camera_of(a.owner) == 2)


def test_triangle_routing_gives_each_node_its_edges_and_their_neighbour_lists():
    banks = gaussian_banks(2, cameras=5)
    ids, feats = validate_banks(banks)
    replies = {c: node_top1(c, feats[c], p.features, p.cameras, p.labels, ids)
               for c, p in route_top1(feats, ids).items()}
    step1 = check_top1_replies(replies, ids)
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
def three_cams():
    banks = gaussian_banks(4, cameras=3)
    ids, feats = validate_banks(banks)
    replies = {c: node_top1(c, feats[c], p.features, p.cameras, p.labels, ids)
               for c, p in route_top1(feats, ids).items()}
    return ids, feats, replies


def test_malformed_top1_replies_name_the_camera(three_cams):
    ids, _, replies = three_cams
    r1 = replies[1]
    cases = [
        (Pairs(r1.owner, r1.member[:-1]), r"camera 1.*equal length"),
        (Pairs(r1.owner + 10_000, r1.member), r"camera 1.*out of range"),
        (Pairs(r1.owner.astype(float), r1.member), r"camera 1.*integers"),
        (Pairs(r1.member, r1.owner), r"camera 1.*outside camera 1"),
    ]
    for bad, match in cases:
        with pytest.raises(ProtocolError, match=match):
            check_top1_replies({**replies, 1: bad}, ids)
    with pytest.raises(ProtocolError, match=r"missing \[3\]"):
        check_top1_replies({1: replies[1], 2: replies[2]}, ids)
    lo2 = ids.range(2)[0]
    backwards = Pairs(np.array([lo2]), np.array([0]))
    with pytest.raises(ProtocolError, match="cameras > 2"):
        check_top1_replies({**replies, 2: backwards}, ids)
    twice = Pairs(np.r_[r1.owner[:1], r1.owner[:1]], np.r_[r1.member[:1], r1.member[:1] + 1])
    with pytest.raises(ProtocolError, match="two neighbours"):
        check_top1_replies({**replies, 1: twice}, ids)


def test_triangle_disagreement_names_both_nodes(three_cams):
    ids, _, replies = three_cams
    step1 = check_top1_replies(replies, ids)
    tri = {c: node_triangle(c, p, 0, ids) for c, p in route_triangle(step1, ids).items()}
    cam_of_partner = int(ids.camera_of(tri[1].member[0]))
    dropped = Pairs(tri[1].owner[1:], tri[1].member[1:])
    with pytest.raises(ProtocolError, match=rf"cameras (1 and {cam_of_partner}|"
                                            rf"{cam_of_partner} and 1) disagree"):
        check_triangle_replies({**tri, 1: dropped}, step1, ids)
    linked = set(zip(step1.owner.tolist(), step1.member.tolist(), strict=True))
    u = ids.range(1)[0]
    v = next(v for v in ids.gids(3).tolist() if (u, v) not in linked)
    invented = Pairs(np.r_[tri[1].owner, u], np.r_[tri[1].member, v])
    with pytest.raises(ProtocolError, match=r"camera 1.*not a step-1 edge"):
        check_triangle_replies({**tri, 1: invented}, step1, ids)


def test_malformed_flood_replies_and_payloads(three_cams):
    ids, _, _ = three_cams
    good = {c: FloodReply(Pairs(ids.gids(c), ids.gids(c)), ids.gids(c), False)
            for c in ids.cameras.tolist()}
    assert check_flood_replies(good, ids) is False
    bad_labels = FloodReply(good[2].sets, good[2].labels[:-1], False)
    with pytest.raises(ProtocolError, match="flood reply of camera 2: labels"):
        check_flood_replies({**good, 2: bad_labels}, ids)
    foreign = FloodReply(Pairs(ids.gids(3), ids.gids(3)), good[2].labels, True)
    with pytest.raises(ProtocolError, match=r"camera 2.*outside camera 2"):
        check_flood_replies({**good, 2: foreign}, ids)
    with pytest.raises(ProtocolError, match="changed"):
        FloodReply.from_arrays({**good[1].to_arrays(), "changed": np.zeros(2, np.int64)})
    with pytest.raises(ProtocolError, match="flood payload of camera 1"):
        node_flood(1, FloodPayload(Pairs.empty(), Pairs(np.array([0]), np.array([99_999])),
                                   Pairs.empty()), ids)


def test_bad_node_payloads_are_refused(three_cams):
    ids, feats, _ = three_cams
    p = route_top1(feats, ids)[1]
    with pytest.raises(ProtocolError, match="whole"):
        node_top1(1, feats[1], p.features[:-1], p.cameras[:-1], p.labels[:-1], ids)
    with pytest.raises(ProtocolError, match=r"cameras \[2, 3\]"):
        keep = p.cameras == 2
        node_top1(1, feats[1], p.features[keep], p.cameras[keep], p.labels[keep], ids)
    with pytest.raises(ProtocolError, match="own bank"):
        node_top1(1, feats[1][:-1], p.features, p.cameras, p.labels, ids)
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
