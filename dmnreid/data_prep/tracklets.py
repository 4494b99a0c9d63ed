"""Tracklet sampling as in TAUDL/UTAL (Li et al. 2018), the paper's training-data setting.

Image datasets: all images of one identity in one camera form one tracklet. Video datasets
(MARS): one randomly chosen tracklet per identity per camera. Each camera then numbers its
tracklets 0..N_m-1 (local labels) in a seeded random order, so a local label carries no trace of
the ground-truth identity order.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from dmnreid.data_prep.records import DatasetError, ReidDataset, Sample


@dataclass(frozen=True)
class Tracklet:
    """One training tracklet of one camera. ``pid`` is ground truth, for diagnostics only."""

    camid: int
    label: int
    frames: tuple[str, ...]
    pid: int


def _group(samples: list[Sample]) -> dict[tuple[int, int], list[Sample]]:
    groups: dict[tuple[int, int], list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[(sample.camid, sample.pid)].append(sample)
    return groups


def sample_tracklets(dataset: ReidDataset, seed: int = 0) -> dict[int, list[Tracklet]]:
    """Return each camera's training tracklets, labelled 0..N_m-1, deterministically from seed."""
    if not dataset.train:
        raise DatasetError(f"{dataset.root}: the {dataset.name} train split holds no images")
    rng = np.random.default_rng(seed)
    per_camera: dict[int, list[tuple[int, tuple[str, ...]]]] = defaultdict(list)
    for (camid, pid), samples in sorted(_group(dataset.train).items()):
        if dataset.video:
            chosen = samples[int(rng.integers(len(samples)))]
            frames = chosen.frames
        else:
            frames = tuple(sorted(f for s in samples for f in s.frames))
        per_camera[camid].append((pid, frames))
    result: dict[int, list[Tracklet]] = {}
    for camid in sorted(per_camera):
        entries = per_camera[camid]
        order = rng.permutation(len(entries))
        result[camid] = [
            Tracklet(camid=camid, label=label, frames=entries[i][1], pid=entries[i][0])
            for label, i in enumerate(order)
        ]
    return result
