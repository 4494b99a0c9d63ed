"""Centralised reference of the distributed clustering, and the types both implementations share.

Global ids. A memory is the pair (camera, label), label = row of that camera's memory bank. It is
encoded as one int64 ``gid = offset[camera] + label``, where the cameras are sorted ascending and
``offset`` is the running sum of the bank sizes before each camera. So gids run 0..T-1 with
T = total memories, the gids of one camera are contiguous, and gid order = (camera, label) order.
``GlobalIds`` holds (cameras, sizes) and travels as two int64 arrays (``to_arrays``).

Distances. Squared L2 computed in float64 from the float32 features as
``(|x|^2 + |y|^2) - 2 x.y`` (``squared_norms`` and ``pair_distances``); both implementations use
exactly these two functions, so integer-valued features give bit-identical distances, exact ties
included. On general float inputs the dot products come from different BLAS calls (one full Gram
matrix here, one block per node in the protocol), which may round differently in the last bit;
that can only matter where two candidate distances tie within a few ulps.

Ties. A memory's nearest memory in another camera is the first index of the minimum, i.e. the
lowest label wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

Banks = Mapping[int, np.ndarray]


@dataclass(frozen=True, eq=False)
class GlobalIds:
    """The (camera, label) <-> gid encoding: cameras ascending, gids contiguous per camera."""

    cameras: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray = field(init=False, repr=False)
    ends: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        cams = np.asarray(self.cameras)
        sizes = np.asarray(self.sizes)
        if cams.ndim != 1 or sizes.shape != cams.shape:
            raise ValueError(f"cameras {cams.shape} and sizes {sizes.shape} must be equal 1-D")
        if cams.size and not (_is_int(cams) and _is_int(sizes)):
            raise ValueError("cameras and sizes must be integer arrays")
        cams, sizes = cams.astype(np.int64), sizes.astype(np.int64)
        if np.any(np.diff(cams) <= 0):
            raise ValueError(f"cameras must be unique and ascending, got {cams.tolist()}")
        if np.any(sizes < 0):
            raise ValueError(f"bank sizes must be >= 0, got {sizes.tolist()}")
        ends = np.cumsum(sizes)
        object.__setattr__(self, "cameras", cams)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "ends", ends)
        object.__setattr__(self, "offsets", ends - sizes)

    @classmethod
    def from_sizes(cls, sizes: Mapping[int, int]) -> GlobalIds:
        cams = sorted(int(c) for c in sizes)
        return cls(np.array(cams, np.int64), np.array([int(sizes[c]) for c in cams], np.int64))

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> GlobalIds:
        """Inverse of ``to_arrays`` (e.g. from a Flower ArrayRecord turned into numpy)."""
        return cls(np.asarray(arrays["ids_cameras"]), np.asarray(arrays["ids_sizes"]))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"ids_cameras": self.cameras, "ids_sizes": self.sizes}

    @property
    def total(self) -> int:
        return int(self.ends[-1]) if self.ends.size else 0

    @property
    def nbytes(self) -> int:
        return int(self.cameras.nbytes + self.sizes.nbytes)

    def index(self, camera: int) -> int:
        """Position of ``camera`` in ``cameras``; ValueError for an unknown camera."""
        pos = int(np.searchsorted(self.cameras, camera))
        if pos >= self.cameras.size or self.cameras[pos] != camera:
            raise ValueError(f"unknown camera {camera}; cameras are {self.cameras.tolist()}")
        return pos

    def size(self, camera: int) -> int:
        return int(self.sizes[self.index(camera)])

    def range(self, camera: int) -> tuple[int, int]:
        """The half-open gid range [lo, hi) of ``camera``'s memories."""
        pos = self.index(camera)
        return int(self.offsets[pos]), int(self.ends[pos])

    def gids(self, camera: int, labels: np.ndarray | None = None) -> np.ndarray:
        lo, hi = self.range(camera)
        if labels is None:
            return np.arange(lo, hi, dtype=np.int64)
        return lo + np.asarray(labels, dtype=np.int64)

    def camera_index_of(self, gids: np.ndarray) -> np.ndarray:
        """Position in ``cameras`` of each gid's camera (zero-size cameras are skipped)."""
        return np.searchsorted(self.ends, np.asarray(gids, np.int64), side="right")

    def camera_of(self, gids: np.ndarray) -> np.ndarray:
        return self.cameras[self.camera_index_of(gids)]

    def label_of(self, gids: np.ndarray) -> np.ndarray:
        gids = np.asarray(gids, np.int64)
        return gids - self.offsets[self.camera_index_of(gids)]

    def name(self, gid: int) -> str:
        """Human-readable ``camera:label`` for error messages."""
        return f"{int(self.camera_of(gid))}:{int(self.label_of(gid))}"

    def split(self, flat: np.ndarray) -> dict[int, np.ndarray]:
        """Per-camera views of a gid-ordered array."""
        bounds = zip(self.cameras, self.offsets, self.ends, strict=True)
        return {int(c): flat[lo:hi] for c, lo, hi in bounds}


@dataclass(frozen=True, eq=False)
class ClusterResult:
    """Outcome of a clustering run; identical fields from both implementations.

    ``labels[camera][label]`` is the cluster id (smallest gid of the component); ``cluster_of``
    is the same in gid order. ``mutual_edges`` / ``kept_edges`` are (E, 2) int64 gid pairs with
    u < v, sorted: the step-1 graph and the graph after the triangle filter.
    """

    ids: GlobalIds
    labels: dict[int, np.ndarray]
    cluster_of: np.ndarray
    mutual_edges: np.ndarray
    kept_edges: np.ndarray
    edges_mutual: int
    edges_kept: int
    clusters: int

    @classmethod
    def build(cls, ids: GlobalIds, cluster_of: np.ndarray, mutual_edges: np.ndarray,
              kept_edges: np.ndarray) -> ClusterResult:
        cluster_of = np.asarray(cluster_of, np.int64)
        mutual, kept = canonical_edges(mutual_edges), canonical_edges(kept_edges)
        return cls(ids=ids, labels=ids.split(cluster_of), cluster_of=cluster_of,
                   mutual_edges=mutual, kept_edges=kept, edges_mutual=len(mutual),
                   edges_kept=len(kept), clusters=int(np.unique(cluster_of).size))

    def class_index(self) -> dict[int, np.ndarray]:
        """Cluster ids renumbered 0..clusters-1 (ascending), per camera: classifier targets."""
        _, dense = np.unique(self.cluster_of, return_inverse=True)
        return self.ids.split(dense.astype(np.int64))

    def summary(self) -> dict[str, int]:
        return {"memories": self.ids.total, "edges_mutual": self.edges_mutual,
                "edges_kept": self.edges_kept, "clusters": self.clusters}


def canonical_edges(edges: np.ndarray) -> np.ndarray:
    """Undirected edges as unique (u, v) rows with u < v, sorted lexicographically."""
    e = np.asarray(edges, np.int64).reshape(-1, 2)
    e = np.sort(e, axis=1)
    return np.unique(e, axis=0) if len(e) else e


def check_alpha(alpha: int) -> int:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, np.integer)) or alpha < 0:
        raise ValueError(f"alpha must be an int >= 0, got {alpha!r}")
    return int(alpha)


def validate_banks(banks: Banks) -> tuple[GlobalIds, dict[int, np.ndarray]]:
    """Check the banks and return the gid encoding plus C-contiguous float32 copies/views.

    Every bank must be 2-D (rows, d) with the same d >= 1 and finite values; 0 rows is allowed.
    Features are used as float32 (what travels), so both implementations see the same values.
    """
    if not isinstance(banks, Mapping) or not banks:
        raise ValueError("banks must be a non-empty mapping camera -> (rows, d) array")
    out: dict[int, np.ndarray] = {}
    width = None
    for cam, bank in banks.items():
        if isinstance(cam, bool) or not isinstance(cam, (int, np.integer)):
            raise ValueError(f"camera ids must be ints, got {cam!r}")
        arr = np.asarray(bank)
        if arr.ndim != 2:
            raise ValueError(f"camera {cam}: bank must be 2-D (rows, d), got shape {arr.shape}")
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"camera {cam}: bank must be real numbers, got dtype {arr.dtype}")
        width = arr.shape[1] if width is None else width
        if arr.shape[1] != width or width < 1:
            raise ValueError(f"camera {cam}: bank has d={arr.shape[1]}, expected d={width} "
                             "(all banks need the same d >= 1)")
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ValueError(f"camera {cam}: bank has non-finite values (NaN/inf, or overflow "
                             "when cast to float32)")
        out[int(cam)] = arr
    ids = GlobalIds.from_sizes({c: len(b) for c, b in out.items()})
    return ids, out


def squared_norms(x64: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Row-wise |x|^2 in float64.

    Each row is reduced on its own (numpy's pairwise sum over the row), so a row's value does
    not depend on which array or chunk it sits in; chunking keeps the temporaries in cache.
    """
    out = np.empty(len(x64), np.float64)
    for start in range(0, len(x64), chunk):
        block = x64[start:start + chunk]
        out[start:start + chunk] = np.add.reduce(block * block, axis=1)
    return out


def pair_distances(a64: np.ndarray, b64: np.ndarray, na: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """Squared L2 (|a|^2 + |b|^2) - 2 a.b in float64: the one formula of both implementations."""
    return (na[:, None] + nb[None, :]) - 2.0 * (a64 @ b64.T)


def cluster_centralised(banks: Banks, alpha: int,
                        max_distance: float | None = None) -> ClusterResult:
    """Mutual top-1 -> triangle filter -> connected components, all on one machine.

    ``max_distance`` (squared L2; None = no limit) drops mutual top-1 pairs that are farther
    apart: two memories that are each other's nearest can still be far apart when a person
    has no true match in the other camera.
    """
    ids, feats = validate_banks(banks)
    alpha = check_alpha(alpha)
    total = ids.total
    if total == 0:
        empty = np.empty((0, 2), np.int64)
        return ClusterResult.build(ids, np.empty(0, np.int64), empty, empty)
    x = np.concatenate([feats[int(c)] for c in ids.cameras]).astype(np.float64)
    norms = squared_norms(x)
    dist = pair_distances(x, x, norms, norms)
    nearest = _nearest_per_camera(dist, ids)
    mutual = _mutual_edges(nearest, ids)
    if max_distance is not None:
        mutual = mutual[dist[mutual[:, 0], mutual[:, 1]] <= max_distance]
    kept = mutual[_common_neighbour_counts(mutual, total) >= alpha]
    return ClusterResult.build(ids, _component_minima(kept, total), mutual, kept)


def _nearest_per_camera(dist: np.ndarray, ids: GlobalIds) -> np.ndarray:
    """(T, M) gid of each memory's nearest memory in each camera; -1 for own / empty cameras."""
    nearest = np.full((ids.total, ids.cameras.size), -1, np.int64)
    for k, (lo, hi) in enumerate(zip(ids.offsets, ids.ends, strict=True)):
        if hi > lo:
            nearest[:, k] = lo + np.argmin(dist[:, lo:hi], axis=1)
            nearest[lo:hi, k] = -1
    return nearest


def _mutual_edges(nearest: np.ndarray, ids: GlobalIds) -> np.ndarray:
    """Edges (x, y), x < y, where y is x's nearest in cam(y) and x is y's nearest in cam(x)."""
    total, cams = nearest.shape
    own_cam = ids.camera_index_of(np.arange(total))
    x = np.repeat(np.arange(total), cams)
    y = nearest.ravel()
    valid = y >= 0
    x, y = x[valid], y[valid]
    back = nearest[y, own_cam[x]]
    mutual = (back == x) & (x < y)
    return np.stack([x[mutual], y[mutual]], axis=1)


def _common_neighbour_counts(edges: np.ndarray, total: int) -> np.ndarray:
    """|N(u) ∩ N(v)| for each edge (u, v), from the sparse product A @ A."""
    if len(edges) == 0:
        return np.empty(0, np.int64)
    u, v = edges[:, 0], edges[:, 1]
    ones = np.ones(2 * len(edges), np.int64)
    adj = sparse.csr_matrix((ones, (np.r_[u, v], np.r_[v, u])), shape=(total, total))
    common = (adj @ adj).tocsr()
    return np.asarray(common[u, v]).ravel().astype(np.int64)


def _component_minima(edges: np.ndarray, total: int) -> np.ndarray:
    """Per memory, the smallest gid of its connected component."""
    ones = np.ones(len(edges), np.int8)
    graph = sparse.csr_matrix((ones, (edges[:, 0], edges[:, 1])), shape=(total, total))
    _, comp = csgraph.connected_components(graph, directed=False)
    _, first = np.unique(comp, return_index=True)  # components are numbered 0..k-1
    return first[comp].astype(np.int64)


def _is_int(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "iu"
