"""Server-side evaluation on the partition's query/gallery (Market-1501 protocol)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dmnreid.data_prep.partition import EVALUATOR_DIR
from dmnreid.reid.evaluate import euclidean_distmat, evaluate_rank, pool_tracklet_features
from dmnreid.reid.evaluate import summarise as summarise_rank
from dmnreid.reid.images import cached_decode
from dmnreid.reid.model import ReidNet
from dmnreid.reid.train import extract_features


class Evaluator:
    """Holds the decoded query and gallery images; scores any model on them."""

    def __init__(self, partition_dir: Path, height: int, width: int,
                 progress: bool = False) -> None:
        folder = partition_dir / EVALUATOR_DIR
        self.splits = {}
        for split in ("query", "gallery"):
            table = pd.read_csv(folder / f"{split}.csv")
            images = cached_decode(list(table["frame"]), height, width, folder / "cache", split,
                                   progress)
            items = table.groupby("item", sort=True).first()
            self.splits[split] = (images, table["item"].to_numpy(),
                                  items["pid"].to_numpy(), items["camid"].to_numpy())

    def features(self, model: ReidNet, split: str) -> np.ndarray:
        """One feature per item: frame features averaged per tracklet (video), else per image."""
        images, item_of_frame, _, _ = self.splits[split]
        frames = extract_features(model, images)
        return pool_tracklet_features(frames, item_of_frame)

    def evaluate(self, model: ReidNet) -> dict[str, float]:
        qf, gf = self.features(model, "query"), self.features(model, "gallery")
        _, _, q_pids, q_cams = self.splits["query"]
        _, _, g_pids, g_cams = self.splits["gallery"]
        cmc, mean_ap = evaluate_rank(euclidean_distmat(qf, gf), q_pids, g_pids, q_cams, g_cams)
        return summarise_rank(cmc, mean_ap)
