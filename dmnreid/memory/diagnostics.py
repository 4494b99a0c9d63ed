"""How good a clustering is, given the true identities (only the synthetic/labelled data has them).

Pairwise scores count pairs of memories: a pair is predicted positive when both memories share a
cluster, and truly positive when both share an identity. Everything comes from the contingency
table (cluster x identity, via np.unique of the cell codes), never from the O(n^2) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cluster_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float | int]:
    """Pairwise precision / recall / F-score and NMI of ``pred`` against ``truth``.

    Conventions: precision is 1.0 when no pair is predicted together (all singletons: nothing
    claimed, nothing wrong); recall is 1.0 when no pair shares an identity; F is 0.0 when both
    precision and recall are 0. NMI uses the arithmetic mean of the two entropies (sklearn's
    default), is 1.0 when both labelings are a single cluster and 0.0 when the mutual
    information is 0 otherwise.
    """
    pred, truth = np.asarray(pred).ravel(), np.asarray(truth).ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"pred has {pred.size} labels, truth {truth.size}")
    cells = _contingency(pred, truth)
    together = _pairs(cells.counts)
    pred_pairs, true_pairs = _pairs(cells.pred_sizes), _pairs(cells.true_sizes)
    precision = together / pred_pairs if pred_pairs else 1.0
    recall = together / true_pairs if true_pairs else 1.0
    denom = precision + recall
    return {
        "memories": int(pred.size),
        "clusters": int(cells.pred_sizes.size),
        "true_ids": int(cells.true_sizes.size),
        "pairs_predicted": int(pred_pairs),
        "pairs_true": int(true_pairs),
        "pairs_correct": int(together),
        "precision": float(precision),
        "recall": float(recall),
        "fscore": float(2 * precision * recall / denom) if denom else 0.0,
        "nmi": _nmi(cells, pred.size),
    }


@dataclass(frozen=True)
class _Cells:
    """Non-zero cells (row = cluster, col = identity, count) and the margins."""

    rows: np.ndarray
    cols: np.ndarray
    counts: np.ndarray
    pred_sizes: np.ndarray
    true_sizes: np.ndarray


def _contingency(pred: np.ndarray, truth: np.ndarray) -> _Cells:
    _, p = np.unique(pred, return_inverse=True)
    _, t = np.unique(truth, return_inverse=True)
    p, t = p.ravel().astype(np.int64), t.ravel().astype(np.int64)
    n_true = int(t.max()) + 1 if t.size else 0
    cell, counts = np.unique(p * max(n_true, 1) + t, return_counts=True)
    return _Cells(cell // max(n_true, 1), cell % max(n_true, 1), counts.astype(np.int64),
                  np.bincount(p).astype(np.int64), np.bincount(t).astype(np.int64))


def _pairs(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _entropy(sizes: np.ndarray, n: int) -> float:
    p = sizes / n
    return float(-(p * np.log(p)).sum())


def _nmi(cells: _Cells, n: int) -> float:
    a, b = cells.pred_sizes, cells.true_sizes
    if a.size == b.size and a.size <= 1:
        return 1.0  # both labelings keep everything together (or there is nothing): a match
    outer = a[cells.rows].astype(np.float64) * b[cells.cols]
    mi = float((cells.counts / n * np.log(n * cells.counts / outer)).sum())
    if mi <= 0.0:
        return 0.0
    return float(mi / ((_entropy(a, n) + _entropy(b, n)) / 2))
