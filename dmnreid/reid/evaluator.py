"""Query/gallery evaluation (Market-1501 protocol), one camera at a time.

Features are always computed camera by camera, by :func:`embed_camera`, whether the server
embeds every camera's images itself (``eval-mode = "server"``) or each node embeds its own
(``"federated"``): the same function on the same images in the same batches, so both give the
same numbers. :func:`rank` then puts the cameras' items back in item order and scores them
without a query x gallery matrix (``evaluate_features``).
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
from dmnreid.reid.evaluate import evaluate_features, pool_tracklet_features
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
    cmc, mean_ap = evaluate_features(query.features, gallery.features, query.pids,
                                     gallery.pids, query.camids, gallery.camids)
    return summarise_rank(cmc, mean_ap)


class Evaluator:
    """The server's copy of the query and gallery images (``eval-mode = "server"``).

    It keeps only the tables. Each evaluation reads one camera's decoded query and gallery
    frames back from that camera's cache files (written at construction), embeds them and
    drops them before the next camera: at most one camera's images are in memory (all of
    MSMT17's test images at 256x128 are 9 GB of uint8), for one read of the cache files per
    evaluation. A camera's frames are its rows of the tables in table order, so its images,
    batches and features are those of decoding the whole split and taking the camera's rows.
    """

    def __init__(self, partition_dir: Path, height: int, width: int,
                 progress: bool = False, device: torch.device = CPU) -> None:
        self.device, self.height, self.width, self.progress = device, height, width, progress
        self.folder = partition_dir / EVALUATOR_DIR
        tables = {split: pd.read_csv(self.folder / f"{split}.csv") for split in SPLITS}
        cameras = sorted({int(c) for table in tables.values() for c in table["camid"]})
        self.tables = {c: {split: table[table["camid"] == c] for split, table in tables.items()}
                       for c in cameras}
        for camera in cameras:  # decode now: an unreadable image stops the run at its start
            self.frames(camera)

    def frames(self, camera: int) -> dict[str, SplitFrames]:
        """One camera's decoded query and gallery frames, through its own cache files."""
        return {split: SplitFrames.read(table, list(table["frame"]), self.height, self.width,
                                        self.folder / "cache", f"{split}-camera{camera}",
                                        self.progress)
                for split, table in self.tables[camera].items()}

    def _embed_camera(self, model: ReidNet, camera: int, bn_mode: str, adapt_images: int
                      ) -> dict[str, ItemFeatures]:
        frames = self.frames(camera)  # dropped on return
        return embed_camera(model, frames["query"], frames["gallery"], bn_mode, adapt_images,
                            self.device)

    def embed(self, model: ReidNet, bn_mode: str, adapt_images: int
              ) -> dict[int, dict[str, ItemFeatures]]:
        return {c: self._embed_camera(model, c, bn_mode, adapt_images) for c in self.tables}

    def evaluate(self, model: ReidNet, bn_mode: str = "shared",
                 adapt_images: int = 0) -> dict[str, float]:
        return rank(self.embed(model, bn_mode, adapt_images).values())
