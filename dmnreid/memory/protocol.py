"""The distributed clustering protocol: node-side pure functions, server relaying, a driver.

Every decision is taken by a node function; the server only relays arrays, checks replies and
counts. One message per node per round; rounds after the memory round:

- ``top1``: node m gets the banks of the cameras c > m (``route_top1``; rows of any other camera
  are ignored, so sending all other banks works too) and returns the mutual top-1 edges of every
  camera pair (m, c), c > m, judged from its own distance block D(m, c) in both directions, so
  no pair is judged twice. Reply: ``Pairs`` (owner = own gid, member = gid in camera c > m).
- ``triangle``: node m gets the step-1 edges touching its memories and the step-1 neighbour
  lists of the memories adjacent to them (``route_triangle``); it returns the surviving
  neighbour lists of its memories: (x, y) survives iff |N(x) ∩ N(y)| >= alpha. Both endpoint
  nodes count from the same relayed lists, so they agree; ``check_triangle_replies`` verifies it.
- ``flood`` (repeated): node m gets the surviving edges of its memories, its memories' current
  sets and some other memories' current sets (``route_flood``); it returns each own memory's
  set united with the relayed sets of the memories it knows, the cluster id (min of the set)
  per own label, and whether anything grew. With ``reach="edges"`` the server relays the sets
  of the memories adjacent to node m's memories (the paper's flooding to neighbours; since a
  node pools what it got for all its memories, a set grows by at least one hop per round);
  with ``reach="sets"`` it relays the sets of every member of node m's sets, so the reach
  doubles per round. Either way the run stops after the first round in which no node changed;
  the last replies carry the labels.

All payloads are flat numpy arrays: gids as int64, features float32. Every dataclass below has
``to_arrays()`` / ``from_arrays()`` with fixed key names, for Flower ArrayRecords; scalars
(alpha, the camera id) travel in a ConfigRecord, ``changed`` as a one-element int64 array.
Gids: see ``reference.GlobalIds`` (the node needs it: send ``ids.to_arrays()`` every round).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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


class ProtocolError(ValueError):
    """A payload or node reply that breaks the protocol (names the camera/node concerned)."""


# ---------------------------------------------------------------------------------------------
# payload types


@dataclass(frozen=True, eq=False)
class Pairs:
    """A flat list of (owner gid, member gid) pairs: edges, neighbour lists or sets.

    Layout: two int64 1-D arrays of equal length; pair k is (owner[k], member[k]). Edges from
    ``node_top1`` have owner = src (own memory) and member = dst.
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
    """Other cameras' banks for node m: features (n, d) float32, cameras (n,), labels (n,) int64."""

    features: np.ndarray
    cameras: np.ndarray
    labels: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes + self.cameras.nbytes + self.labels.nbytes)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"features": self.features, "cameras": self.cameras, "labels": self.labels}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Top1Payload:
        return cls(np.asarray(arrays["features"]), np.asarray(arrays["cameras"]),
                   np.asarray(arrays["labels"]))


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
class FloodPayload:
    """``edges``: surviving edges of node m's memories (owner = own memory); ``own_sets``: the
    current sets of node m's memories; ``neighbour_sets``: the current sets of every memory
    adjacent to one of them. Keys: edges_*, own_sets_*, neighbour_sets_* (owner/member).
    """

    edges: Pairs
    own_sets: Pairs
    neighbour_sets: Pairs

    @property
    def nbytes(self) -> int:
        return self.edges.nbytes + self.own_sets.nbytes + self.neighbour_sets.nbytes

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**self.edges.to_arrays("edges"), **self.own_sets.to_arrays("own_sets"),
                **self.neighbour_sets.to_arrays("neighbour_sets")}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> FloodPayload:
        return cls(Pairs.from_arrays(arrays, "edges"), Pairs.from_arrays(arrays, "own_sets"),
                   Pairs.from_arrays(arrays, "neighbour_sets"))


@dataclass(frozen=True, eq=False)
class FloodReply:
    """Node m's new sets (every own memory is an owner, itself included; sorted by owner, member),
    ``labels`` (N_m,) int64 = min of each own memory's set, ``changed`` = some set grew.
    Keys: sets_owner, sets_member, labels, changed (int64 array of one element, 0 or 1).
    """

    sets: Pairs
    labels: np.ndarray
    changed: bool

    @property
    def nbytes(self) -> int:
        return self.sets.nbytes + int(np.asarray(self.labels).nbytes) + 8

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**self.sets.to_arrays("sets"), "labels": self.labels,
                "changed": np.array([int(self.changed)], np.int64)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> FloodReply:
        changed = np.asarray(arrays["changed"]).ravel()
        if changed.size != 1:
            raise ProtocolError(f"flood reply: 'changed' must hold one flag, got {changed.size}")
        return cls(Pairs.from_arrays(arrays, "sets"), np.asarray(arrays["labels"]),
                   bool(changed[0]))


@dataclass(frozen=True)
class RoundStats:
    """One protocol round: messages = nodes contacted (each answers once); bytes = array nbytes
    of the payloads sent (ids arrays included) and of the replies; seconds = wall time of routing,
    all node calls and the reply checks."""

    name: str
    messages: int
    bytes_sent: int
    bytes_received: int
    seconds: float

    @property
    def payload_bytes(self) -> int:
        return self.bytes_sent + self.bytes_received


# ---------------------------------------------------------------------------------------------
# node side


def node_top1(camera: int, bank: np.ndarray, others_features: np.ndarray,
              others_cameras: np.ndarray, others_labels: np.ndarray, ids: GlobalIds,
              max_distance: float | None = None) -> Pairs:
    """Mutual top-1 edges of the camera pairs (camera, c), c > camera, from one distance block.

    Returns owner = gid in ``camera``, member = gid in c; at most one edge per (memory, camera).
    Rows of cameras c <= camera are ignored; the bank of every non-empty c > camera must be
    there in full (labels 0..N_c-1), otherwise the nearest memory would be judged on a subset.
    """
    lo, _ = ids.range(camera)
    where = f"top1 payload of camera {camera}"
    own = _node_bank(bank, ids.size(camera), where)
    feats, cams, _labels = _higher_banks(camera, others_features, others_cameras, others_labels,
                                        own.shape[1], ids, where)
    if len(own) == 0 or len(feats) == 0:
        return Pairs.empty()
    a64, b64 = own.astype(np.float64), feats.astype(np.float64)
    dist = pair_distances(a64, b64, squared_norms(a64), squared_norms(b64))
    src, dst = [], []
    rows = np.arange(len(own))
    start = 0
    for cam, count in zip(*np.unique(cams, return_counts=True), strict=True):
        block = dist[:, start:start + count]
        nearest_in_c = np.argmin(block, axis=1)   # ties -> lowest label
        nearest_in_m = np.argmin(block, axis=0)
        mutual = np.flatnonzero(nearest_in_m[nearest_in_c] == rows)
        if max_distance is not None:  # the same test as cluster_centralised's
            mutual = mutual[block[mutual, nearest_in_c[mutual]] <= max_distance]
        src.append(lo + mutual)
        dst.append(ids.range(int(cam))[0] + nearest_in_c[mutual])
        start += count
    return Pairs(np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64))


def node_triangle(camera: int, payload: TrianglePayload, alpha: int, ids: GlobalIds) -> Pairs:
    """Surviving neighbour lists of this camera's memories: keep (x, y) iff |N(x)∩N(y)| >= alpha.

    N(x) comes from ``payload.edges`` (x is ours), N(y) from ``payload.neighbours``. Returns
    (owner = own memory, member = neighbour), sorted, without duplicates.
    """
    alpha = check_alpha(alpha)
    total = ids.total
    where = f"triangle payload of camera {camera}"
    edges = _unique_pairs(_node_pairs(payload.edges, ids, where + " (edges)", camera), total)
    nbrs = _node_pairs(payload.neighbours, ids, where + " (neighbours)", None)
    if alpha == 0 or len(edges) == 0:
        return edges
    nbr_keys = np.unique(nbrs.keys(total))
    # triples (edge e = (x, y), w in N(x)): w is common iff (y, w) is in y's list
    which, rows = _group_rows(edges.owner, edges.owner)
    hit = _contains(nbr_keys, edges.member[which] * total + edges.member[rows])
    common = np.bincount(which[hit], minlength=len(edges))
    keep = common >= alpha
    return Pairs(edges.owner[keep], edges.member[keep])


def node_flood(camera: int, payload: FloodPayload, ids: GlobalIds) -> FloodReply:
    """One flooding step for this camera's memories x.

    S(x) <- {x} ∪ S(x) ∪ N'(x) ∪ (union of the relayed S(z) for every z in S(x) ∪ N'(x)).
    The server decides which sets it relays (``route_flood``'s ``reach``): those of the
    neighbours y in N'(x) (one hop per round), or those of every member of S(x) (doubling).
    Sets only ever grow within the component, so labels are the same either way.
    """
    total = ids.total
    where = f"flood payload of camera {camera}"
    edges = _node_pairs(payload.edges, ids, where + " (edges)", camera)
    own = _node_pairs(payload.own_sets, ids, where + " (own sets)", camera)
    nbr = _sorted_by_owner(_node_pairs(payload.neighbour_sets, ids, where + " (neighbour sets)",
                                       None))
    mine = ids.gids(camera)
    old = np.unique(np.concatenate([own.keys(total), edges.keys(total), mine * total + mine]))
    known = Pairs.from_keys(old, max(total, 1))
    which, rows = _group_rows(nbr.owner, known.member)
    reached = known.owner[which] * total + nbr.member[rows]
    new = np.unique(np.concatenate([old, reached]))
    sets = Pairs.from_keys(new, max(total, 1))
    first = np.flatnonzero(np.r_[True, sets.owner[1:] != sets.owner[:-1]]) if len(new) else new
    return FloodReply(sets, sets.member[first].astype(np.int64), bool(len(new) != len(old)))


# ---------------------------------------------------------------------------------------------
# server side: relaying and checking


def route_top1(banks: Banks, ids: GlobalIds | None = None) -> dict[int, Top1Payload]:
    """Payload per camera: the banks of all cameras after it, concatenated (zero-copy views).

    The last camera gets empty arrays (it owns no pair); it may be skipped or sent anyway.
    """
    try:
        ids_checked, feats = validate_banks(banks)
    except ValueError as err:
        raise ProtocolError(f"memory banks: {err}") from err
    if ids is not None and not _same_ids(ids, ids_checked):
        raise ProtocolError("banks do not match the given GlobalIds (cameras or sizes differ)")
    ids = ids_checked
    width = next(iter(feats.values())).shape[1]
    allf = np.concatenate([feats[int(c)] for c in ids.cameras]) if ids.total else \
        np.empty((0, width), np.float32)
    cams = np.repeat(ids.cameras, ids.sizes)
    labels = np.concatenate([np.arange(s, dtype=np.int64) for s in ids.sizes])
    return {int(c): Top1Payload(allf[end:], cams[end:], labels[end:])
            for c, end in zip(ids.cameras, ids.ends, strict=True)}


def check_top1_replies(replies: Mapping[int, Pairs], ids: GlobalIds) -> Pairs:
    """Validate the top-1 replies; return all step-1 edges (owner in the lower camera)."""
    _expect_all_cameras(replies, ids, "top1")
    parts = []
    for cam in ids.cameras.tolist():
        pairs = _reply_pairs(replies[cam], ids, f"top1 reply of camera {cam}", cam)
        if np.any(ids.camera_of(pairs.member) <= cam):
            raise ProtocolError(f"top1 reply of camera {cam}: edges must go to cameras > {cam}")
        parts.append(pairs)
    edges = _concat(parts)
    total = ids.total
    for ends, what in ((edges.owner, edges.member), (edges.member, edges.owner)):
        key = ends * ids.cameras.size + ids.camera_index_of(what)
        uniq, counts = np.unique(key, return_counts=True)
        if np.any(counts > 1):
            bad = int(uniq[counts > 1][0] // ids.cameras.size)
            raise ProtocolError(f"top1 replies: memory {ids.name(bad)} has two neighbours in "
                                "one camera (mutual top-1 allows one)")
    return _unique_pairs(edges, total) if total else edges


def route_triangle(edges: Pairs, ids: GlobalIds) -> dict[int, TrianglePayload]:
    """Payload per camera: its memories' step-1 edges, and the lists of their neighbours."""
    both = _symmetric(edges, ids.total)
    out = {}
    for cam, lo, hi in zip(ids.cameras.tolist(), ids.offsets, ids.ends, strict=True):
        own = _owner_slice(both, lo, hi)
        ys = np.unique(own.member)
        _, rows = _group_rows(both.owner, ys)
        out[cam] = TrianglePayload(own, Pairs(both.owner[rows], both.member[rows]))
    return out


def check_triangle_replies(replies: Mapping[int, Pairs], step1: Pairs, ids: GlobalIds) -> Pairs:
    """Validate the triangle replies; return the surviving graph as directed pairs (both ways).

    Each kept pair must be a step-1 edge, and both endpoint nodes must have decided alike.
    """
    _expect_all_cameras(replies, ids, "triangle")
    total = ids.total
    step1_keys = _symmetric(step1, total).keys(total) if total else np.empty(0, np.int64)
    parts = []
    for cam in ids.cameras.tolist():
        pairs = _reply_pairs(replies[cam], ids, f"triangle reply of camera {cam}", cam)
        if not _contains(step1_keys, pairs.keys(total)).all():
            raise ProtocolError(f"triangle reply of camera {cam}: keeps an edge that is not a "
                                "step-1 edge")
        parts.append(pairs)
    kept = _unique_pairs(_concat(parts), total) if total else Pairs.empty()
    keys = kept.keys(total)
    mirrored = _contains(keys, kept.member * total + kept.owner)
    if not mirrored.all():
        x, y = int(kept.owner[~mirrored][0]), int(kept.member[~mirrored][0])
        cx, cy = int(ids.camera_of(x)), int(ids.camera_of(y))
        raise ProtocolError(
            f"triangle: nodes of cameras {cx} and {cy} disagree on edge {ids.name(x)} - "
            f"{ids.name(y)} (camera {cx} keeps it, camera {cy} drops it)")
    return kept


def route_flood(sets_by_node: Mapping[int, Pairs], edges: Pairs, ids: GlobalIds,
                reach: str = "edges") -> dict[int, FloodPayload]:
    """Payload per camera: its surviving edges, its sets, and the sets it may merge.

    ``sets_by_node``: the triangle replies for the first flood round, then the ``sets`` of the
    previous flood replies. ``edges``: surviving directed pairs from ``check_triangle_replies``.
    ``reach="edges"`` relays the sets of the memories adjacent to the camera's memories (the
    paper's flooding to neighbours: a set grows by at least one hop per round);
    ``reach="sets"`` relays the sets of every member of the camera's sets (the reach doubles
    per round: fewer rounds, somewhat more bytes). Labels are identical either way.
    """
    if reach not in ("edges", "sets"):
        raise ValueError(f"reach must be 'edges' or 'sets', got {reach!r}")
    _expect_all_cameras(sets_by_node, ids, "flood sets")
    sets = _sorted_by_owner(_concat([sets_by_node[c] for c in ids.cameras.tolist()]))
    edges = _sorted_by_owner(edges)
    out = {}
    for cam, lo, hi in zip(ids.cameras.tolist(), ids.offsets, ids.ends, strict=True):
        own_edges, own_sets = _owner_slice(edges, lo, hi), _owner_slice(sets, lo, hi)
        wanted = own_edges.member if reach == "edges" else \
            np.concatenate([own_edges.member, own_sets.member])
        _, rows = _group_rows(sets.owner, np.unique(wanted))
        out[cam] = FloodPayload(own_edges, own_sets, Pairs(sets.owner[rows], sets.member[rows]))
    return out


def check_flood_replies(replies: Mapping[int, FloodReply], ids: GlobalIds) -> bool:
    """Validate the flood replies; return whether any node changed."""
    _expect_all_cameras(replies, ids, "flood")
    changed = False
    for cam in ids.cameras.tolist():
        reply = replies[cam]
        where = f"flood reply of camera {cam}"
        _reply_pairs(reply.sets, ids, where, cam)
        labels = np.asarray(reply.labels)
        if labels.shape != (ids.size(cam),) or not _is_int(labels):
            raise ProtocolError(f"{where}: labels must be {ids.size(cam)} ints, got "
                                f"{labels.dtype} {labels.shape}")
        if labels.size and (labels.min() < 0 or np.any(labels > ids.gids(cam))):
            raise ProtocolError(f"{where}: a label must be the smallest gid of the memory's "
                                "set, so in [0, own gid]")
        if not isinstance(reply.changed, (bool, np.bool_)):
            raise ProtocolError(f"{where}: changed must be one flag, got {reply.changed!r}")
        changed |= bool(reply.changed)
    return changed


def flood_settled(payloads: Mapping[int, FloodPayload], ids: GlobalIds) -> bool:
    """Whether the next flood round (``payloads``, already routed) would change no set. The
    server relays every set, so it can tell without sending that round (which would only
    confirm it): one round fewer."""
    return not any(node_flood(cam, payload, ids).changed for cam, payload in payloads.items())


def labels_from_flood(replies: Mapping[int, FloodReply], ids: GlobalIds) -> np.ndarray:
    """Cluster id per memory in gid order, from the last flood round's replies."""
    parts = [np.asarray(replies[c].labels, np.int64) for c in ids.cameras.tolist()]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


# ---------------------------------------------------------------------------------------------
# in-process driver


def cluster_distributed(banks: Banks, alpha: int, *, reach: str = "edges",
                        max_flood_rounds: int | None = None,
                        max_distance: float | None = None
                        ) -> tuple[ClusterResult, list[RoundStats]]:
    """Run the whole protocol in-process: the server's relaying plus every node's function.

    ``reach``: which sets the server relays in the flood rounds (see ``route_flood``);
    ``max_distance``: the nodes' limit on mutual top-1 pairs (see ``cluster_centralised``).
    """
    ids, feats = validate_banks(banks)
    alpha = check_alpha(alpha)
    stats: list[RoundStats] = []

    def run_round(name: str, payloads: Mapping[int, object], node: Callable) -> dict:
        start = time.perf_counter()
        replies = {cam: node(cam, p) for cam, p in payloads.items()}
        sent = sum(p.nbytes + ids.nbytes for p in payloads.values())
        received = sum(r.nbytes for r in replies.values())
        stats.append(RoundStats(name, len(payloads), sent, received,
                                time.perf_counter() - start))
        return replies

    t0 = time.perf_counter()
    top1 = run_round("top1", route_top1(feats, ids), lambda c, p: node_top1(
        c, feats[c], p.features, p.cameras, p.labels, ids, max_distance))
    step1 = check_top1_replies(top1, ids)
    _add_server_time(stats, t0)

    t0 = time.perf_counter()
    tri = run_round("triangle", route_triangle(step1, ids),
                    lambda c, p: node_triangle(c, p, alpha, ids))
    kept = check_triangle_replies(tri, step1, ids)
    _add_server_time(stats, t0)

    payloads = route_flood(tri, kept, ids, reach)
    limit = max_flood_rounds if max_flood_rounds is not None else ids.total + 1
    for k in range(1, limit + 1):
        t0 = time.perf_counter()
        flood = run_round(f"flood-{k}", payloads, lambda c, p: node_flood(c, p, ids))
        changed = check_flood_replies(flood, ids)
        payloads = route_flood({c: r.sets for c, r in flood.items()}, kept, ids, reach)
        settled = not changed or flood_settled(payloads, ids)
        _add_server_time(stats, t0)
        if settled:
            break
    else:
        raise ProtocolError(f"flooding did not converge within {limit} rounds")
    mutual = np.stack([step1.owner, step1.member], axis=1)
    kept_pairs = np.stack([kept.owner, kept.member], axis=1)
    return ClusterResult.build(ids, labels_from_flood(flood, ids), mutual, kept_pairs), stats


def _add_server_time(stats: list[RoundStats], t0: float) -> None:
    """Make the last round's seconds cover routing and checks too, not only the node calls."""
    last = stats[-1]
    stats[-1] = RoundStats(last.name, last.messages, last.bytes_sent, last.bytes_received,
                           time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# helpers


def _is_int(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "iu"


def _same_ids(a: GlobalIds, b: GlobalIds) -> bool:
    return np.array_equal(a.cameras, b.cameras) and np.array_equal(a.sizes, b.sizes)


def _expect_all_cameras(replies: Mapping[int, object], ids: GlobalIds, what: str) -> None:
    got = {int(c) for c in replies}
    want = set(ids.cameras.tolist())
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


def _reply_pairs(pairs: Pairs, ids: GlobalIds, where: str, camera: int) -> Pairs:
    """A node's reply pairs: well-formed, in range, owners in the replying camera."""
    pairs = _as_pairs(pairs, where)
    total = ids.total
    for arr, name in ((pairs.owner, "owner"), (pairs.member, "member")):
        if arr.size and (arr.min() < 0 or arr.max() >= total):
            raise ProtocolError(f"{where}: {name} gid out of range [0, {total})")
    lo, hi = ids.range(camera)
    if pairs.owner.size and (pairs.owner.min() < lo or pairs.owner.max() >= hi):
        raise ProtocolError(f"{where}: owner gid outside camera {camera}'s range [{lo}, {hi})")
    return pairs


def _node_pairs(pairs: Pairs, ids: GlobalIds, where: str, camera: int | None) -> Pairs:
    """Inbound pairs at a node: same checks as for replies (owner camera when given)."""
    if camera is None:
        pairs = _as_pairs(pairs, where)
        total = ids.total
        for arr, name in ((pairs.owner, "owner"), (pairs.member, "member")):
            if arr.size and (arr.min() < 0 or arr.max() >= total):
                raise ProtocolError(f"{where}: {name} gid out of range [0, {total})")
        return pairs
    return _reply_pairs(pairs, ids, where, camera)


def _node_bank(bank: np.ndarray, size: int, where: str) -> np.ndarray:
    arr = np.asarray(bank)
    if arr.ndim != 2 or arr.shape[0] != size:
        raise ProtocolError(f"{where}: own bank must be ({size}, d), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ProtocolError(f"{where}: own bank has non-finite values")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _higher_banks(camera: int, feats: np.ndarray, cams: np.ndarray, labels: np.ndarray,
                  width: int, ids: GlobalIds, where: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of cameras > camera, ordered by (camera, label), checked to be whole banks."""
    feats, cams, labels = np.asarray(feats), np.asarray(cams), np.asarray(labels)
    if feats.ndim != 2 or cams.shape != (len(feats),) or labels.shape != (len(feats),):
        raise ProtocolError(f"{where}: features (n, d), cameras (n,), labels (n,) expected, got "
                            f"{feats.shape}, {cams.shape}, {labels.shape}")
    if len(feats) and (feats.shape[1] != width or not (_is_int(cams) and _is_int(labels))):
        raise ProtocolError(f"{where}: features must have d={width} and integer cameras/labels")
    cams, labels = cams.astype(np.int64, copy=False), labels.astype(np.int64, copy=False)
    keep = cams > camera
    if not keep.all():
        feats, cams, labels = feats[keep], cams[keep], labels[keep]
    order_key = np.lexsort((labels, cams))
    if np.any(order_key != np.arange(len(order_key))):
        feats, cams, labels = feats[order_key], cams[order_key], labels[order_key]
    higher = ids.cameras[(ids.cameras > camera) & (ids.sizes > 0)]
    present, counts = np.unique(cams, return_counts=True)
    if not np.array_equal(present, higher):
        raise ProtocolError(f"{where}: needs the banks of cameras {higher.tolist()}, "
                            f"got cameras {present.tolist()}")
    sizes = ids.sizes[np.searchsorted(ids.cameras, present)]
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    if not (np.array_equal(counts, sizes) and np.array_equal(labels, np.arange(len(labels))
                                                             - starts)):
        raise ProtocolError(f"{where}: each camera's bank must be whole (labels 0..N_c-1)")
    if not np.isfinite(feats).all():
        raise ProtocolError(f"{where}: other banks have non-finite values")
    return np.ascontiguousarray(feats, dtype=np.float32), cams, labels


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
