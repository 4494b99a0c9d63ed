"""Market-1501 / MARS ranking evaluation: CMC and mAP, as torchreid's ``evaluate_rank``.

Protocol (torchreid's ``eval_market1501``): for each query, gallery items with the query's
pid AND camera are removed; a query left with no true match (same pid, other camera) is
skipped; CMC[k] is the fraction of the remaining queries whose first true match ranks at most
k+1; AP is the mean, over the query's true matches, of the precision at each match's rank;
mAP is the mean AP. Distractors (pid 0) and junk (pid -1) are ordinary pids, as in torchreid.

Ties: the gallery order of a query is a *stable* ascending sort of its distances, i.e. equal
distances are ranked by gallery index. torchreid's ``np.argsort`` leaves tie order
unspecified; without ties both agree exactly. NaN distances are rejected.

MARS (video): average each tracklet's frame features with ``pool_tracklet_features``, then
rank the tracklets exactly as images.

Two entry points, one ranking: ``evaluate_rank`` ranks a distance matrix the caller holds;
``evaluate_features`` ranks query and gallery features without ever holding the whole matrix
(MSMT17's 11,659 x 82,161 is 3.8 GB in float32), computing the distances block by block as
the ranking consumes them. Every path computes distances in the same GEMM calls, one per
256-query chunk, so ``evaluate_features(qf, gf, ...)`` equals
``evaluate_rank(euclidean_distmat(qf, gf), ...)`` exactly, tie order included.

Speed: AP and CMC only need the rank of each same-pid gallery item in its query's row, so no
argsort is built. Per slice of queries the rows are value-sorted (SIMD, several times cheaper
than ``argsort``), every same-pid item is located by one vectorised binary search, and the rare
items that tie count their equal values at smaller gallery indices directly. Junk removal is
then a correction inside each query's same-pid group (a few items per query). Slices run in
threads (the sorts release the GIL) and give each query's first-match rank and AP, so the
scores do not depend on how the queries were split.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from numpy.typing import ArrayLike

# Distances are computed by one GEMM call per fixed chunk of 256 queries (rows 0-255, 256-511,
# ...) on every path: a BLAS product can depend on the call's shape (OpenBLAS multiplies 1 or 3
# rows with other kernels than 256), so equal calls make blockwise distances bit-identical to
# the matrix's. 256 rows get most of GEMM's speed (d = 2,048, 2 cores: 83 GFLOP/s; 64 rows:
# 47, 512 rows: 93).
_CHUNK_ROWS = 256
# Default bound on ``evaluate_features``' block of distances: at MSMT17's 82,161 gallery items
# in float32 a chunk is 84 MB, so a block is three chunks.
_BLOCK_BYTES = 256 << 20
# About 1M distances per ranking slice: the sorted float32 copy (4 MB) stays cache-sized, which
# measured faster than larger slices, and many slices balance the threads.
_SLICE_ELEMENTS = 1 << 20


def _as_numpy(x: np.ndarray | torch.Tensor | ArrayLike) -> np.ndarray:
    """Accept torch tensors (any device) as well as arrays."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class _Distances:
    """Squared Euclidean distances of queries to the gallery, computed a chunk of rows at a time.

    As torchreid's ``euclidean_squared_distance``: |q|^2 + |g|^2 - 2 q.g in the features' float
    dtype (float32 for float32 features, float64 for float64 ones), round-off negatives clipped
    to 0. Squared, because the ranking (hence CMC and mAP) is the same and it skips a sqrt pass.
    Features of another dtype (float16, integers) are converted once, as a copy.
    """

    def __init__(self, qf: np.ndarray | torch.Tensor, gf: np.ndarray | torch.Tensor) -> None:
        q, g = _as_numpy(qf), _as_numpy(gf)
        if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
            raise ValueError(f"features must be (n, d) with equal d, got {q.shape} and {g.shape}")
        self.dtype = np.result_type(q.dtype, g.dtype, np.float32)
        self.q = q.astype(self.dtype, copy=False)
        self.g = g.astype(self.dtype, copy=False)
        # over all rows once: a row's distance never depends on the rows computed with it
        self.q_sq = np.einsum("ij,ij->i", self.q, self.q)
        self.g_sq = np.einsum("ij,ij->i", self.g, self.g)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.q), len(self.g)

    def rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Distances of queries ``start:stop`` (``out`` if given), one GEMM per chunk.

        ``start`` must be a multiple of the chunk and ``stop`` one too or the query count, so
        that every call multiplies exactly the rows of one whole chunk.
        """
        out = np.empty((stop - start, len(self.g)), self.dtype) if out is None else out
        for a in range(start, stop, _CHUNK_ROWS):
            b = min(a + _CHUNK_ROWS, stop)
            dist = out[a - start : b - start]
            np.matmul(self.q[a:b], self.g.T, out=dist)
            dist *= -2
            dist += self.q_sq[a:b, None]
            dist += self.g_sq[None, :]
            np.maximum(dist, 0, out=dist)
        return out


def euclidean_distmat(qf: np.ndarray | torch.Tensor, gf: np.ndarray | torch.Tensor) -> np.ndarray:
    """Squared Euclidean distances (num_q, num_g), as torchreid's ``euclidean_squared_distance``.

    Computed as |q|^2 + |g|^2 - 2 q.g in the features' float dtype (float32 for float32
    features); round-off negatives are clipped to 0. The whole matrix is num_q x num_g x 4 bytes
    (float32): ``evaluate_features`` ranks the very same distances without holding it.
    """
    dist = _Distances(qf, gf)
    return dist.rows(0, dist.shape[0])


def distance_row(qf: np.ndarray | torch.Tensor, gf: np.ndarray | torch.Tensor,
                 query: int) -> np.ndarray:
    """Query ``query``'s squared distances to the gallery, bit-identical to its row of
    ``euclidean_distmat``: computed with its whole 256-query chunk, which is what it costs."""
    dist = _Distances(qf, gf)
    num_q = dist.shape[0]
    if not 0 <= query < num_q:
        raise IndexError(f"query {query} out of range for {num_q} queries")
    start = query - query % _CHUNK_ROWS
    return dist.rows(start, min(start + _CHUNK_ROWS, num_q))[query - start].copy()


def pool_tracklet_features(
    frame_features: np.ndarray | torch.Tensor, tracklet_index: np.ndarray
) -> np.ndarray:
    """Mean frame feature of each tracklet: MARS tracklets are ranked on averaged features.

    ``tracklet_index[i]`` is the tracklet (0..T-1) of frame ``i``; every tracklet needs a
    frame. Sums are accumulated in float64 and returned in the features' float dtype.
    """
    feats = _as_numpy(frame_features)
    index = _as_numpy(tracklet_index)
    if feats.ndim != 2 or index.ndim != 1 or len(index) != len(feats):
        raise ValueError(
            f"need (n, d) features and n tracklet indices, got {feats.shape} and {index.shape}"
        )
    if len(index) == 0:
        raise ValueError("no frames to pool")
    if not np.issubdtype(index.dtype, np.integer) or index.min() < 0:
        raise ValueError("tracklet_index must hold non-negative integers")
    counts = np.bincount(index)
    if not counts.all():
        raise ValueError(f"tracklets without frames: {np.flatnonzero(counts == 0)[:10]}")
    order = np.argsort(index, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    sums = np.add.reduceat(feats[order], starts, axis=0, dtype=np.float64)
    out_dtype = np.result_type(feats.dtype, np.float32)
    return (sums / counts[:, None]).astype(out_dtype, copy=False)


def summarise(cmc: np.ndarray, mAP: float) -> dict[str, float]:
    """Rank-1/5/10 and mAP in percent, as plain floats for reports.

    A CMC shorter than k (only when the gallery had fewer than k items, where
    ``evaluate_rank`` truncates it) has saturated, so its last value is used.
    """
    curve = np.asarray(cmc, dtype=np.float64)
    if curve.ndim != 1 or len(curve) == 0:
        raise ValueError(f"cmc must be a non-empty 1-D curve, got shape {curve.shape}")
    ranks = {f"rank{k}": 100.0 * float(curve[min(k, len(curve)) - 1]) for k in (1, 5, 10)}
    return {**ranks, "mAP": 100.0 * float(mAP)}


def _count_less(sorted_rows: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each (row, value): how many entries of the ascending row are < value.

    One branch-free binary search over all pairs at once, instead of a Python loop of
    per-row ``np.searchsorted`` calls.
    """
    n = sorted_rows.shape[1]
    flat = sorted_rows.ravel()
    base = rows * n
    lo = np.zeros(len(rows), dtype=np.int64)
    hi = np.full(len(rows), n, dtype=np.int64)
    for _ in range(n.bit_length()):
        mid = (lo + hi) >> 1
        go_right = (flat[base + np.minimum(mid, n - 1)] < values) & (lo < hi)
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(go_right, hi, mid)
    return lo


def _stable_positions(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Position of each entry (row, col) in its row's stable ascending order.

    A value sort of the rows (SIMD, far cheaper than an argsort) gives each entry's count of
    smaller values, which is its position unless it ties; tied entries add the equal values at
    smaller gallery indices, counted directly (few on real distances).
    """
    num_g = block.shape[1]
    sorted_rows = np.sort(block, axis=1)
    if np.issubdtype(block.dtype, np.floating) and np.isnan(sorted_rows[:, -1]).any():
        raise ValueError("distances contain NaN")
    values = block[rows, cols]
    positions = _count_less(sorted_rows, rows, values)
    after = np.minimum(positions + 1, num_g - 1)
    tied = np.flatnonzero((positions + 1 < num_g) & (sorted_rows[rows, after] == values))
    chunk = max(1, _SLICE_ELEMENTS // num_g)
    for start in range(0, len(tied), chunk):
        idx = tied[start : start + chunk]
        earlier = np.arange(num_g) < cols[idx, None]
        equal = block[rows[idx]] == values[idx, None]
        positions[idx] += np.count_nonzero(equal & earlier, axis=1)
    return positions


def _segment_exclusive_cumsum(
    flags: np.ndarray, starts: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Per item: how many earlier items of its own contiguous segment are flagged."""
    running = np.concatenate(([0], np.cumsum(flags, dtype=np.int64)))
    return running[:-1] - np.repeat(running[starts], counts)


@dataclass(frozen=True)
class _Identities:
    """The ids of a ranking problem, checked, with each query's same-pid gallery items: the
    run ``by_pid[group_first : group_first + group_sizes]`` of the pid-sorted gallery."""

    g_pids: np.ndarray
    q_camids: np.ndarray
    g_camids: np.ndarray
    by_pid: np.ndarray
    group_first: np.ndarray
    group_sizes: np.ndarray

    @classmethod
    def of(cls, q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike, g_camids: ArrayLike,
           num_q: int, num_g: int) -> _Identities:
        """Ids of ``num_q`` queries and ``num_g`` gallery items; ValueError if they disagree."""
        q_pids, g_pids, q_camids, g_camids = map(_as_numpy, (q_pids, g_pids, q_camids, g_camids))
        if q_pids.shape != (num_q,) or q_camids.shape != (num_q,):
            raise ValueError(
                f"{num_q} queries but q_pids {q_pids.shape}, q_camids {q_camids.shape}"
            )
        if g_pids.shape != (num_g,) or g_camids.shape != (num_g,):
            raise ValueError(
                f"{num_g} gallery items but g_pids {g_pids.shape}, g_camids {g_camids.shape}"
            )
        if num_q == 0 or num_g == 0:
            raise ValueError(f"empty problem: {num_q} queries, {num_g} gallery items")
        by_pid = np.argsort(g_pids, kind="stable")
        sorted_pids = g_pids[by_pid]
        group_first = np.searchsorted(sorted_pids, q_pids, side="left")
        group_sizes = np.searchsorted(sorted_pids, q_pids, side="right") - group_first
        return cls(g_pids, q_camids, g_camids, by_pid, group_first, group_sizes)

    def valid(self) -> np.ndarray:
        """Which queries have a true match (a same-pid gallery item of another camera): those
        the protocol counts. From the ids alone, O((Q + G) log G)."""
        sorted_pids = self.g_pids[self.by_pid]
        run_starts = np.flatnonzero(np.r_[True, sorted_pids[1:] != sorted_pids[:-1]])
        cams = self.g_camids[self.by_pid]
        run = np.searchsorted(run_starts, self.group_first, side="right") - 1
        lowest = np.minimum.reduceat(cams, run_starts)[run]
        highest = np.maximum.reduceat(cams, run_starts)[run]
        other_camera = (lowest != self.q_camids) | (highest != self.q_camids)
        return (self.group_sizes > 0) & other_camera

    def evaluate(self, block: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """For the queries ``start : start + len(block)`` (``block``: their distance rows),
        each one's first true match's 0-based rank among its valid gallery, and its AP (-1 and
        0 without a true match).

        Only each query's same-pid gallery items are placed; the junk among them (same camera)
        is dropped by subtracting, from every true match's position, the junk ranked before it.
        """
        num_rows, num_g = block.shape
        stop = start + num_rows
        sizes = self.group_sizes[start:stop]
        starts = np.cumsum(sizes) - sizes
        rows = np.repeat(np.arange(num_rows), sizes)
        cols = self.by_pid[np.arange(len(rows))
                           + np.repeat(self.group_first[start:stop] - starts, sizes)]
        position = _stable_positions(block, rows, cols)

        # Each query's items in rank order; starts/sizes still delimit the queries.
        order = np.argsort(rows * num_g + position)
        rows, cols, position = rows[order], cols[order], position[order]
        junk = self.g_camids[cols] == self.q_camids[start:stop][rows]
        junk_before = _segment_exclusive_cumsum(junk, starts, sizes)
        hits_before = _segment_exclusive_cumsum(~junk, starts, sizes)

        hit = ~junk
        hit_rows = rows[hit]
        hit_rank = position[hit] - junk_before[hit]  # 0-based rank among the valid gallery
        precision = (hits_before[hit] + 1) / (hit_rank + 1)
        num_hits = np.bincount(hit_rows, minlength=num_rows)
        ap = np.bincount(hit_rows, weights=precision, minlength=num_rows) / np.maximum(num_hits, 1)
        first = np.full(num_rows, -1, dtype=np.int64)
        is_first = hits_before[hit] == 0
        first[hit_rows[is_first]] = hit_rank[is_first]
        return first, ap


def valid_queries(q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike,
                  g_camids: ArrayLike) -> np.ndarray:
    """Boolean mask of the queries the protocol counts: those whose pid some gallery item of
    another camera has. From the ids alone (O((Q + G) log G)), no distances."""
    return _Identities.of(q_pids, g_pids, q_camids, g_camids, len(_as_numpy(q_pids)),
                          len(_as_numpy(g_pids))).valid()


def _curve_length(max_rank: int, num_g: int) -> int:
    """``max_rank``, shortened with a warning to a smaller gallery, as torchreid does."""
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if num_g < max_rank:
        warnings.warn(
            f"gallery has only {num_g} items; CMC is computed up to rank {num_g}",
            stacklevel=3,
        )
    return min(max_rank, num_g)


def _workers(workers: int | None) -> int:
    """``workers``, or the CPUs this process may use (the sorts release the GIL, so threads
    scale)."""
    if workers is None:
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


def _slice_rows(num_g: int) -> int:
    return max(1, _SLICE_ELEMENTS // num_g)


def _rank(rows_of: Callable[[int, int], np.ndarray], block_rows: int, ids: _Identities,
          max_rank: int, slice_rows: int, workers: int) -> tuple[np.ndarray, float]:
    """CMC and mAP of distances handed over a block at a time: ``rows_of(a, b)`` gives the rows
    of queries ``a:b``. A block is ranked (in slices of ``slice_rows`` on ``workers`` threads)
    before the next is asked for, so ``rows_of`` may reuse one buffer."""
    valid = ids.valid()
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a valid match (a same-pid gallery item from another camera)")
    num_q = len(valid)
    first = np.empty(num_q, dtype=np.int64)
    ap = np.empty(num_q)

    def rank_slice(block: np.ndarray, start: int, a: int) -> None:
        rows = block[a : a + slice_rows]
        queries = slice(start + a, start + a + len(rows))
        first[queries], ap[queries] = ids.evaluate(rows, queries.start)

    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, num_q, block_rows):
            block = rows_of(start, min(start + block_rows, num_q))
            list(pool.map(partial(rank_slice, block, start), range(0, len(block), slice_rows)))
    first_hit_hist = np.bincount(np.minimum(first[valid], max_rank), minlength=max_rank + 1)
    cmc = np.cumsum(first_hit_hist[:max_rank]) / num_valid
    return cmc, float(ap[valid].sum() / num_valid)


def evaluate_rank(
    distmat: np.ndarray | torch.Tensor,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    *,
    query_block: int | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, float]:
    """CMC (fractions, length ``max_rank``) and mAP under the Market-1501 protocol.

    Matches torchreid's ``evaluate_rank`` (see the module docstring for the protocol and the
    tie rule). As in torchreid, a gallery smaller than ``max_rank`` warns and shortens the
    curve to the gallery size; a query whose valid gallery is shorter than the curve counts as
    found (1) past its end. ``query_block`` (queries per slice ranked at once; default ~1M
    distances) bounds the ranking's working memory, ``workers`` threads rank slices in
    parallel (default: usable CPUs). Raises ValueError on mismatched shapes, NaN distances, or
    when no query has a valid match.
    """
    dist = _as_numpy(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_q, num_g), got shape {dist.shape}")
    num_q, num_g = dist.shape
    ids = _Identities.of(q_pids, g_pids, q_camids, g_camids, num_q, num_g)
    max_rank = _curve_length(max_rank, num_g)
    slice_rows = _slice_rows(num_g) if query_block is None else query_block
    if slice_rows < 1:
        raise ValueError(f"query_block must be >= 1, got {query_block}")
    # the matrix is already in memory: one block, its rows are views
    return _rank(lambda a, b: dist[a:b], num_q, ids, max_rank, slice_rows, _workers(workers))


def evaluate_features(
    query_features: np.ndarray | torch.Tensor,
    gallery_features: np.ndarray | torch.Tensor,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_camids: ArrayLike,
    gallery_camids: ArrayLike,
    max_rank: int = 50,
    *,
    block_bytes: int | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, float]:
    """``evaluate_rank(euclidean_distmat(query_features, gallery_features), ...)``, exactly,
    without the query x gallery matrix.

    Squared distances are computed a block of queries at a time, in the features' float dtype
    and the same GEMM calls as ``euclidean_distmat`` (hence the same values and tie order),
    ranked, and overwritten by the next block.

    Memory beyond the features grows with G only, never with Q x G: one block of distances
    (at most ``block_bytes``, default 256 MiB, but at least one chunk of 256 queries:
    256 x G x 4 bytes in float32, 84 MB at MSMT17's 82,161 gallery items), plus per thread
    a ~1M-distance slice being ranked (~10 MB), plus O(Q + G) ids, norms and per-query
    results. d does not enter it (features of a dtype other than float32/64 are converted
    once, a copy). Time grows as Q x G x d for the distances (GEMM) plus Q x G x log G for
    sorting each query's row; ``workers`` threads rank slices in parallel (default: usable
    CPUs; BLAS uses its own threads for the distances). Raises ValueError as
    ``evaluate_rank`` does, on NaN features too.
    """
    dist = _Distances(query_features, gallery_features)
    num_q, num_g = dist.shape
    ids = _Identities.of(query_pids, gallery_pids, query_camids, gallery_camids, num_q, num_g)
    max_rank = _curve_length(max_rank, num_g)
    block_bytes = _BLOCK_BYTES if block_bytes is None else block_bytes
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be >= 1, got {block_bytes}")
    chunk_bytes = _CHUNK_ROWS * num_g * dist.dtype.itemsize
    block_rows = min(max(1, block_bytes // chunk_bytes) * _CHUNK_ROWS, num_q)
    buffer = np.empty((block_rows, num_g), dist.dtype)
    return _rank(lambda a, b: dist.rows(a, b, buffer[: b - a]), block_rows, ids, max_rank,
                 _slice_rows(num_g), _workers(workers))
