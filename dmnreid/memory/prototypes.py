"""Cluster-prototype memory for the incremental walk (``incremental-loss = "prototype"``).

With one tracklet per identity per camera and a head re-initialised at every hop, global
labels inside one camera's hop only rename its local labels (issue 17): nothing a hop learns
from them reaches across cameras. A memory of cluster centroids that travels with the
walking weights does: a camera's frames are pulled towards how the *other* cameras see the
same cluster (camera-aware centroids, as CAP and ICE do centrally), and each camera refreshes
its own entries by momentum before the memory moves on. The memory holds feature vectors only,
which may leave a node.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dmnreid.reid.model import ReidNet

NO_CAMERA = -1  # an entry that stands for its cluster in every camera


@dataclass(frozen=True, eq=False)
class PrototypeMemory:
    """``vectors[e]`` is the L2-normalised centroid of cluster ``clusters[e]`` as camera
    ``cameras[e]`` sees it (``NO_CAMERA``: over all cameras)."""

    vectors: np.ndarray  # (E, d) float32
    clusters: np.ndarray  # (E,) int64
    cameras: np.ndarray  # (E,) int64

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or not (len(self.vectors) == len(self.clusters)
                                          == len(self.cameras)):
            raise ValueError(f"memory of {self.vectors.shape} vectors, {len(self.clusters)} "
                             f"clusters and {len(self.cameras)} cameras")

    @property
    def camera_aware(self) -> bool:
        return bool(len(self.cameras)) and bool((self.cameras != NO_CAMERA).all())

    def to_state(self) -> OrderedDict[str, torch.Tensor]:
        """The memory as it travels (like a head: a record of tensors, floats in the run's
        transfer dtype); the ids never change along the walk."""
        return OrderedDict((("vectors", torch.from_numpy(self.vectors)),
                            ("clusters", torch.from_numpy(self.clusters)),
                            ("cameras", torch.from_numpy(self.cameras))))

    @classmethod
    def from_state(cls, state: Mapping[str, torch.Tensor]) -> PrototypeMemory:
        missing = [k for k in ("vectors", "clusters", "cameras") if k not in state]
        if missing:
            raise ValueError(f"prototype memory without {missing}")
        return cls(state["vectors"].float().numpy(), state["clusters"].long().numpy(),
                   state["cameras"].long().numpy())


def _normalised(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


def build_memory(banks: Mapping[int, np.ndarray], classes: Mapping[int, np.ndarray],
                 camera_aware: bool) -> PrototypeMemory:
    """The centroids of the global clusters from the cameras' memory banks.

    ``banks[camera]`` has one row per local tracklet, ``classes[camera]`` its global class.
    An entry is the normalised mean of its members' rows: per (cluster, camera) when
    ``camera_aware``, else per cluster. Entries are sorted by (cluster, camera).
    """
    cameras = sorted(banks)
    if sorted(classes) != cameras:
        raise ValueError(f"banks of cameras {cameras} but classes of {sorted(classes)}")
    rows = np.concatenate([np.asarray(banks[c], dtype=np.float64) for c in cameras])
    cluster = np.concatenate([np.asarray(classes[c], dtype=np.int64) for c in cameras])
    camera = np.concatenate([np.full(len(banks[c]), c, dtype=np.int64) for c in cameras])
    if len(cluster) != len(rows):
        raise ValueError("every memory-bank row needs its global class")
    keys = np.stack([cluster, camera if camera_aware else np.full_like(camera, NO_CAMERA)], 1)
    unique, index = np.unique(keys, axis=0, return_inverse=True)
    sums = np.zeros((len(unique), rows.shape[1]))
    np.add.at(sums, index.ravel(), rows)
    return PrototypeMemory(_normalised(sums), unique[:, 0].copy(), unique[:, 1].copy())


def positives(memory: PrototypeMemory, camera: int, cluster: np.ndarray) -> torch.Tensor:
    """(B, E) bool: the entries each sample of ``camera`` is pulled towards.

    Camera-aware: its cluster's entries in the other cameras, or its own entry where no other
    camera saw the cluster. Otherwise: its cluster's entry.
    """
    same = torch.from_numpy(np.asarray(cluster)[:, None] == memory.clusters[None, :])
    if not memory.camera_aware:
        return same
    elsewhere = same & torch.from_numpy(memory.cameras != camera)[None, :]
    alone = ~elsewhere.any(1, keepdim=True)
    return torch.where(alone, same, elsewhere)


def candidates(memory: PrototypeMemory, camera: int, mask: torch.Tensor,
               negatives: str) -> torch.Tensor:
    """(B, E) bool: the entries each sample's softmax runs over. ``all``: every entry.
    ``camera``: the positives and this camera's own entries only. Inside a camera the local
    labels are the truth (one tracklet per person), so its entries are true negatives; an
    entry of another camera that the clustering left unmerged may be the same person (a
    false negative the loss would push away)."""
    if negatives == "all":
        return torch.ones_like(mask)
    if not memory.camera_aware:
        raise ValueError("negatives from this camera only need camera-aware entries")
    return mask | torch.from_numpy(memory.cameras == camera)[None, :]


def prototype_loss(features: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor,
                   temperature: float, among: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of -log of the softmax mass (over the entries in ``among``, all by
    default) on the positives: a temperature-scaled non-parametric classifier with the
    centroids as its weights."""
    logits = nn.functional.normalize(features, dim=1) @ vectors.T / temperature
    if among is not None:
        logits = logits.masked_fill(~among, float("-inf"))
    log_all = torch.logsumexp(logits, dim=1)
    log_pos = torch.logsumexp(logits.masked_fill(~mask, float("-inf")), dim=1)
    return (log_all - log_pos).mean()


def refreshed(memory: PrototypeMemory, camera: int, bank: np.ndarray, classes: np.ndarray,
              momentum: float) -> PrototypeMemory:
    """The memory after a hop on ``camera``: each entry this camera owns (its own entries, or,
    without camera awareness, its clusters') moves to ``momentum * old + (1 - momentum) *
    fresh`` and is normalised again; ``bank`` is this camera's fresh memory bank."""
    fresh = build_memory({camera: bank}, {camera: classes}, memory.camera_aware)
    lookup = {(int(k), int(c)): e for e, (k, c) in
              enumerate(zip(memory.clusters, memory.cameras, strict=True))}
    vectors = memory.vectors.astype(np.float64)
    for vector, cluster, cam in zip(fresh.vectors, fresh.clusters, fresh.cameras, strict=True):
        entry = lookup.get((int(cluster), int(cam)))
        if entry is None:
            raise ValueError(f"camera {camera}'s cluster {cluster} has no entry in the memory")
        vectors[entry] = momentum * vectors[entry] + (1.0 - momentum) * vector
    return PrototypeMemory(_normalised(vectors), memory.clusters, memory.cameras)


def prototype_objective(memory: PrototypeMemory, camera: int, clusters: np.ndarray,
                        temperature: float, device: torch.device, negatives: str = "all"
                        ) -> Callable[[ReidNet, torch.Tensor, torch.Tensor],
                                      tuple[torch.Tensor, torch.Tensor]]:
    """The hop's objective on ``camera``: targets index ``clusters`` (the camera's distinct
    global classes); a prediction is correct when the nearest candidate entry is a positive."""
    vectors = torch.from_numpy(memory.vectors).to(device)
    table = positives(memory, camera, clusters)
    among = candidates(memory, camera, table, negatives).to(device)
    table = table.to(device)

    def objective(model: ReidNet, x: torch.Tensor, y: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        features = model.features(x)
        mask, allowed = table[y], among[y]
        loss = prototype_loss(features, vectors, mask, temperature, allowed)
        similarity = (features.detach() @ vectors.T).masked_fill(~allowed, float("-inf"))
        return loss, mask.gather(1, similarity.argmax(1, keepdim=True)).sum()

    return objective
