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

Speed: AP and CMC only need the rank of each same-pid gallery item in its query's row, so no
argsort is built. Per block of queries the rows are value-sorted (SIMD, several times cheaper
than ``argsort``), every same-pid item is located by one vectorised binary search, and the rare
items that tie count their equal values at smaller gallery indices directly. Junk removal is
then a correction inside each query's same-pid group (a few items per query). Blocks bound the
memory and run in threads (the sorts release the GIL).
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numpy.typing import ArrayLike

# About 1M distances per block: the sorted float32 copy (4 MB) stays cache-sized, which
# measured faster than larger blocks, and many blocks balance the threads.
_BLOCK_ELEMENTS = 1 << 20


def _as_numpy(x: np.ndarray | torch.Tensor | ArrayLike) -> np.ndarray:
    """Accept torch tensors (any device) as well as arrays."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def euclidean_distmat(qf: np.ndarray | torch.Tensor, gf: np.ndarray | torch.Tensor) -> np.ndarray:
    """Squared Euclidean distances (num_q, num_g), as torchreid's ``euclidean_squared_distance``.

    Squared, because the ranking (hence CMC and mAP) is the same and it skips a sqrt pass.
    Computed as |q|^2 + |g|^2 - 2 q.g in the features' float dtype; round-off negatives are
    clipped to 0.
    """
    q = _as_numpy(qf)
    g = _as_numpy(gf)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"features must be (n, d) with equal d, got {q.shape} and {g.shape}")
    dtype = np.result_type(q.dtype, g.dtype, np.float32)
    q = q.astype(dtype, copy=False)
    g = g.astype(dtype, copy=False)
    dist = q @ g.T
    dist *= -2
    dist += np.einsum("ij,ij->i", q, q)[:, None]
    dist += np.einsum("ij,ij->i", g, g)[None, :]
    np.maximum(dist, 0, out=dist)
    return dist


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
        raise ValueError("distmat contains NaN")
    values = block[rows, cols]
    positions = _count_less(sorted_rows, rows, values)
    after = np.minimum(positions + 1, num_g - 1)
    tied = np.flatnonzero((positions + 1 < num_g) & (sorted_rows[rows, after] == values))
    chunk = max(1, _BLOCK_ELEMENTS // num_g)
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


def _evaluate_block(
    block: np.ndarray,
    group_first: np.ndarray,
    group_sizes: np.ndarray,
    q_camids: np.ndarray,
    by_pid: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
) -> tuple[np.ndarray, float, int]:
    """First-match rank histogram (last bin: >= max_rank), AP sum and valid-query count.

    Only each query's same-pid gallery items are placed; the junk among them (same camera)
    is dropped by subtracting, from every true match's position, the junk ranked before it.
    """
    num_rows, num_g = block.shape
    starts = np.cumsum(group_sizes) - group_sizes
    rows = np.repeat(np.arange(num_rows), group_sizes)
    cols = by_pid[np.arange(len(rows)) + np.repeat(group_first - starts, group_sizes)]
    position = _stable_positions(block, rows, cols)

    # Each query's items in rank order; starts/group_sizes still delimit the queries.
    order = np.argsort(rows * num_g + position)
    rows, cols, position = rows[order], cols[order], position[order]
    junk = g_camids[cols] == q_camids[rows]
    junk_before = _segment_exclusive_cumsum(junk, starts, group_sizes)
    hits_before = _segment_exclusive_cumsum(~junk, starts, group_sizes)

    hit = ~junk
    hit_rows = rows[hit]
    hit_rank = position[hit] - junk_before[hit]  # 0-based rank among the valid gallery
    precision = (hits_before[hit] + 1) / (hit_rank + 1)
    num_hits = np.bincount(hit_rows, minlength=num_rows)
    valid = num_hits > 0
    ap = np.bincount(hit_rows, weights=precision, minlength=num_rows)[valid] / num_hits[valid]
    first_rank = hit_rank[hits_before[hit] == 0]
    hist = np.bincount(np.minimum(first_rank, max_rank), minlength=max_rank + 1)
    return hist, float(ap.sum()), int(valid.sum())


def _default_workers() -> int:
    """CPUs this process may use (the sorts release the GIL, so threads scale)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
    found (1) past its end. ``query_block`` (queries per block; default ~1M distances) bounds
    memory, ``workers`` threads evaluate blocks in parallel (default: usable CPUs).
    Raises ValueError on mismatched shapes, NaN distances, or when no query has a valid match.
    """
    dist = _as_numpy(distmat)
    q_pids, g_pids, q_camids, g_camids = map(_as_numpy, (q_pids, g_pids, q_camids, g_camids))
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_q, num_g), got shape {dist.shape}")
    num_q, num_g = dist.shape
    if q_pids.shape != (num_q,) or q_camids.shape != (num_q,):
        raise ValueError(
            f"{num_q} queries in distmat but q_pids {q_pids.shape}, q_camids {q_camids.shape}"
        )
    if g_pids.shape != (num_g,) or g_camids.shape != (num_g,):
        raise ValueError(
            f"{num_g} gallery items in distmat but g_pids {g_pids.shape}, g_camids {g_camids.shape}"
        )
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if num_q == 0 or num_g == 0:
        raise ValueError(f"empty problem: distmat shape {dist.shape}")
    if num_g < max_rank:
        warnings.warn(
            f"gallery has only {num_g} items; CMC is computed up to rank {num_g}",
            stacklevel=2,
        )
        max_rank = num_g
    query_block = max(1, _BLOCK_ELEMENTS // num_g) if query_block is None else query_block
    workers = _default_workers() if workers is None else workers
    if query_block < 1 or workers < 1:
        raise ValueError(f"query_block and workers must be >= 1, got {query_block}, {workers}")

    # Same-pid gallery items of each query: a contiguous run of the pid-sorted gallery.
    by_pid = np.argsort(g_pids, kind="stable")
    sorted_pids = g_pids[by_pid]
    group_first = np.searchsorted(sorted_pids, q_pids, side="left")
    group_sizes = np.searchsorted(sorted_pids, q_pids, side="right") - group_first

    def run(a: int) -> tuple[np.ndarray, float, int]:
        b = min(a + query_block, num_q)
        return _evaluate_block(
            dist[a:b],
            group_first[a:b],
            group_sizes[a:b],
            q_camids[a:b],
            by_pid,
            g_camids,
            max_rank,
        )

    block_starts = range(0, num_q, query_block)
    workers = min(workers, len(block_starts))
    if workers == 1:
        results = [run(a) for a in block_starts]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(run, block_starts))

    num_valid = sum(r[2] for r in results)
    if num_valid == 0:
        raise ValueError("no query has a valid match (a same-pid gallery item from another camera)")
    first_hit_hist = np.sum([r[0] for r in results], axis=0)
    cmc = np.cumsum(first_hit_hist[:max_rank]) / num_valid
    return cmc, sum(r[1] for r in results) / num_valid
