"""The full ranking behind a model's scores: the evaluation keeps only rank-1/5/10 and mAP,
while inspecting a model (notebooks/explore_run.ipynb) needs the whole CMC curve and each
query's ranked gallery."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from dmnreid.reid.evaluate import distance_row, evaluate_features, valid_queries
from dmnreid.reid.evaluator import ItemFeatures, joined_splits


@dataclass(frozen=True)
class Ranking:
    """Every camera's query and gallery items, joined in item order as the run's scores join
    them. Distances are computed when asked for, as the scores compute them, and never held as
    a whole queries x gallery matrix."""

    query: ItemFeatures
    gallery: ItemFeatures

    @classmethod
    def of(cls, cameras: Iterable[dict[str, ItemFeatures]]) -> Ranking:
        """From the per-camera features that ``Evaluator.embed`` (or the nodes) give."""
        return cls(*joined_splits(cameras))

    def cmc(self, max_rank: int = 50) -> tuple[np.ndarray, float]:
        """CMC (fractions, up to ``max_rank`` or the gallery size) and mAP, by the protocol and
        function the run's scores come from, so they agree with them."""
        return evaluate_features(self.query.features, self.gallery.features, self.query.pids,
                                 self.gallery.pids, self.query.camids, self.gallery.camids,
                                 min(max_rank, len(self.gallery.pids)))

    def ranked(self, query: int, top: int = 10) -> np.ndarray:
        """Gallery indices of query ``query``'s first ``top`` answers, nearest first (ties by
        gallery index), without those the protocol ignores: the same person seen by the
        query's own camera. Costs one 256-query chunk of distances."""
        distances = distance_row(self.query.features, self.gallery.features, query)
        order = np.argsort(distances, kind="stable")
        ignored = ((self.gallery.pids[order] == self.query.pids[query])
                   & (self.gallery.camids[order] == self.query.camids[query]))
        return order[~ignored][:top]

    def answerable(self) -> np.ndarray:
        """Indices of the queries the CMC counts: whose person another camera's gallery holds.
        From the ids alone, O((Q + G) log G): no distances, no queries x gallery matrix."""
        return np.flatnonzero(valid_queries(self.query.pids, self.gallery.pids,
                                            self.query.camids, self.gallery.camids))
