"""Re-ID evaluation against a plain per-query brute force and hand-computed examples."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnreid.reid.evaluate import (
    euclidean_distmat,
    evaluate_rank,
    pool_tracklet_features,
    summarise,
)


def reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """torchreid's Market-1501 loop, written plainly, with a stable sort for ties."""
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    all_cmc, all_ap = [], []
    for i in range(num_q):
        order = np.argsort(distmat[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        raw = (g_pids[order][keep] == q_pids[i]).astype(np.float64)
        if not raw.any():
            continue
        cmc = np.minimum(raw.cumsum(), 1.0)
        cmc = np.concatenate([cmc, np.ones(max(0, max_rank - len(cmc)))])[:max_rank]
        all_cmc.append(cmc)
        precision = raw.cumsum() / np.arange(1, len(raw) + 1)
        all_ap.append((precision * raw).sum() / raw.sum())
    if not all_ap:
        raise ValueError("no valid query")
    return np.mean(all_cmc, axis=0), float(np.mean(all_ap))


def random_problem(rng, num_q, num_g, num_pids, num_cams, ties):
    """Pids in -1..num_pids-1 (so junk -1 and distractors 0 occur), integer distances for ties."""
    q_pids = rng.integers(-1, num_pids, num_q)
    g_pids = rng.integers(-1, num_pids, num_g)
    q_cams = rng.integers(0, num_cams, num_q)
    g_cams = rng.integers(0, num_cams, num_g)
    if ties:
        dist = rng.integers(0, 4, (num_q, num_g)).astype(np.float32)
    else:
        dist = rng.random((num_q, num_g))
    return dist, q_pids, g_pids, q_cams, g_cams


def assert_same(problem, max_rank=50, **kwargs):
    """Both raise, or both give the same CMC and mAP within 1e-6."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = reference(*problem, max_rank=max_rank)
        except ValueError:
            with pytest.raises(ValueError, match="no query has a valid match"):
                evaluate_rank(*problem, max_rank=max_rank, **kwargs)
            return
        cmc, mAP = evaluate_rank(*problem, max_rank=max_rank, **kwargs)
    assert cmc.shape == expected[0].shape
    np.testing.assert_allclose(cmc, expected[0], rtol=0, atol=1e-6)
    assert mAP == pytest.approx(expected[1], abs=1e-6)
    assert isinstance(mAP, float)


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_q=st.integers(1, 8),
    num_g=st.integers(1, 30),
    num_pids=st.integers(1, 6),
    num_cams=st.integers(1, 4),
    ties=st.booleans(),
    max_rank=st.integers(1, 40),
    query_block=st.integers(1, 8),
    workers=st.integers(1, 3),
)
def test_matches_brute_force(
    seed, num_q, num_g, num_pids, num_cams, ties, max_rank, query_block, workers
):
    rng = np.random.default_rng(seed)
    problem = random_problem(rng, num_q, num_g, num_pids, num_cams, ties)
    assert_same(problem, max_rank, query_block=query_block, workers=workers)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ties", [False, True])
def test_matches_brute_force_larger(seed, ties):
    rng = np.random.default_rng(seed)
    problem = random_problem(rng, 60, 700, 40, 6, ties)
    assert_same(problem, 50, query_block=7)
    assert_same(problem, 50)


def test_float32_distances_with_some_ties():
    """Mostly distinct float32 values with a few exact ties, so both paths run in one row."""
    rng = np.random.default_rng(3)
    dist, *ids = random_problem(rng, 40, 500, 30, 6, ties=False)
    dist = dist.astype(np.float32)
    dist[:, ::7] = dist[:, 1::7][:, : dist[:, ::7].shape[1]]
    assert_same((dist, *ids), 50, query_block=5)


HAND = (
    np.array(
        [
            [0.10, 0.20, 0.30, 0.40, 0.50, 0.05],
            [0.90, 0.10, 0.80, 0.20, 0.70, 0.60],
        ]
    ),
    np.array([1, 2]),
    np.array([1, 2, 1, 0, 1, -1]),
    np.array([0, 0]),
    np.array([0, 1, 1, 3, 2, 4]),
)


def test_hand_example():
    """Query 0: g0 is junk (same pid, same camera); valid order g5 g1 g2* g3 g4*, so its
    matches rank 3 and 5: AP = (1/3 + 2/5) / 2 = 11/30. Query 1: g1 ranks first, AP = 1."""
    cmc, mAP = evaluate_rank(*HAND, max_rank=5)
    np.testing.assert_allclose(cmc, [0.5, 0.5, 1.0, 1.0, 1.0])
    assert mAP == pytest.approx((11 / 30 + 1) / 2)


def test_ties_break_by_gallery_index():
    """All distances equal: the order is the gallery order, g0 non-match then g1 match."""
    dist = np.zeros((1, 3))
    cmc, mAP = evaluate_rank(dist, np.array([5]), np.array([7, 5, 5]), [0], [1, 1, 2], 3)
    np.testing.assert_allclose(cmc, [0, 1, 1])
    assert mAP == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_invalid_queries_are_skipped():
    """Query 1 has no same-pid item; query 2's only same-pid item shares its camera."""
    dist = np.array([[0.3, 0.1, 0.2], [0.1, 0.2, 0.3], [0.5, 0.4, 0.6]])
    q_pids, g_pids = np.array([1, 9, 2]), np.array([1, 3, 2])
    q_cams, g_cams = np.array([0, 0, 0]), np.array([1, 1, 0])
    cmc, mAP = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 3)
    np.testing.assert_allclose(cmc, [0, 0, 1])
    assert mAP == pytest.approx(1 / 3)


def test_no_valid_query_raises():
    dist = np.ones((2, 2))
    with pytest.raises(ValueError, match="no query has a valid match"):
        evaluate_rank(dist, np.array([1, 2]), np.array([1, 3]), [0, 0], [0, 0], 2)


def test_junk_and_distractors_are_plain_pids():
    """A junk (-1) query matches junk gallery items from other cameras, as in torchreid."""
    dist = np.array([[0.4, 0.1, 0.2, 0.3]])
    cmc, mAP = evaluate_rank(dist, np.array([-1]), np.array([-1, 0, -1, 0]), [0], [1, 1, 0, 2], 3)
    np.testing.assert_allclose(cmc, [0, 0, 1])
    assert mAP == pytest.approx(1 / 3)


def test_small_gallery_warns_and_saturates():
    dist = np.array([[0.2, 0.1]])
    with pytest.warns(UserWarning, match="only 2 items"):
        cmc, mAP = evaluate_rank(dist, np.array([1]), np.array([1, 2]), [0], [1, 1], 50)
    np.testing.assert_allclose(cmc, [0, 1])
    assert mAP == pytest.approx(0.5)


def test_valid_gallery_shorter_than_curve_counts_as_found():
    """Junk removal leaves 1 valid item for a 3-long curve: found at rank 1 and beyond."""
    dist = np.array([[0.1, 0.2, 0.3]])
    cmc, _ = evaluate_rank(dist, np.array([1]), np.array([1, 1, 1]), [0], [1, 0, 0], 3)
    np.testing.assert_allclose(cmc, [1, 1, 1])


def test_single_match():
    dist = np.array([[0.5, 0.1, 0.3, 0.2]])
    cmc, mAP = evaluate_rank(dist, np.array([4]), np.array([1, 2, 4, 3]), [0], [1, 1, 1, 1], 4)
    np.testing.assert_allclose(cmc, [0, 0, 1, 1])
    assert mAP == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("dist_shape", "num_q_ids", "num_g_ids"),
    [((2, 3), 3, 3), ((2, 3), 2, 2), ((6,), 2, 3)],
)
def test_shape_mismatch_raises(dist_shape, num_q_ids, num_g_ids):
    with pytest.raises(ValueError):
        evaluate_rank(
            np.zeros(dist_shape),
            np.zeros(num_q_ids),
            np.zeros(num_g_ids),
            np.zeros(num_q_ids),
            np.zeros(num_g_ids),
        )


def test_nan_distance_raises():
    dist = np.array([[0.1, np.nan]])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(dist, np.array([1]), np.array([1, 2]), [0], [1, 1], 2)


def test_torch_inputs():
    expected = evaluate_rank(*HAND, max_rank=5)
    cmc, mAP = evaluate_rank(*(torch.as_tensor(a) for a in HAND), max_rank=5)
    np.testing.assert_allclose(cmc, expected[0])
    assert mAP == pytest.approx(expected[1])


def test_summarise_in_percent():
    cmc = np.linspace(0.5, 1.0, 20)
    summary = summarise(cmc, 0.25)
    assert summary == pytest.approx(
        {"rank1": 50.0, "rank5": 100 * cmc[4], "rank10": 100 * cmc[9], "mAP": 25.0}
    )
    assert all(type(v) is float for v in summary.values())
    assert summarise(np.array([0.5, 1.0]), 0.5)["rank10"] == 100.0


def test_pool_tracklet_features():
    frames = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], dtype=np.float32)
    pooled = pool_tracklet_features(frames, np.array([1, 0, 1, 0]))
    np.testing.assert_allclose(pooled, [[5, 6], [3, 4]])
    assert pooled.dtype == np.float32
    pooled_t = pool_tracklet_features(torch.from_numpy(frames), np.array([0, 0, 0, 1]))
    np.testing.assert_allclose(pooled_t, [[3, 4], [7, 8]])


def test_pool_tracklet_features_rejects_empty_tracklet():
    with pytest.raises(ValueError, match="without frames"):
        pool_tracklet_features(np.ones((2, 3)), np.array([0, 2]))


def test_euclidean_distmat_is_squared_euclidean():
    rng = np.random.default_rng(0)
    qf, gf = rng.standard_normal((5, 8)), rng.standard_normal((7, 8))
    expected = ((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(euclidean_distmat(qf, gf), expected, atol=1e-9)
    np.testing.assert_allclose(
        euclidean_distmat(torch.from_numpy(qf).float(), gf.astype(np.float32)),
        expected,
        rtol=1e-4,
        atol=1e-4,
    )
