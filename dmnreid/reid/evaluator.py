"""Query/gallery evaluation (Market-1501 protocol), one camera at a time.

Features are always computed camera by camera, by :func:`embed_camera`, whether the server
embeds every camera's images itself (``eval-mode = "server"``) or each node embeds its own
(``"federated"``): the same function on the same images in the same batches, so both give the
same numbers. :func:`rank` then puts the cameras' items back in item order and scores them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dmnreid.compute import CPU
from dmnreid.data_prep.partition import EVALUATOR_DIR
from dmnreid.reid.camera_bn import adapted_copy
from dmnreid.reid.evaluate import euclidean_distmat, evaluate_rank, pool_tracklet_features
from dmnreid.reid.evaluate import summarise as summarise_rank
from dmnreid.reid.images import cached_decode
from dmnreid.reid.model import ReidNet
from dmnreid.reid.train import extract_features

SPLITS = ("query", "gallery")
ITEM_FIELDS = ("items", "pids", "camids")


@dataclass(frozen=True)
class SplitFrames:
    """Decoded frames of a query or gallery set with each frame's item, pid and camera."""

    images: torch.Tensor
    items: np.ndarray
    pids: np.ndarray
    camids: np.ndarray

    @classmethod
    def read(cls, table: pd.DataFrame, frames: list[Path | str], height: int, width: int,
             cache: Path, name: str, progress: bool = False) -> SplitFrames:
        """From a table with columns item, pid, camid (one row per frame, paths given)."""
        return cls(cached_decode(frames, height, width, cache, name, progress),
                   table["item"].to_numpy(np.int64), table["pid"].to_numpy(np.int64),
                   table["camid"].to_numpy(np.int64))

    def of_camera(self, camera: int) -> SplitFrames:
        keep = self.camids == camera
        return SplitFrames(self.images[torch.from_numpy(keep)], self.items[keep],
                          self.pids[keep], self.camids[keep])


@dataclass(frozen=True)
class ItemFeatures:
    """One feature per item (frames averaged per tracklet): what a node may send back."""

    items: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    features: np.ndarray

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}-{k}": getattr(self, k) for k in (*ITEM_FIELDS, "features")}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> ItemFeatures:
        missing = [k for k in (*ITEM_FIELDS, "features") if f"{prefix}-{k}" not in arrays]
        if missing:
            raise ValueError(f"embedding without {[f'{prefix}-{k}' for k in missing]}")
        parts = {k: np.asarray(arrays[f"{prefix}-{k}"]) for k in (*ITEM_FIELDS, "features")}
        sizes = {len(v) for v in parts.values()}
        if len(sizes) != 1 or parts["features"].ndim != 2:
            raise ValueError(f"{prefix} embedding: arrays of different lengths or shapes")
        return cls(**{k: v.astype(np.int64) for k, v in parts.items() if k != "features"},
                   features=parts["features"].astype(np.float32))


def embed_items(model: ReidNet, frames: SplitFrames, device: torch.device = CPU
                ) -> ItemFeatures:
    """L2-normalised frame features averaged per item, items in ascending order."""
    items, firsts, index = np.unique(frames.items, return_index=True, return_inverse=True)
    if len(items) == 0:
        features = np.zeros((0, model.feature_dim), dtype=np.float32)
    else:
        features = pool_tracklet_features(
            extract_features(model, frames.images, device=device), index)
    return ItemFeatures(items, frames.pids[firsts], frames.camids[firsts], features)


def embed_camera(model: ReidNet, query: SplitFrames, gallery: SplitFrames, bn_mode: str,
                 adapt_images: int, device: torch.device = CPU) -> dict[str, ItemFeatures]:
    """One camera's query and gallery features, computed on ``device``.

    ``bn_mode = "camera"``: under BN statistics estimated on this camera's query and gallery
    images together (unlabeled: test-time adaptation); ``"shared"``: the model's own.
    """
    if bn_mode == "camera" and len(query.images) + len(gallery.images):
        model = adapted_copy(model, torch.cat([query.images, gallery.images]), adapt_images,
                             device=device)
    return {"query": embed_items(model, query, device),
            "gallery": embed_items(model, gallery, device)}


def _joined(parts: Iterable[ItemFeatures]) -> ItemFeatures:
    parts = list(parts)
    items = np.concatenate([p.items for p in parts])
    order = np.argsort(items, kind="stable")
    if len(np.unique(items)) != len(items):
        raise ValueError("an item was embedded by more than one camera")
    return ItemFeatures(items[order], *(np.concatenate([getattr(p, k) for p in parts])[order]
                                        for k in ("pids", "camids", "features")))


def joined_splits(cameras: Iterable[dict[str, ItemFeatures]]
                  ) -> tuple[ItemFeatures, ItemFeatures]:
    """Every camera's query items and gallery items, each joined in item order."""
    cameras = list(cameras)
    query, gallery = (_joined(c[split] for c in cameras) for split in SPLITS)
    return query, gallery


def rank(cameras: Iterable[dict[str, ItemFeatures]]) -> dict[str, float]:
    """CMC rank-1/5/10 and mAP over every camera's items, in item order."""
    query, gallery = joined_splits(cameras)
    cmc, mean_ap = evaluate_rank(euclidean_distmat(query.features, gallery.features),
                                 query.pids, gallery.pids, query.camids, gallery.camids)
    return summarise_rank(cmc, mean_ap)


class Evaluator:
    """The server's copy of the query and gallery images (``eval-mode = "server"``)."""

    def __init__(self, partition_dir: Path, height: int, width: int,
                 progress: bool = False, device: torch.device = CPU) -> None:
        self.device = device
        folder = partition_dir / EVALUATOR_DIR
        frames = {}
        for split in SPLITS:
            table = pd.read_csv(folder / f"{split}.csv")
            frames[split] = SplitFrames.read(table, list(table["frame"]), height, width,
                                             folder / "cache", split, progress)
        cameras = sorted({int(c) for f in frames.values() for c in f.camids})
        # split once: every evaluation embeds camera by camera, as the nodes would
        self.cameras = {c: {s: frames[s].of_camera(c) for s in SPLITS} for c in cameras}

    def embed(self, model: ReidNet, bn_mode: str, adapt_images: int
              ) -> dict[int, dict[str, ItemFeatures]]:
        return {c: embed_camera(model, split["query"], split["gallery"], bn_mode, adapt_images,
                                self.device)
                for c, split in self.cameras.items()}

    def evaluate(self, model: ReidNet, bn_mode: str = "shared",
                 adapt_images: int = 0) -> dict[str, float]:
        return rank(self.embed(model, bn_mode, adapt_images).values())
