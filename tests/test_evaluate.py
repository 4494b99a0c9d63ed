"""Re-ID evaluation against a plain per-query brute force and hand-computed examples; the
blockwise path from features against the matrix path; the server's evaluator's memory."""

from __future__ import annotations

import gc
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnreid.data_prep.partition import EVALUATOR_DIR
from dmnreid.reid.evaluate import (
    distance_row,
    euclidean_distmat,
    evaluate_features,
    evaluate_rank,
    pool_tracklet_features,
    summarise,
    valid_queries,
)
from dmnreid.reid.evaluator import Evaluator, ItemFeatures, SplitFrames, embed_camera
from dmnreid.reid.images import decode
from dmnreid.reid.model import build_model
from dmnreid.reid.ranking import Ranking
from tests.tiny_data import tiny_partition


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


def market_problem(rng, ties, num_q=3368, num_g=15913, num_ids=751, num_cams=6):
    """Market-1501's test sizes by default (3,368 queries, 15,913 gallery items with 2,793
    distractors, pid 0, and 400 junk, pid -1; a few queries are distractors or junk too).
    Features: small integers when ``ties`` (squared distances are then exact integers: ties
    everywhere), or identity centroids plus noise, so true matches rank realistically."""
    q_pids = rng.integers(1, num_ids + 1, num_q)
    q_pids[:20], q_pids[20:40] = 0, -1
    distractors, junk = num_g * 2793 // 15913, num_g * 400 // 15913
    g_pids = np.concatenate([rng.integers(1, num_ids + 1, num_g - distractors - junk),
                             np.zeros(distractors, int), -np.ones(junk, int)])
    q_cams, g_cams = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)
    if ties:
        qf = rng.integers(0, 3, (num_q, 8)).astype(np.float32)
        gf = rng.integers(0, 3, (num_g, 8)).astype(np.float32)
    else:
        centroids = rng.standard_normal((num_ids + 2, 32))
        qf = (centroids[q_pids + 1] + 1.5 * rng.standard_normal((num_q, 32))).astype(np.float32)
        gf = (centroids[g_pids + 1] + 1.5 * rng.standard_normal((num_g, 32))).astype(np.float32)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("ties", [False, True])
def test_features_equal_the_matrix_path_exactly_at_market_size(ties):
    """block_bytes=1 forces one 256-query chunk per block: 14 blocks, the last of 40 queries."""
    qf, gf, *ids = market_problem(np.random.default_rng(int(ties)), ties)
    dist = euclidean_distmat(qf, gf)
    if ties:  # the distances really tie: integers 0..32, 15,913 of them per row
        assert set(np.unique(dist[0])) <= set(range(33))
    cmc, mAP = evaluate_rank(dist, *ids)
    assert 0 < mAP < 1 and 0 < cmc[0] < cmc[-1] < 1
    del dist
    for kwargs in ({"block_bytes": 1, "workers": 3}, {}):
        got_cmc, got_mAP = evaluate_features(qf, gf, *ids, **kwargs)
        assert np.array_equal(got_cmc, cmc) and got_mAP == mAP, kwargs


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_q=st.integers(1, 600),
    num_g=st.integers(1, 30),
    dim=st.integers(1, 6),
    num_pids=st.integers(1, 6),
    num_cams=st.integers(1, 4),
    ties=st.booleans(),
    max_rank=st.integers(1, 40),
    block_bytes=st.sampled_from([1, 40_000, None]),
    workers=st.integers(1, 3),
)
def test_features_match_the_matrix_path_and_brute_force(
    seed, num_q, num_g, dim, num_pids, num_cams, ties, max_rank, block_bytes, workers
):
    """Query counts across several chunks, with every remainder (1 and 3 rows are products
    that BLAS computes with other kernels), and one- or multi-chunk blocks."""
    rng = np.random.default_rng(seed)
    _, *ids = random_problem(rng, num_q, num_g, num_pids, num_cams, ties=False)
    if ties:
        qf, gf = (rng.integers(0, 2, (n, dim)).astype(np.float32) for n in (num_q, num_g))
    else:
        qf, gf = (rng.standard_normal((n, dim)).astype(np.float32) for n in (num_q, num_g))
    dist = euclidean_distmat(qf, gf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = evaluate_rank(dist, *ids, max_rank)
        except ValueError:
            with pytest.raises(ValueError, match="no query has a valid match"):
                evaluate_features(qf, gf, *ids, max_rank, block_bytes=block_bytes)
            return
        cmc, mAP = evaluate_features(qf, gf, *ids, max_rank, block_bytes=block_bytes,
                                     workers=workers)
    assert np.array_equal(cmc, expected[0]) and mAP == expected[1]
    assert_same((dist, *ids), max_rank)  # and the matrix path is the brute force's


def test_a_distance_row_is_its_row_of_the_matrix_bit_for_bit():
    """2 chunks and 3 queries: the last chunk's product differs from one of 256 rows in the
    last bits on OpenBLAS, so each row must come from its own chunk."""
    rng = np.random.default_rng(0)
    qf = rng.standard_normal((515, 512)).astype(np.float32)
    gf = rng.standard_normal((300, 512)).astype(np.float32)
    dist = euclidean_distmat(qf, gf)
    for query in (0, 255, 256, 511, 512, 514):
        assert np.array_equal(distance_row(qf, gf, query), dist[query])
    with pytest.raises(IndexError):
        distance_row(qf, gf, 515)


def test_feature_dtypes_and_torch_inputs_follow_the_matrix():
    rng = np.random.default_rng(1)
    qf, gf, *ids = market_problem(rng, False, num_q=300, num_g=4000)
    for q, g in ((qf.astype(np.float64), gf.astype(np.float64)),
                 (torch.from_numpy(qf), torch.from_numpy(gf)),
                 (qf.astype(np.float16), gf.astype(np.float16))):
        cmc, mAP = evaluate_features(q, g, *ids, block_bytes=1)
        expected = evaluate_rank(euclidean_distmat(q, g), *ids)
        assert np.array_equal(cmc, expected[0]) and mAP == expected[1]
    assert euclidean_distmat(qf.astype(np.float64), gf).dtype == np.float64


def test_features_path_errors():
    qf, gf = np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)
    ids = (np.array([1, 2]), np.array([1, 3]), [0, 0], [1, 1])
    with pytest.raises(ValueError, match="equal d"):
        evaluate_features(qf, np.ones((2, 4)), *ids)
    with pytest.raises(ValueError, match="gallery items"):
        evaluate_features(qf, gf[:1], *ids)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_features(np.array([[np.nan, 0, 0], [0, 0, 0]]), gf, *ids, max_rank=2)
    with pytest.raises(ValueError, match="block_bytes"):
        evaluate_features(qf, gf, *ids, max_rank=2, block_bytes=0)
    with pytest.warns(UserWarning, match="only 2 items"):
        cmc, _ = evaluate_features(qf, gf, *ids, max_rank=5)
    assert cmc.shape == (2,)


def test_features_path_memory_is_a_block_not_the_matrix():
    """tracemalloc sees numpy's buffers: the matrix path holds 128 MB, the blockwise one a
    4 MB block (one chunk) and the slices being ranked."""
    rng = np.random.default_rng(2)
    num_q, num_g = 8192, 4096
    qf, gf = (rng.standard_normal((n, 8)).astype(np.float32) for n in (num_q, num_g))
    ids = (rng.integers(1, 500, num_q), rng.integers(1, 500, num_g),
           rng.integers(0, 6, num_q), rng.integers(0, 6, num_g))
    matrix_bytes = num_q * num_g * 4
    peaks = []
    for evaluate in (lambda: evaluate_rank(euclidean_distmat(qf, gf), *ids),
                     lambda: evaluate_features(qf, gf, *ids, block_bytes=256 * num_g * 4)):
        tracemalloc.start()
        try:
            result = evaluate()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert result[1] > 0
    assert peaks[0] > matrix_bytes
    assert peaks[1] < matrix_bytes / 8


def test_valid_queries_are_those_with_a_same_pid_item_of_another_camera():
    rng = np.random.default_rng(3)
    for _ in range(50):
        _, q_pids, g_pids, q_cams, g_cams = random_problem(rng, 30, 40, 8, 3, ties=False)
        brute = ((q_pids[:, None] == g_pids[None]) & (q_cams[:, None] != g_cams[None])).any(1)
        assert np.array_equal(valid_queries(q_pids, g_pids, q_cams, g_cams), brute)


def test_ranking_agrees_with_the_matrix():
    rng = np.random.default_rng(4)
    qf, gf, q_pids, g_pids, q_cams, g_cams = market_problem(rng, True, num_q=600, num_g=900)
    cameras = []
    for camera in range(6):  # per camera, as Evaluator.embed gives; items numbered globally
        q, g = np.flatnonzero(q_cams == camera), np.flatnonzero(g_cams == camera)
        cameras.append({"query": ItemFeatures(q, q_pids[q], q_cams[q], qf[q]),
                        "gallery": ItemFeatures(g, g_pids[g], g_cams[g], gf[g])})
    ranking = Ranking.of(cameras)
    dist = euclidean_distmat(qf, gf)
    cmc, mAP = ranking.cmc(20)
    expected = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 20)
    assert np.array_equal(cmc, expected[0]) and mAP == expected[1]
    brute = ((q_pids[:, None] == g_pids[None]) & (q_cams[:, None] != g_cams[None])).any(1)
    assert np.array_equal(ranking.answerable(), np.flatnonzero(brute))
    for query in (0, 300, 599):
        order = np.argsort(dist[query], kind="stable")
        keep = (g_pids[order] != q_pids[query]) | (g_cams[order] != q_cams[query])
        assert np.array_equal(ranking.ranked(query, 10), order[keep][:10])


HEIGHT, WIDTH = 24, 12  # a size no other tensor here has: live images are told by it


def _live_image_bytes() -> int:
    """Bytes of the distinct storages of every live uint8 image batch of this size."""
    storages = {}
    for obj in gc.get_objects():  # type(), not isinstance(): no deprecated proxy is touched
        if (type(obj) is torch.Tensor and obj.dtype == torch.uint8 and obj.dim() == 4
                and tuple(obj.shape[1:]) == (3, HEIGHT, WIDTH)):
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@pytest.fixture(scope="module")
def partition(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_partition(tmp_path_factory.mktemp("evaluator"), cameras=3, test_ids=4)


def test_the_evaluator_holds_at_most_one_camera_s_images(partition: Path):
    """A forward hook (the real model, no mock) records the image bytes alive while each batch
    is embedded; between evaluations the evaluator holds no images."""
    evaluator = Evaluator(partition, HEIGHT, WIDTH)
    assert _live_image_bytes() == 0
    model = build_model("resnet18", None, 1)
    seen = []
    model.stem.register_forward_hook(lambda *_: seen.append(_live_image_bytes()))
    evaluator.embed(model, "shared", 0)
    assert _live_image_bytes() == 0
    per_camera = [HEIGHT * WIDTH * 3 * sum(len(t) for t in evaluator.tables[c].values())
                  for c in evaluator.tables]
    # while a camera is embedded, exactly its own images are alive, never another's
    assert len(per_camera) == 3 and set(seen) == set(per_camera)
    cache = sorted(p.name.split("-")[:2] for p in (partition / EVALUATOR_DIR / "cache").iterdir())
    assert cache == [[s, f"camera{c}"] for s in ("gallery", "query") for c in (1, 2, 3)]


@pytest.mark.parametrize("bn_mode", ["shared", "camera"])
def test_per_camera_decoding_embeds_as_the_whole_split_did(partition: Path, bn_mode: str):
    """The evaluator used to decode each split whole and take each camera's rows: the same
    images, batches and features, bit for bit."""
    model = build_model("resnet18", None, 1)
    embedded = Evaluator(partition, HEIGHT, WIDTH).embed(model, bn_mode, 0)
    splits = {}
    for split in ("query", "gallery"):
        table = pd.read_csv(partition / EVALUATOR_DIR / f"{split}.csv")
        splits[split] = (table, decode(list(table["frame"]), HEIGHT, WIDTH))
    for camera, features in embedded.items():
        frames = {}
        for split, (table, images) in splits.items():
            keep = table["camid"].to_numpy() == camera
            rows = table[keep]
            frames[split] = SplitFrames(images[torch.from_numpy(keep)], rows["item"].to_numpy(),
                                        rows["pid"].to_numpy(), rows["camid"].to_numpy())
        whole = embed_camera(model, frames["query"], frames["gallery"], bn_mode, 0)
        for split in ("query", "gallery"):
            assert np.array_equal(features[split].items, whole[split].items)
            assert np.array_equal(features[split].features, whole[split].features)
