"""The distributed clustering protocol: node-side pure functions, server relaying, a driver.

Every decision is taken by a node function (but for ``top1_on="server"``, where the server finds
the mutual top-1 edges itself); the server only relays arrays, checks replies and counts. One
message per node per round; rounds after the memory round:

- ``top1``: the camera pairs are dealt to nodes in balanced blocks (``assign_pairs``): node r
  gets the banks of the cameras its pairs need (about sqrt(2M) banks, ``route_top1``) and
  returns the mutual top-1 edges of exactly those pairs, each judged from its float64 distance
  block in both directions, so no pair is judged twice. Reply: ``Pairs`` (owner = gid in the
  pair's lower camera, member = gid in its higher camera).
- ``triangle``: node m gets the step-1 edges touching its memories and the step-1 neighbour
  lists of the memories adjacent to them (``route_triangle``); it returns the surviving
  neighbour lists of its memories ((x, y) survives iff |N(x) ∩ N(y)| >= alpha; both endpoint
  nodes count from the same relayed lists, so they agree: ``check_triangle_replies`` verifies
  it) and each memory's first label, the smallest gid among itself and its kept neighbours.
- ``flood`` (repeated): node m gets its memories' current labels and the labels the server
  relays to each of them (``route_flood``): those of its kept neighbours (``reach="edges"``:
  a label travels one edge per round), and with ``reach="sets"`` also those that let the
  memories sharing a label merge as one set (rounds grow with the log of a component's
  size). It returns the smallest of each. A label is always a gid of the memory's
  component and never grows, so once every kept edge joins equal labels (``flood_settled``)
  each label is its component's smallest gid: the labels of the centralised reference, with
  either reach.

A camera lost after the memory round (no usable reply) is dropped with its edges and the
protocol goes on without it (``run_protocol``): mutual top-1 of a camera pair depends on the
two banks only, so the step-1 edges of the other pairs are those a run without the lost camera
finds (a lost top-1 node's pairs are dealt again); the triangle relation counts common
neighbours, which may lie in the lost camera, so it is always judged again, from the triangle
round on. The labels are exactly those of the protocol run on the remaining cameras.

All payloads are flat numpy arrays: gids as int64, features float32. Every dataclass below has
``to_arrays()`` / ``from_arrays()`` with fixed key names, for Flower ArrayRecords; scalars
(alpha, the limit on distances) travel in a ConfigRecord. Gids: see ``reference.GlobalIds``
(the node needs it: send ``ids.to_arrays()`` every round).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dmnreid.memory.reference import (
    Banks,
    ClusterResult,
    GlobalIds,
    check_alpha,
    pair_distances,
    squared_norms,
    validate_banks,
)

REACHES = ("edges", "sets")
TOP1_ON = ("nodes", "server")


class ProtocolError(ValueError):
    """A payload or node reply that breaks the protocol (names the camera/node concerned)."""


class AllCamerasLost(ProtocolError):
    """Every camera was lost in the rounds after the memory round (``missing`` says why)."""

    def __init__(self, missing: Mapping[int, Mapping[str, str]]) -> None:
        super().__init__("every camera was lost: " + "; ".join(
            f"camera {c}: round {m['round']}: {m['cause']}" for c, m in sorted(missing.items())))
        self.missing = dict(missing)


# ---------------------------------------------------------------------------------------------
# payload types


@dataclass(frozen=True, eq=False)
class Pairs:
    """A flat list of (owner gid, member gid) pairs: edges, neighbour lists, relayed labels.

    Layout: two int64 1-D arrays of equal length; pair k is (owner[k], member[k]).
    """

    owner: np.ndarray
    member: np.ndarray

    @classmethod
    def empty(cls) -> Pairs:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64))

    @classmethod
    def from_keys(cls, keys: np.ndarray, total: int) -> Pairs:
        """Decode ``owner * total + member`` keys (total >= 1)."""
        return cls(keys // total, keys % total)

    def keys(self, total: int) -> np.ndarray:
        """One int64 per pair, ``owner * total + member``: sorts by (owner, member)."""
        return self.owner * total + self.member

    def __len__(self) -> int:
        return len(self.owner)

    @property
    def nbytes(self) -> int:
        return int(np.asarray(self.owner).nbytes + np.asarray(self.member).nbytes)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_owner": self.owner, f"{prefix}_member": self.member}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str) -> Pairs:
        return cls(np.asarray(arrays[f"{prefix}_owner"]), np.asarray(arrays[f"{prefix}_member"]))


@dataclass(frozen=True, eq=False)
class Top1Payload:
    """What a top-1 node needs: ``pairs`` (k, 2) int64, the camera pairs (a < b) it decides,
    and the banks of their cameras other than its own: features (n, d) float32, cameras (n,)
    and labels (n,) int64 (rows 0..N_c-1 of each camera)."""

    features: np.ndarray
    cameras: np.ndarray
    labels: np.ndarray
    pairs: np.ndarray

    KEYS = ("features", "cameras", "labels", "pairs")

    @property
    def nbytes(self) -> int:
        return int(sum(np.asarray(getattr(self, k)).nbytes for k in self.KEYS))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.KEYS}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Top1Payload:
        return cls(*(np.asarray(arrays[k]) for k in cls.KEYS))


@dataclass(frozen=True, eq=False)
class TrianglePayload:
    """``edges``: step-1 edges of node m's memories (owner = own memory); ``neighbours``: the
    step-1 neighbour lists (owner = neighbour y, member = y's neighbour) of every y adjacent to
    one of node m's memories. Keys: edges_owner, edges_member, neighbours_owner, neighbours_member.
    """

    edges: Pairs
    neighbours: Pairs

    @property
    def nbytes(self) -> int:
        return self.edges.nbytes + self.neighbours.nbytes

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**self.edges.to_arrays("edges"), **self.neighbours.to_arrays("neighbours")}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> TrianglePayload:
        return cls(Pairs.from_arrays(arrays, "edges"), Pairs.from_arrays(arrays, "neighbours"))


@dataclass(frozen=True, eq=False)
class TriangleReply:
    """Node m's surviving neighbour lists (owner = own memory, sorted) and ``labels`` (N_m,)
    int64, each memory's first label: the smallest gid among itself and its kept neighbours.
    Keys: pairs_owner, pairs_member, labels."""

    kept: Pairs
    labels: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.kept.nbytes + int(np.asarray(self.labels).nbytes)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**self.kept.to_arrays("pairs"), "labels": self.labels}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> TriangleReply:
        return cls(Pairs.from_arrays(arrays, "pairs"), np.asarray(arrays["labels"]))


@dataclass(frozen=True, eq=False)
class FloodPayload:
    """``labels`` (N_m,): the current labels of node m's memories; ``relayed``: labels the
    server relays to them (owner = own memory, member = a label). Keys: labels,
    relayed_owner, relayed_member. The reply is the new labels alone (key ``labels``)."""

    labels: np.ndarray
    relayed: Pairs

    @property
    def nbytes(self) -> int:
        return int(np.asarray(self.labels).nbytes) + self.relayed.nbytes

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"labels": self.labels, **self.relayed.to_arrays("relayed")}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> FloodPayload:
        return cls(np.asarray(arrays["labels"]), Pairs.from_arrays(arrays, "relayed"))


@dataclass(frozen=True)
class RoundStats:
    """One protocol round: messages = nodes contacted (each answers once); bytes = array nbytes
    of the payloads sent (ids arrays included) and of the replies; seconds = wall time of
    building the payloads and all node calls."""

    name: str
    messages: int
    bytes_sent: int
    bytes_received: int
    seconds: float

    @property
    def payload_bytes(self) -> int:
        return self.bytes_sent + self.bytes_received


class LazyPayloads(Mapping):
    """Payloads built when read, one at a time: the top-1 payloads are the banks again, about
    sqrt(2M) times over, and a sender that turns each into its message at once never holds
    them all as arrays too."""

    def __init__(self, keys: Iterable[int], build: Callable[[int], Any]) -> None:
        self._keys = list(keys)
        self._build = build

    def __getitem__(self, key: int) -> Any:
        if key not in self._keys:
            raise KeyError(key)
        return self._build(key)

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


# ---------------------------------------------------------------------------------------------
# node side


def mutual_top1(banks: Mapping[int, np.ndarray], pairs: np.ndarray, ids: GlobalIds,
                max_distance: float | None = None) -> Pairs:
    """Mutual top-1 edges of the camera pairs ``pairs`` (k, 2), a < b, from float64 distances
    (``pair_distances``, as the centralised reference).

    Returns owner = gid in a, member = gid in b; at most one edge per (memory, camera). Ties
    go to the lowest label. ``banks`` holds the float32 bank of every camera in ``pairs``.
    Each camera a is compared with all its partners b in one product (small ones run several
    times slower per distance), then each pair's block is judged on its own.
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    wide = {int(c): banks[int(c)].astype(np.float64) for c in np.unique(pairs)}
    norms = {c: squared_norms(f) for c, f in wide.items()}
    src, dst = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for a in np.unique(pairs[:, 0]).tolist():
        partners = pairs[pairs[:, 0] == a, 1].tolist()
        dist = pair_distances(wide[a], np.concatenate([wide[b] for b in partners]), norms[a],
                              np.concatenate([norms[b] for b in partners]))
        start = 0
        for b in partners:
            block = dist[:, start:start + len(wide[b])]
            start += len(wide[b])
            if block.size == 0:
                continue
            nearest_in_b = np.argmin(block, axis=1)   # ties -> lowest label
            nearest_in_a = np.argmin(block, axis=0)
            mutual = np.flatnonzero(nearest_in_a[nearest_in_b] == np.arange(len(block)))
            if max_distance is not None:  # the same test as cluster_centralised's
                mutual = mutual[block[mutual, nearest_in_b[mutual]] <= max_distance]
            src.append(ids.range(a)[0] + mutual)
            dst.append(ids.range(b)[0] + nearest_in_b[mutual])
    return Pairs(np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64))


def node_top1(camera: int, bank: np.ndarray, payload: Top1Payload, ids: GlobalIds,
              max_distance: float | None = None) -> Pairs:
    """Mutual top-1 edges of the camera pairs this node was given (``payload.pairs``).

    The bank of every camera in those pairs must be there in full (its own from ``bank``),
    otherwise a nearest memory would be judged on a subset; rows of other cameras are ignored.
    """
    where = f"top1 payload of camera {camera}"
    own = _node_bank(bank, ids.size(camera), where)
    pairs = _camera_pairs(payload.pairs, ids, where)
    needed = np.setdiff1d(np.unique(pairs), [camera])
    banks = _payload_banks(payload, needed, own.shape[1], ids, where)
    banks[camera] = own
    return mutual_top1(banks, pairs, ids, max_distance)


def node_triangle(camera: int, payload: TrianglePayload, alpha: int,
                  ids: GlobalIds) -> TriangleReply:
    """Surviving neighbour lists of this camera's memories: keep (x, y) iff |N(x)∩N(y)| >= alpha;
    and each memory's first label (smallest gid among itself and its kept neighbours).

    N(x) comes from ``payload.edges`` (x is ours), N(y) from ``payload.neighbours``. The lists
    are (owner = own memory, member = neighbour), sorted, without duplicates.
    """
    alpha = check_alpha(alpha)
    total = ids.total
    where = f"triangle payload of camera {camera}"
    edges = _unique_pairs(_node_pairs(payload.edges, ids, where + " (edges)", camera), total)
    nbrs = _node_pairs(payload.neighbours, ids, where + " (neighbours)", None)
    if alpha > 0 and len(edges):
        nbr_keys = np.unique(nbrs.keys(total))
        # triples (edge e = (x, y), w in N(x)): w is common iff (y, w) is in y's list
        which, rows = _group_rows(edges.owner, edges.owner)
        hit = _contains(nbr_keys, edges.member[which] * total + edges.member[rows])
        keep = np.bincount(which[hit], minlength=len(edges)) >= alpha
        edges = Pairs(edges.owner[keep], edges.member[keep])
    return TriangleReply(edges, _smallest(ids.gids(camera), edges, ids.range(camera)[0]))


def node_flood(camera: int, payload: FloodPayload, ids: GlobalIds) -> np.ndarray:
    """One flooding step for this camera's memories: each label becomes the smallest of its own
    and the labels relayed to it (which ones is the server's ``reach``, see ``route_flood``)."""
    where = f"flood payload of camera {camera}"
    lo, hi = ids.range(camera)
    labels = np.asarray(payload.labels)
    if labels.shape != (hi - lo,) or (labels.size and not _is_int(labels)):
        raise ProtocolError(f"{where}: labels must be {hi - lo} ints, got {labels.dtype} "
                            f"{labels.shape}")
    if labels.size and (labels.min() < 0 or np.any(labels > ids.gids(camera))):
        raise ProtocolError(f"{where}: a label must be a gid in [0, own gid]")
    relayed = _node_pairs(payload.relayed, ids, where + " (relayed)", camera)
    return _smallest(labels.astype(np.int64), relayed, lo)


# ---------------------------------------------------------------------------------------------
# server side: dealing the pairs, relaying and checking


def assign_pairs(ids: GlobalIds) -> dict[int, np.ndarray]:
    """Which node decides which camera pairs in the top-1 round: runner camera -> (k, 2) pairs.

    The M cameras with memories are dealt into g groups (g the largest with g(g-1)/2 <= M;
    sizes differ by one at most, large banks spread by dealing them in a snake). Each pair of
    groups (A, B) is a block: the cross pairs A x B, and it needs the banks of A and B only,
    at most 2*ceil(M/g) - 1 <= g + 1 <= sqrt(2M) + 1.5 banks besides the runner's own. The
    runner is a camera of A or B: blocks are oriented by a (near-)regular tournament on the
    groups, which gives each group at most ceil((g-1)/2) blocks, never more than its cameras
    (the larger groups take the larger share when g is even), so every camera runs at most one
    block. The pairs inside a group go one by one, largest work first, to the least loaded
    block that holds that group. So every unordered pair of cameras is decided exactly once;
    the work (sum of N_a N_b over a node's pairs) is balanced to the measured bounds of
    ``tests/test_clustering.py`` (max/mean <= 1.75 for M = 6..60).
    """
    sizes = dict(zip(ids.cameras.tolist(), ids.sizes.tolist(), strict=True))
    cams = [c for c in ids.cameras.tolist() if sizes[c] > 0]
    if len(cams) < 2:
        return {}
    groups = (1 + math.isqrt(1 + 8 * len(cams))) // 2
    members: list[list[int]] = [[] for _ in range(groups)]
    sweeps = len(cams) // groups
    for k, cam in enumerate(sorted(cams, key=lambda c: (-sizes[c], c))):
        sweep, i = divmod(k, groups)
        members[i if sweep % 2 == 0 or sweep == sweeps else groups - 1 - i].append(cam)
    span = (groups + 1 - groups % 2) // 2   # group a runs (a, b) iff b - a <= span
    runs = [0] * groups
    block_of: dict[int, tuple[int, int]] = {}
    pairs: dict[int, list[tuple[int, int]]] = {}
    for a, b in itertools.combinations(range(groups), 2):
        group = a if b - a <= span else b
        runner = members[group][runs[group]]
        runs[group] += 1
        block_of[runner] = (a, b)
        pairs[runner] = [(min(x, y), max(x, y)) for x in members[a] for y in members[b]]
    work = {r: sum(sizes[x] * sizes[y] for x, y in p) for r, p in pairs.items()}
    inside = [(x, y, g) for g, group in enumerate(members)
              for x, y in itertools.combinations(sorted(group), 2)]
    for x, y, g in sorted(inside, key=lambda t: (-sizes[t[0]] * sizes[t[1]], t)):
        runner = min((r for r, block in block_of.items() if g in block),
                     key=lambda r: (work[r], r))
        pairs[runner].append((x, y))
        work[runner] += sizes[x] * sizes[y]
    return {r: np.array(sorted(p), np.int64).reshape(-1, 2) for r, p in sorted(pairs.items())}


def reassign_pairs(orphans: Mapping[int, np.ndarray], ids: GlobalIds) -> dict[int, np.ndarray]:
    """The pairs of lost top-1 nodes, among the cameras of ``ids`` (the others' pairs are
    dropped): each lost block to its lowest remaining camera, which holds one of its banks."""
    out: dict[int, list[np.ndarray]] = {}
    for pairs in orphans.values():
        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        pairs = pairs[np.isin(pairs, ids.cameras).all(axis=1)]
        if len(pairs):
            out.setdefault(int(pairs.min()), []).append(pairs)
    return {r: np.unique(np.concatenate(p), axis=0) for r, p in sorted(out.items())}


def all_pairs(ids: GlobalIds) -> np.ndarray:
    """Every pair (a < b) of cameras with memories, (k, 2)."""
    cams = ids.cameras[ids.sizes > 0]
    return np.array(list(itertools.combinations(cams.tolist(), 2)), np.int64).reshape(-1, 2)


def route_top1(banks: Mapping[int, np.ndarray], assignment: Mapping[int, np.ndarray],
               ids: GlobalIds) -> LazyPayloads:
    """Payload per runner of ``assignment``: its pairs and the banks of their other cameras,
    built when read (``LazyPayloads``)."""

    def build(runner: int) -> Top1Payload:
        pairs = np.asarray(assignment[runner], np.int64).reshape(-1, 2)
        others = np.setdiff1d(np.unique(pairs), [runner]).tolist()
        width = next(iter(banks.values())).shape[1]
        feats = np.concatenate([np.empty((0, width), np.float32)]
                               + [banks[c] for c in others])
        cams = np.repeat(np.array(others, np.int64), [ids.size(c) for c in others])
        labels = np.concatenate([np.empty(0, np.int64)]
                                + [np.arange(ids.size(c), dtype=np.int64) for c in others])
        return Top1Payload(feats, cams, labels, pairs)

    return LazyPayloads(assignment, build)


def check_top1_replies(replies: Mapping[int, Pairs], assignment: Mapping[int, np.ndarray],
                       ids: GlobalIds) -> Pairs:
    """Validate the top-1 replies (one per runner of ``assignment``); return their edges
    (owner in the pair's lower camera), sorted, without duplicates."""
    _expect_cameras(replies, assignment, "top1")
    total, count = ids.total, ids.cameras.size
    parts = []
    for runner in sorted(assignment):
        where = f"top1 reply of camera {runner}"
        pairs = _in_range(_as_pairs(replies[runner], where), ids, where)
        given = np.asarray(assignment[runner], np.int64).reshape(-1, 2)
        allowed = np.unique(np.searchsorted(ids.cameras, given[:, 0]) * count
                            + np.searchsorted(ids.cameras, given[:, 1]))
        found = ids.camera_index_of(pairs.owner) * count + ids.camera_index_of(pairs.member)
        bad = ~_contains(allowed, found)
        if bad.any():
            a, b = ids.camera_of(pairs.owner[bad][0]), ids.camera_of(pairs.member[bad][0])
            raise ProtocolError(f"{where}: an edge from camera {a} to camera {b}, not a pair "
                                "it was given (lower camera first)")
        parts.append(pairs)
    edges = _concat(parts)
    for ends, what in ((edges.owner, edges.member), (edges.member, edges.owner)):
        key = ends * count + ids.camera_index_of(what)
        uniq, counts = np.unique(key, return_counts=True)
        if np.any(counts > 1):
            bad_gid = int(uniq[counts > 1][0] // count)
            raise ProtocolError(f"top1 replies: memory {ids.name(bad_gid)} has two neighbours "
                                "in one camera (mutual top-1 allows one)")
    return _unique_pairs(edges, total)


def route_triangle(edges: Pairs, ids: GlobalIds) -> dict[int, TrianglePayload]:
    """Payload per camera: its memories' step-1 edges, and the lists of their neighbours."""
    both = _symmetric(edges, ids.total)
    out = {}
    for cam, lo, hi in zip(ids.cameras.tolist(), ids.offsets, ids.ends, strict=True):
        own = _owner_slice(both, lo, hi)
        _, rows = _group_rows(both.owner, np.unique(own.member))
        out[cam] = TrianglePayload(own, Pairs(both.owner[rows], both.member[rows]))
    return out


def check_triangle_replies(replies: Mapping[int, TriangleReply], step1: Pairs, ids: GlobalIds
                           ) -> tuple[Pairs, np.ndarray]:
    """Validate the triangle replies; return the surviving graph as directed pairs (both ways)
    and the first labels in gid order.

    Each kept pair must be a step-1 edge, and both endpoint nodes must have decided alike.
    """
    _expect_cameras(replies, ids.cameras.tolist(), "triangle")
    total = ids.total
    step1_keys = _symmetric(step1, total).keys(total)
    parts = []
    for cam in ids.cameras.tolist():
        where = f"triangle reply of camera {cam}"
        pairs = _reply_pairs(replies[cam].kept, ids, where, cam)
        if not _contains(step1_keys, pairs.keys(total)).all():
            raise ProtocolError(f"{where}: keeps an edge that is not a step-1 edge")
        parts.append(pairs)
    kept = _unique_pairs(_concat(parts), total)
    keys = kept.keys(total)
    mirrored = _contains(keys, kept.member * total + kept.owner)
    if not mirrored.all():
        x, y = int(kept.owner[~mirrored][0]), int(kept.member[~mirrored][0])
        cx, cy = int(ids.camera_of(x)), int(ids.camera_of(y))
        raise ProtocolError(
            f"triangle: nodes of cameras {cx} and {cy} disagree on edge {ids.name(x)} - "
            f"{ids.name(y)} (camera {cx} keeps it, camera {cy} drops it)")
    labels = _checked_labels({c: r.labels for c, r in replies.items()}, None, ids, "triangle")
    return kept, labels


def route_flood(labels: np.ndarray, kept: Pairs, ids: GlobalIds,
                reach: str = "edges") -> dict[int, FloodPayload]:
    """Payload per camera: its memories' labels, and the labels relayed to each memory.

    ``labels``: current labels in gid order; ``kept``: surviving directed pairs from
    ``check_triangle_replies``. ``reach="edges"`` relays each kept neighbour's label: a label
    travels one edge per round, so the rounds are how far the farthest memory lies from its
    component's smallest gid (the paper's flooding to neighbours). ``reach="sets"`` treats
    the memories sharing a label as one set: a memory gets, for itself and for every memory
    it labels, its kept neighbours' labels and its own, each one step on (the label of the
    memory a label names, never larger); so a set merges with every set it touches, and the
    rounds grow with the log of a component's size rather than its diameter. Duplicates are
    relayed once; O(edges + memories) bytes per round either way.
    """
    if reach not in REACHES:
        raise ValueError(f"reach must be one of {list(REACHES)}, got {reach!r}")
    if reach == "edges":
        offers = [Pairs(kept.owner, labels[kept.member])]
    else:
        ahead = labels[labels]
        offers = [Pairs(kept.owner, ahead[kept.member]),
                  Pairs(np.arange(ids.total, dtype=np.int64), ahead),
                  Pairs(labels[kept.owner], ahead[kept.member])]
    relayed = _unique_pairs(_concat(offers), ids.total)
    return {cam: FloodPayload(labels[lo:hi], _owner_slice(relayed, lo, hi))
            for cam, lo, hi in zip(ids.cameras.tolist(), ids.offsets, ids.ends, strict=True)}


def check_flood_replies(replies: Mapping[int, np.ndarray], labels: np.ndarray,
                        ids: GlobalIds) -> np.ndarray:
    """Validate the flood replies against the labels sent (``labels``, gid order): the new
    labels in gid order, none larger than before."""
    _expect_cameras(replies, ids.cameras.tolist(), "flood")
    return _checked_labels(replies, labels, ids, "flood")


def flood_settled(labels: np.ndarray, kept: Pairs) -> bool:
    """Whether every kept edge joins equal labels: then each component carries one label, its
    smallest gid, and no further round changes anything, so the server need not send one."""
    return bool(np.array_equal(labels[kept.owner], labels[kept.member]))


def drop_cameras(ids: GlobalIds, edges: Pairs, lost: Iterable[int]) -> tuple[GlobalIds, Pairs]:
    """The gid encoding without the ``lost`` cameras, and ``edges`` without the ones touching
    them, renumbered to it (order kept)."""
    keep = ~np.isin(ids.cameras, list(lost))
    left = GlobalIds(ids.cameras[keep], ids.sizes[keep])
    shift = np.zeros(ids.cameras.size, np.int64)
    shift[keep] = ids.offsets[keep] - left.offsets
    where_o, where_m = ids.camera_index_of(edges.owner), ids.camera_index_of(edges.member)
    ok = keep[where_o] & keep[where_m]
    return left, Pairs(edges.owner[ok] - shift[where_o[ok]],
                       edges.member[ok] - shift[where_m[ok]])


# ---------------------------------------------------------------------------------------------
# the server's rounds, over any transport

# (round name, gid encoding, payload per camera) -> (reply per camera, why each other is lost).
# Round names: "top1", "triangle", "flood-<k>"; replies: Pairs, TriangleReply, label array.
Send = Callable[[str, GlobalIds, Mapping[int, Any]], tuple[dict[int, Any], dict[int, str]]]


@dataclass(frozen=True)
class Outcome:
    """The protocol's result over the cameras that answered every round: ``step1`` edges
    (owner in the lower camera), ``kept`` (directed, both ways), the cluster id (smallest gid
    of the component) per memory, and the cameras lost after the memory round (round, cause)."""

    ids: GlobalIds
    cluster_of: np.ndarray
    step1: Pairs
    kept: Pairs
    missing: dict[int, dict[str, str]]


def run_protocol(banks: Banks, alpha: int, send: Send, *, reach: str = "edges",
                 top1_on: str = "nodes", max_distance: float | None = None,
                 max_flood_rounds: int | None = None) -> Outcome:
    """The server's part: deal the pairs, relay, check, and go on without a lost camera.

    ``top1_on="server"``: the server finds the mutual top-1 edges itself from the banks it
    holds (no top-1 round, the pairs' work on one machine); the other rounds are the nodes'.
    A camera that ``send`` reports lost is dropped with its edges: in the top-1 round the
    lost nodes' pairs are dealt again among the others, later the protocol goes on from the
    triangle round (see the module docstring for why that is exact).
    """
    ids, feats = validate_banks(banks)
    alpha = check_alpha(alpha)
    if reach not in REACHES or top1_on not in TOP1_ON:
        raise ValueError(f"reach {reach!r} / top1_on {top1_on!r}: expected one of "
                         f"{list(REACHES)} / {list(TOP1_ON)}")
    missing: dict[int, dict[str, str]] = {}

    def drop(round_name: str, lost: Mapping[int, str], edges: Pairs) -> tuple[GlobalIds, Pairs]:
        for camera, why in lost.items():
            missing[camera] = {"round": round_name, "cause": why}
        left, edges = drop_cameras(ids, edges, lost)
        if not left.cameras.size:
            raise AllCamerasLost(missing)
        return left, edges

    if top1_on == "server":
        step1 = _unique_pairs(mutual_top1(feats, all_pairs(ids), ids, max_distance), ids.total)
    else:
        step1, todo = Pairs.empty(), assign_pairs(ids)
        while todo:
            replies, lost = send("top1", ids, route_top1(feats, todo, ids))
            answered = {c: pairs for c, pairs in todo.items() if c not in lost}
            step1 = _concat([step1, check_top1_replies(replies, answered, ids)])
            if not lost:
                break
            ids, step1 = drop("top1", lost, step1)
            todo = reassign_pairs({c: todo[c] for c in lost}, ids)
        step1 = _unique_pairs(step1, ids.total)
    limit = max_flood_rounds if max_flood_rounds is not None else ids.total + 1
    while True:
        replies, lost = send("triangle", ids, route_triangle(step1, ids))
        if lost:
            ids, step1 = drop("triangle", lost, step1)
            continue
        kept, labels = check_triangle_replies(replies, step1, ids)
        for k in range(1, limit + 1):
            name = f"flood-{k}"
            replies, lost = send(name, ids, route_flood(labels, kept, ids, reach))
            if lost:
                break
            labels = check_flood_replies(replies, labels, ids)
            if flood_settled(labels, kept):
                return Outcome(ids, labels, step1, kept, missing)
        else:
            raise ProtocolError(f"flooding did not converge within {limit} rounds")
        ids, step1 = drop(name, lost, step1)


def in_process(banks: Mapping[int, np.ndarray], alpha: int, max_distance: float | None,
               stats: list[RoundStats]) -> Send:
    """The nodes' functions called here, one call per message, each round's bytes and time
    appended to ``stats``: the transport of ``cluster_distributed``."""

    def reply(name: str, camera: int, payload: Any, ids: GlobalIds) -> Any:
        if name == "top1":
            return node_top1(camera, banks[camera], payload, ids, max_distance)
        if name == "triangle":
            return node_triangle(camera, payload, alpha, ids)
        return node_flood(camera, payload, ids)

    def send(name: str, ids: GlobalIds, payloads: Mapping[int, Any]
             ) -> tuple[dict[int, Any], dict[int, str]]:
        start, sent, replies = time.perf_counter(), 0, {}
        for camera, payload in payloads.items():
            sent += payload.nbytes + ids.nbytes
            replies[camera] = reply(name, camera, payload, ids)
        received = sum(int(r.nbytes) for r in replies.values())
        stats.append(RoundStats(name, len(replies), sent, received, time.perf_counter() - start))
        return replies, {}

    return send


def cluster_distributed(banks: Banks, alpha: int, *, reach: str = "edges",
                        top1_on: str = "nodes", max_flood_rounds: int | None = None,
                        max_distance: float | None = None
                        ) -> tuple[ClusterResult, list[RoundStats]]:
    """Run the whole protocol in-process: the server's part plus every node's function.

    ``reach``: which labels the server relays in the flood rounds (see ``route_flood``);
    ``top1_on``: where mutual top-1 is found (``run_protocol``); ``max_distance``: the limit
    on mutual top-1 pairs (see ``cluster_centralised``).
    """
    _, feats = validate_banks(banks)
    stats: list[RoundStats] = []
    out = run_protocol(feats, alpha, in_process(feats, alpha, max_distance, stats),
                       reach=reach, top1_on=top1_on, max_distance=max_distance,
                       max_flood_rounds=max_flood_rounds)
    mutual = np.stack([out.step1.owner, out.step1.member], axis=1)
    kept = np.stack([out.kept.owner, out.kept.member], axis=1)
    return ClusterResult.build(out.ids, out.cluster_of, mutual, kept), stats


# ---------------------------------------------------------------------------------------------
# helpers


def _is_int(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "iu"


def _expect_cameras(replies: Mapping[int, object], expected: Iterable[int], what: str) -> None:
    got = {int(c) for c in replies}
    want = {int(c) for c in expected}
    if got != want:
        raise ProtocolError(f"{what}: replies for cameras {sorted(got)}, expected "
                            f"{sorted(want)} (missing {sorted(want - got)}, "
                            f"unknown {sorted(got - want)})")


def _as_pairs(pairs: Pairs, where: str) -> Pairs:
    """Both arrays 1-D integers of equal length, as int64."""
    owner, member = np.asarray(pairs.owner), np.asarray(pairs.member)
    if owner.ndim != 1 or member.ndim != 1 or owner.shape != member.shape:
        raise ProtocolError(f"{where}: owner and member must be 1-D of equal length, got "
                            f"shapes {owner.shape} and {member.shape}")
    if owner.size and not (_is_int(owner) and _is_int(member)):
        raise ProtocolError(f"{where}: gids must be integers, got {owner.dtype}/{member.dtype}")
    return Pairs(owner.astype(np.int64, copy=False), member.astype(np.int64, copy=False))


def _in_range(pairs: Pairs, ids: GlobalIds, where: str) -> Pairs:
    total = ids.total
    for arr, name in ((pairs.owner, "owner"), (pairs.member, "member")):
        if arr.size and (arr.min() < 0 or arr.max() >= total):
            raise ProtocolError(f"{where}: {name} gid out of range [0, {total})")
    return pairs


def _reply_pairs(pairs: Pairs, ids: GlobalIds, where: str, camera: int) -> Pairs:
    """A node's reply pairs: well-formed, in range, owners in the replying camera."""
    pairs = _in_range(_as_pairs(pairs, where), ids, where)
    lo, hi = ids.range(camera)
    if pairs.owner.size and (pairs.owner.min() < lo or pairs.owner.max() >= hi):
        raise ProtocolError(f"{where}: owner gid outside camera {camera}'s range [{lo}, {hi})")
    return pairs


def _node_pairs(pairs: Pairs, ids: GlobalIds, where: str, camera: int | None) -> Pairs:
    """Inbound pairs at a node: same checks as for replies (owner camera when given)."""
    if camera is None:
        return _in_range(_as_pairs(pairs, where), ids, where)
    return _reply_pairs(pairs, ids, where, camera)


def _checked_labels(replies: Mapping[int, np.ndarray], before: np.ndarray | None,
                    ids: GlobalIds, what: str) -> np.ndarray:
    """Each camera's labels: its size, ints, a gid in [0, own gid], none above ``before``;
    concatenated in gid order."""
    parts = []
    for cam, lo, hi in zip(ids.cameras.tolist(), ids.offsets, ids.ends, strict=True):
        where = f"{what} reply of camera {cam}"
        labels = np.asarray(replies[cam])
        if labels.shape != (hi - lo,) or (labels.size and not _is_int(labels)):
            raise ProtocolError(f"{where}: labels must be {hi - lo} ints, got {labels.dtype} "
                                f"{labels.shape}")
        labels = labels.astype(np.int64, copy=False)
        if labels.size and (labels.min() < 0 or np.any(labels > np.arange(lo, hi))):
            raise ProtocolError(f"{where}: a label must be a gid of the memory's component, "
                                "so in [0, own gid]")
        if before is not None and np.any(labels > before[lo:hi]):
            raise ProtocolError(f"{where}: a label grew (labels only ever get smaller)")
        parts.append(labels)
    return np.concatenate([np.empty(0, np.int64), *parts])


def _smallest(labels: np.ndarray, offers: Pairs, lo: int) -> np.ndarray:
    """``labels`` of the memories lo, lo+1, ..., each lowered to the smallest member offered
    to it (owner = the memory)."""
    out = np.array(labels, np.int64)
    np.minimum.at(out, offers.owner - lo, offers.member)
    return out


def _node_bank(bank: np.ndarray, size: int, where: str) -> np.ndarray:
    arr = np.asarray(bank)
    if arr.ndim != 2 or arr.shape[0] != size:
        raise ProtocolError(f"{where}: own bank must be ({size}, d), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ProtocolError(f"{where}: own bank has non-finite values")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _camera_pairs(pairs: np.ndarray, ids: GlobalIds, where: str) -> np.ndarray:
    """The camera pairs a top-1 node decides: (k, 2) known cameras with memories, a < b, unique."""
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or (pairs.size and not _is_int(pairs)):
        raise ProtocolError(f"{where}: pairs must be (k, 2) camera ids, got {pairs.dtype} "
                            f"{pairs.shape}")
    pairs = pairs.astype(np.int64, copy=False)
    known = np.isin(pairs, ids.cameras[ids.sizes > 0]).all()
    if not known or np.any(pairs[:, 0] >= pairs[:, 1]) or len(np.unique(pairs, axis=0)) < len(
            pairs):
        raise ProtocolError(f"{where}: pairs must be distinct (a, b), a < b, of cameras with "
                            f"memories {ids.cameras[ids.sizes > 0].tolist()}")
    return pairs


def _payload_banks(payload: Top1Payload, needed: np.ndarray, width: int, ids: GlobalIds,
                   where: str) -> dict[int, np.ndarray]:
    """The whole bank of each ``needed`` camera from the payload's rows, by camera."""
    feats = np.asarray(payload.features)
    cams, labels = np.asarray(payload.cameras), np.asarray(payload.labels)
    if feats.ndim != 2 or cams.shape != (len(feats),) or labels.shape != (len(feats),):
        raise ProtocolError(f"{where}: features (n, d), cameras (n,), labels (n,) expected, got "
                            f"{feats.shape}, {cams.shape}, {labels.shape}")
    if len(feats) and (feats.shape[1] != width or not (_is_int(cams) and _is_int(labels))):
        raise ProtocolError(f"{where}: features must have d={width} and integer cameras/labels")
    out = {}
    for cam in needed.tolist():
        rows = np.flatnonzero(cams == cam)
        rows = rows[np.argsort(labels[rows], kind="stable")]
        if not np.array_equal(labels[rows], np.arange(ids.size(cam))):
            raise ProtocolError(f"{where}: needs the whole bank of camera {cam} (labels "
                                f"0..{ids.size(cam) - 1}), got {len(rows)} rows")
        bank = np.ascontiguousarray(feats[rows], dtype=np.float32)
        if not np.isfinite(bank).all():
            raise ProtocolError(f"{where}: the bank of camera {cam} has non-finite values")
        out[cam] = bank
    return out


def _concat(parts: list[Pairs]) -> Pairs:
    if not parts:
        return Pairs.empty()
    return Pairs(np.concatenate([p.owner for p in parts]).astype(np.int64, copy=False),
                 np.concatenate([p.member for p in parts]).astype(np.int64, copy=False))


def _unique_pairs(pairs: Pairs, total: int) -> Pairs:
    """Deduplicated and sorted by (owner, member)."""
    if total == 0 or len(pairs) == 0:
        return Pairs.empty()
    return Pairs.from_keys(np.unique(pairs.keys(total)), total)


def _symmetric(edges: Pairs, total: int) -> Pairs:
    """Both directions of undirected edges, sorted by (owner, member), unique."""
    both = Pairs(np.concatenate([edges.owner, edges.member]),
                 np.concatenate([edges.member, edges.owner]))
    return _unique_pairs(both, total)


def _sorted_by_owner(pairs: Pairs) -> Pairs:
    if len(pairs) < 2 or np.all(pairs.owner[1:] >= pairs.owner[:-1]):
        return pairs
    order = np.argsort(pairs.owner, kind="stable")
    return Pairs(pairs.owner[order], pairs.member[order])


def _owner_slice(pairs: Pairs, lo: int, hi: int) -> Pairs:
    """Pairs whose owner is in [lo, hi), for pairs sorted by owner."""
    a, b = np.searchsorted(pairs.owner, [lo, hi])
    return Pairs(pairs.owner[a:b], pairs.member[a:b])


def _group_rows(sorted_owner: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All rows of ``sorted_owner`` equal to each key: (key position, row index) per match."""
    keys = np.asarray(keys, np.int64)
    lo = np.searchsorted(sorted_owner, keys, side="left")
    hi = np.searchsorted(sorted_owner, keys, side="right")
    counts = hi - lo
    which = np.repeat(np.arange(len(keys)), counts)
    rows = np.arange(int(counts.sum())) + np.repeat(lo - (np.cumsum(counts) - counts), counts)
    return which, rows


def _contains(sorted_unique: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Membership of each query in a sorted array of unique values."""
    if sorted_unique.size == 0:
        return np.zeros(len(queries), bool)
    pos = np.minimum(np.searchsorted(sorted_unique, queries), sorted_unique.size - 1)
    return sorted_unique[pos] == queries
