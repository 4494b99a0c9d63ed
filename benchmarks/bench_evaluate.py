"""Time ``evaluate_rank`` on a Market-1501-sized problem against torchreid's algorithm, and
``evaluate_features`` (no query x gallery matrix) against the matrix path; with ``--msmt17``,
time and peak memory of ``evaluate_features`` at MSMT17's size.

Run: ``python benchmarks/bench_evaluate.py`` (well under a minute) or ``python
benchmarks/bench_evaluate.py --msmt17`` (minutes; about 1.5 GB).

Two deterministic problems with Market's test structure (751 ids, 6 cameras, 3,368 queries,
15,913 gallery items of which 2,793 distractors, pid 0, and 400 junk, pid -1), float32:
``trained``: squared distances of features drawn around identity centroids (plus a camera
bias) with noise, so true matches rank realistically high; ``random``: uniform distances, so
true matches rank anywhere. For each it prints best-of-N times of
  (a) the reference: torchreid's compiled Cython ``evaluate_cy`` when importable, otherwise
      this file's numpy transcription of its algorithm (one argsort of the whole matrix, then
      a pass over every query's sorted row);
  (b) ``np.argsort(distmat, axis=1)`` alone, which torchreid's evaluation starts with;
  (c) ``evaluate_rank`` with its default threads, and single-threaded;
with the ratios, and checks that CMC and mAP agree with (a) within 1e-6 (float32 distances do
tie and torchreid orders ties arbitrarily, so a larger gap is re-checked against the reference
with the stable tie rule that ``evaluate_rank`` documents). On ``trained``'s features it then
times (d) the matrix path, ``euclidean_distmat`` then ``evaluate_rank``, and (e)
``evaluate_features``, and checks that they agree exactly.

``--msmt17``: MSMT17's test structure, roughly (3,060 identities over 15 cameras, 11,659 queries,
82,161 gallery items, 2,048-d float32 features of identity centroids plus noise), through
``evaluate_features`` once: its time, the process's peak RSS (``ru_maxrss``) and the peak beyond
the RSS that holds the problem (features, ids, Python and the libraries). The features are
built in small chunks, so nothing before the evaluation peaks above them.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dmnreid.reid.evaluate import (  # noqa: E402
    euclidean_distmat,
    evaluate_features,
    evaluate_rank,
    summarise,
)

NUM_IDS, NUM_CAMS, NUM_QUERY, NUM_GALLERY = 751, 6, 3368, 15913
NUM_DISTRACTORS, NUM_JUNK = 2793, 400
MSMT_IDS, MSMT_CAMS, MSMT_QUERY, MSMT_GALLERY, MSMT_DIM = 3060, 15, 11659, 82161, 2048
Problem = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Features = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Result = tuple[np.ndarray, float]


def market_ids(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Market-like pids/cameras: one query per (id, camera) the id is seen in, each such
    (id, camera) also in the gallery, plus distractors (0) and junk (-1) anywhere."""
    cams_per_id = rng.integers(2, NUM_CAMS + 1, NUM_IDS)
    while (excess := int(cams_per_id.sum()) - NUM_QUERY) != 0:
        i = rng.integers(NUM_IDS)
        step = -np.sign(excess)
        if 2 <= cams_per_id[i] + step <= NUM_CAMS:
            cams_per_id[i] += step
    cells = np.array(
        [
            (pid, cam)
            for pid in range(NUM_IDS)
            for cam in rng.permutation(NUM_CAMS)[: cams_per_id[pid]]
        ]
    )
    num_real = NUM_GALLERY - NUM_DISTRACTORS - NUM_JUNK
    gallery_cells = np.concatenate(
        [cells, cells[rng.integers(0, len(cells), num_real - len(cells))]]
    )
    q_pids, q_cams = cells[:, 0] + 1, cells[:, 1]
    g_pids = np.concatenate(
        [gallery_cells[:, 0] + 1, np.zeros(NUM_DISTRACTORS, int), -np.ones(NUM_JUNK, int)]
    )
    g_cams = np.concatenate(
        [gallery_cells[:, 1], rng.integers(0, NUM_CAMS, NUM_DISTRACTORS + NUM_JUNK)]
    )
    return q_pids, g_pids, q_cams, g_cams


def trained_features(seed: int = 0, dim: int = 128, noise: float = 1.25) -> Features:
    """Features = identity centroid + camera bias + noise (distractors: own random centroid;
    junk: a faint random identity), L2-normalised, as a moderately well-trained model."""
    rng = np.random.default_rng(seed)
    q_pids, g_pids, q_cams, g_cams = market_ids(rng)
    centroids = rng.standard_normal((NUM_IDS + 1, dim))
    centroids[0] = 0.0  # distractors get their own below
    cam_bias = 0.5 * rng.standard_normal((NUM_CAMS, dim))

    def features(pids: np.ndarray, cams: np.ndarray) -> np.ndarray:
        base = centroids[np.maximum(pids, 0)] + cam_bias[cams]
        return base + noise * rng.standard_normal((len(pids), dim))

    qf, gf = features(q_pids, q_cams), features(g_pids, g_cams)
    distractor, junk = g_pids == 0, g_pids == -1
    gf[distractor] += rng.standard_normal((NUM_DISTRACTORS, dim))
    gf[junk] += 0.3 * centroids[rng.integers(1, NUM_IDS + 1, NUM_JUNK)]
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    return qf.astype(np.float32), gf.astype(np.float32), q_pids, g_pids, q_cams, g_cams


def trained_problem() -> Problem:
    """The squared distances of ``trained_features``."""
    qf, gf, *ids = trained_features()
    return euclidean_distmat(qf, gf), *ids


def random_problem(seed: int = 1) -> Problem:
    """Same ids, uniform random float32 distances: true matches rank anywhere."""
    rng = np.random.default_rng(seed)
    q_pids, g_pids, q_cams, g_cams = market_ids(np.random.default_rng(0))
    distmat = rng.random((NUM_QUERY, NUM_GALLERY), dtype=np.float32)
    return distmat, q_pids, g_pids, q_cams, g_cams


def reference_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    kind: str | None = None,
) -> Result:
    """torchreid's Market-1501 algorithm in numpy: argsort every row, then per query drop
    same-pid-same-camera items, cumulate matches for CMC and precision for AP."""
    indices = np.argsort(distmat, axis=1, kind=kind)
    matches = g_pids[indices] == q_pids[:, None]
    all_cmc, all_ap = [], []
    for i in range(len(q_pids)):
        order = indices[i]
        keep = (g_pids[order] != q_pids[i]) | (g_camids[order] != q_camids[i])
        raw = matches[i][keep]
        if not raw.any():
            continue
        hits = np.cumsum(raw)
        all_cmc.append(np.minimum(hits[:max_rank], 1))
        all_ap.append(float(np.sum(hits[raw] / (np.flatnonzero(raw) + 1))) / hits[-1])
    return np.mean(all_cmc, axis=0), float(np.mean(all_ap))


def torchreid_cython() -> Callable[..., Result] | None:
    """torchreid's compiled evaluator, if a source build of deep-person-reid is installed.

    (PyPI's ``torchreid``, 0.2.5, is a repackaging that ships neither the ``.pyx`` nor a
    compiled extension, so it never provides it.)
    """
    try:
        from torchreid.metrics.rank_cylib.rank_cy import evaluate_cy
    except Exception:
        return None
    return lambda *problem: evaluate_cy(*problem, 50, False)


def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` runs (the machine is shared), and the last result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench(name: str, problem: Problem, cython: Callable[..., Result] | None) -> None:
    """Time (a), (b), (c) on one problem, print them with the ratios and check agreement."""
    distmat = problem[0]
    ref_name = "torchreid Cython evaluate_cy" if cython else "numpy transcription of torchreid"
    ref_fn = cython or reference_rank
    t_ref, ref = best_of(lambda: ref_fn(*problem), 2)
    t_sort, _ = best_of(lambda: np.argsort(distmat, axis=1), 3)
    t_ours, ours = best_of(lambda: evaluate_rank(*problem), 5)
    t_ours1, _ = best_of(lambda: evaluate_rank(*problem, workers=1), 5)

    summary = ", ".join(f"{k} {v:.2f}" for k, v in summarise(*ours).items())
    print(f"\n[{name}] {distmat.shape[0]} x {distmat.shape[1]} {distmat.dtype}: {summary}")
    print(f"  (a) reference, {ref_name}: {t_ref:7.3f} s")
    print(f"  (b) np.argsort(distmat, axis=1):     {t_sort:7.3f} s")
    print(f"  (c) evaluate_rank (default threads): {t_ours:7.3f} s")
    print(f"      evaluate_rank (1 thread):        {t_ours1:7.3f} s")
    print(
        f"  speed-up vs (a): {t_ref / t_ours:5.1f}x ({t_ref / t_ours1:.1f}x single-thread); "
        f"vs (b): {t_sort / t_ours:5.1f}x ({t_sort / t_ours1:.1f}x single-thread)"
    )
    check_agreement(name, ours, ref, problem)


def check_agreement(name: str, ours: Result, ref: Result, problem: Problem) -> None:
    """Within 1e-6 of (a); should tied distances (ordered arbitrarily by (a)) explain a
    larger gap, the stable-tie reference is computed and must agree."""

    def gap(expected: Result, label: str) -> float:
        cmc_err = float(np.abs(ours[0] - expected[0]).max())
        map_err = abs(ours[1] - expected[1])
        print(f"  agreement with {label}: |dCMC| {cmc_err:.1e}, |dmAP| {map_err:.1e}")
        return max(cmc_err, map_err)

    if (
        gap(ref, "(a)") > 1e-6
        and gap(reference_rank(*problem, kind="stable"), "the stable-tie reference") > 1e-6
    ):
        raise SystemExit(f"{name}: evaluate_rank disagrees with the reference")


def bench_features(features: Features) -> None:
    """(d) the matrix path against (e) ``evaluate_features``: times, and exact agreement."""
    qf, gf, *ids = features
    t_matrix, matrix = best_of(lambda: evaluate_rank(euclidean_distmat(qf, gf), *ids), 3)
    t_blocks, blocks = best_of(lambda: evaluate_features(qf, gf, *ids), 3)
    print(f"\n[trained, from {qf.shape[1]}-d float32 features]")
    print(f"  (d) euclidean_distmat + evaluate_rank: {t_matrix:7.3f} s")
    print(f"  (e) evaluate_features (no matrix):     {t_blocks:7.3f} s")
    if not (np.array_equal(matrix[0], blocks[0]) and matrix[1] == blocks[1]):
        raise SystemExit("evaluate_features differs from the matrix path")
    print("  (e) equals (d) exactly (CMC and mAP)")


def msmt17_ids(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """MSMT17-like pids/cameras: each identity seen by 2-8 of the 15 cameras, with a gallery
    item in each of them and at least one query; the rest spread at random over the same
    (identity, camera) cells. No distractors or junk, as in MSMT17's lists."""
    cams_per_id = rng.integers(2, 9, MSMT_IDS)
    cell_pid = np.repeat(np.arange(1, MSMT_IDS + 1), cams_per_id)
    cell_cam = np.concatenate([rng.permutation(MSMT_CAMS)[:k] for k in cams_per_id])
    first_cell = np.cumsum(cams_per_id) - cams_per_id
    num_cells = len(cell_pid)
    q_cells = np.concatenate([first_cell + rng.integers(0, cams_per_id),
                              rng.integers(0, num_cells, MSMT_QUERY - MSMT_IDS)])
    g_cells = np.concatenate([np.arange(num_cells),
                              rng.integers(0, num_cells, MSMT_GALLERY - num_cells)])
    return cell_pid[q_cells], cell_pid[g_cells], cell_cam[q_cells], cell_cam[g_cells]


def unit_features(rng: np.random.Generator, centroids: np.ndarray, pids: np.ndarray,
                  noise: float = 4.0, chunk: int = 2048) -> np.ndarray:
    """float32 centroid of each pid plus noise, L2-normalised, built ``chunk`` rows at a time
    so that no temporary outgrows a small fraction of the features."""
    out = np.empty((len(pids), centroids.shape[1]), dtype=np.float32)
    for a in range(0, len(pids), chunk):
        rows = out[a : a + chunk]
        rng.standard_normal(rows.shape, dtype=np.float32, out=rows)
        rows *= noise
        rows += centroids[pids[a : a + chunk]]
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def rss_bytes() -> int:
    """The process's resident set now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The process's peak resident set so far (``ru_maxrss``: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bench_msmt17(seed: int = 0) -> None:
    """``evaluate_features`` once at MSMT17's size: time, peak RSS, peak beyond the problem."""
    rng = np.random.default_rng(seed)
    q_pids, g_pids, q_cams, g_cams = msmt17_ids(rng)
    centroids = rng.standard_normal((MSMT_IDS + 1, MSMT_DIM), dtype=np.float32)
    qf, gf = unit_features(rng, centroids, q_pids), unit_features(rng, centroids, g_pids)
    del centroids
    held, peak_before = rss_bytes(), peak_rss_bytes()
    start = time.perf_counter()
    cmc, mAP = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    summary = ", ".join(f"{k} {v:.2f}" for k, v in summarise(cmc, mAP).items())
    mb = 1e6
    print(f"[msmt17] {len(qf)} x {len(gf)}, {MSMT_DIM}-d float32 features, "
          f"{len(np.unique(g_pids))} identities, {len(np.unique(g_cams))} cameras: {summary}")
    print(f"  features: {(qf.nbytes + gf.nbytes) / mb:,.0f} MB; the whole distance matrix "
          f"would be {len(qf) * len(gf) * 4 / mb:,.0f} MB (float32)")
    print(f"  evaluate_features: {seconds:.1f} s ({os.cpu_count()} CPUs)")
    print(f"  RSS holding the problem: {held / mb:,.0f} MB "
          f"(peak so far {peak_before / mb:,.0f} MB)")
    print(f"  peak RSS (ru_maxrss): {peak / mb:,.0f} MB; beyond the problem: "
          f"{(peak - held) / mb:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--msmt17", action="store_true",
                        help="time and peak memory of evaluate_features at MSMT17's size only")
    if parser.parse_args().msmt17:
        bench_msmt17()
        return
    cython = torchreid_cython()
    print(
        "reference (a):",
        "torchreid's compiled Cython evaluator"
        if cython
        else "torchreid Cython not importable; using this file's numpy transcription "
        "of its algorithm",
    )
    for name, make in (("trained", trained_problem), ("random", random_problem)):
        bench(name, make(), cython)
    bench_features(trained_features())


if __name__ == "__main__":
    main()
