"""Distributed clustering over Flower messages (paper 3.3): the server relays, nodes decide.

Rounds, one message per node each: ``query.memory`` (memory banks), ``query.top1`` (mutual
top-1 edges of the camera pairs a node owns), ``query.triangle`` (edges that pass the triangle
relation), then ``query.flood`` until no node's sets change. The relaying and the reply checks
are :mod:`dmnreid.memory.protocol`'s, the same code the in-process driver and its tests use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from logging import INFO
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dmnreid.data_prep.partition import EVALUATOR_DIR
from dmnreid.memory.diagnostics import cluster_scores
from dmnreid.memory.protocol import (
    FloodReply,
    Pairs,
    RoundStats,
    check_flood_replies,
    check_top1_replies,
    check_triangle_replies,
    labels_from_flood,
    route_flood,
    route_top1,
    route_triangle,
)
from dmnreid.memory.reference import GlobalIds
from dmnreid.messages import (
    CONFIG,
    PAYLOAD,
    WEIGHTS,
    NodeError,
    arrays_record,
    message_bytes,
    replies_by_node,
    reply_content,
    state_record,
)
from dmnreid.run_dir import RunDir
from dmnreid.strategies.random_walk import State

MEMORY = "memory"


def _send_round(grid: Grid, nodes: Mapping[int, int], name: str, message_type: str,
                payloads: Mapping[int, Mapping[str, np.ndarray]], config: dict,
                timeout: float, stats: list[RoundStats],
                extra: Mapping[str, ArrayRecord] | None = None) -> dict[int, RecordDict]:
    """One message per camera in ``payloads``; return each camera's reply content."""
    start = time.perf_counter()
    messages, sent = [], 0
    for camera, arrays in payloads.items():
        content = RecordDict({PAYLOAD: arrays_record(arrays), CONFIG: ConfigRecord(config),
                              **(extra or {})})
        sent += message_bytes(content)
        messages.append(Message(content, dst_node_id=nodes[camera], message_type=message_type))
    ids = [nodes[c] for c in payloads]
    replies = replies_by_node(grid.send_and_receive(messages, timeout=timeout), ids, name)
    camera_of = {node: camera for camera, node in nodes.items()}
    out = {camera_of[n]: reply_content(r, f"{n} (camera {camera_of[n]})")
           for n, r in replies.items()}
    stats.append(RoundStats(name, len(messages), sent,
                            sum(message_bytes(c) for c in out.values()),
                            time.perf_counter() - start))
    return out


def _arrays(content: RecordDict, name: str, camera: int) -> dict[str, np.ndarray]:
    record = content.get(name)
    if not isinstance(record, ArrayRecord):
        raise NodeError(f"camera {camera}: reply without a {name!r} record")
    return {k: a.numpy() for k, a in record.items()}


def _pairs(content: RecordDict, camera: int) -> Pairs:
    arrays = _arrays(content, PAYLOAD, camera)
    try:
        return Pairs.from_arrays(arrays, "pairs")
    except KeyError as err:
        raise NodeError(f"camera {camera}: malformed neighbour list (no {err})") from err


def check_banks(banks: Mapping[int, np.ndarray | None], sizes: Mapping[int, int],
                nodes: Mapping[int, int]) -> dict[int, np.ndarray]:
    """Every camera's bank present, (tracklets, d) with one common d, finite; else NodeError
    naming the camera and node, so no labels are ever computed from partial data."""
    missing = sorted(set(sizes) - {c for c, b in banks.items() if b is not None})
    if missing:
        raise NodeError(f"no memory bank from camera(s) {missing} "
                        f"(node(s) {[nodes.get(c) for c in missing]})")
    checked: dict[int, np.ndarray] = {}
    for camera in sorted(sizes):
        bank = banks[camera]
        if bank.ndim != 2 or bank.shape[0] != sizes[camera]:
            raise NodeError(f"camera {camera} (node {nodes.get(camera)}): memory bank of shape "
                            f"{bank.shape}, expected ({sizes[camera]}, d)")
        if not np.isfinite(bank).all():
            raise NodeError(f"camera {camera} (node {nodes.get(camera)}): non-finite memories")
        checked[camera] = bank
    widths = {c: b.shape[1] for c, b in checked.items()}
    common = max(set(widths.values()), key=list(widths.values()).count)
    odd = {c: w for c, w in widths.items() if w != common}
    if odd:
        camera = min(odd)
        raise NodeError(f"camera {camera} (node {nodes.get(camera)}): memory bank of width "
                        f"{odd[camera]}, the other cameras' have {common}")
    return checked


def collect_banks(grid: Grid, nodes: Mapping[int, int], sizes: Mapping[int, int], state: State,
                  config: dict, timeout: float, stats: list[RoundStats]) -> dict[int, np.ndarray]:
    """``query.memory``: every node's memory bank, checked for shape and values."""
    replies = _send_round(grid, nodes, "memory", "query.memory", {c: {} for c in nodes},
                          config, timeout, stats, {WEIGHTS: state_record(state)})
    return check_banks({c: _arrays(r, MEMORY, c).get("features") for c, r in replies.items()},
                       sizes, nodes)


def graph_clusters(edges: Pairs, total: int) -> np.ndarray:
    """Smallest gid of each memory's component: the clustering a graph gives."""
    graph = coo_matrix((np.ones(len(edges)), (edges.owner, edges.member)), shape=(total, total))
    _, comp = connected_components(graph, directed=False)
    smallest = np.full(comp.max() + 1 if total else 0, total, dtype=np.int64)
    np.minimum.at(smallest, comp, np.arange(total))
    return smallest[comp]


def ground_truth(partitions: Path | None, ids: GlobalIds) -> np.ndarray | None:
    """True identity per memory (gid order), for diagnostics only; None if unknown."""
    path = partitions / EVALUATOR_DIR / "train_identities.csv" if partitions else None
    if path is None or not path.is_file():
        return None
    table = pd.read_csv(path)
    truth = np.full(ids.total, -1, dtype=np.int64)
    for camera, rows in table.groupby("camera"):
        truth[ids.gids(int(camera), rows["label"].to_numpy())] = rows["pid"].to_numpy()
    return truth


def distributed_clustering(grid: Grid, nodes: Mapping[int, int], sizes: Mapping[int, int],
                           state: State, config: dict, alpha: int, reach: str, timeout: float,
                           max_distance: float = 0.0
                           ) -> tuple[GlobalIds, np.ndarray, Pairs, Pairs, list[RoundStats]]:
    """Run every round; return ids, cluster id per gid, step-1 edges, kept edges, round stats."""
    stats: list[RoundStats] = []
    banks = collect_banks(grid, nodes, sizes, state, config, timeout, stats)
    ids = GlobalIds.from_sizes({c: len(b) for c, b in banks.items()})
    id_arrays = ids.to_arrays()
    with_ids: Callable[[dict], dict] = lambda arrays: {**arrays, **id_arrays}  # noqa: E731

    top1 = {c: p for c, p in route_top1(banks, ids).items() if len(p.labels)}
    replies = _send_round(grid, nodes, "top1", "query.top1",
                          {c: with_ids(p.to_arrays()) for c, p in top1.items()},
                          {**config, "max-distance": max_distance}, timeout, stats)
    edges = {c: _pairs(replies[c], c) if c in replies else Pairs.empty()
             for c in ids.cameras.tolist()}
    step1 = check_top1_replies(edges, ids)

    triangle = route_triangle(step1, ids)
    replies = _send_round(grid, nodes, "triangle", "query.triangle",
                          {c: with_ids(p.to_arrays()) for c, p in triangle.items()},
                          {**config, "alpha": alpha}, timeout, stats)
    kept_lists = {c: _pairs(r, c) for c, r in replies.items()}
    kept = check_triangle_replies(kept_lists, step1, ids)

    sets: Mapping[int, Pairs] = kept_lists
    for k in range(1, ids.total + 2):
        payloads = route_flood(sets, kept, ids, reach)
        replies = _send_round(grid, nodes, f"flood-{k}", "query.flood",
                              {c: with_ids(p.to_arrays()) for c, p in payloads.items()},
                              config, timeout, stats)
        try:
            flood = {c: FloodReply.from_arrays(_arrays(r, PAYLOAD, c))
                     for c, r in replies.items()}
        except KeyError as err:
            raise NodeError(f"flood reply without {err}") from err
        if not check_flood_replies(flood, ids):
            break
        sets = {c: r.sets for c, r in flood.items()}
    return ids, labels_from_flood(flood, ids), step1, kept, stats


def cluster_phase(grid: Grid, nodes: list[tuple[int, int]], sizes: Mapping[int, int],
                  state: State, config: dict, alpha: int, reach: str, timeout: float,
                  run: RunDir, partitions: Path | None, max_distance: float = 0.0,
                  tag: str = ""
                  ) -> dict[int, np.ndarray]:
    """Global class (0..K-1) per local tracklet of every camera; saved and reused on resume.

    ``tag`` tells apart the clusterings of one run when it re-clusters during the walk.
    """
    saved = run.path / f"clusters{tag}.npz"
    if saved.is_file():
        data = np.load(saved)
        ids = GlobalIds.from_arrays(data)
        return ids.split(data["classes"])
    by_camera = {camera: node for node, camera in nodes}
    ids, cluster_of, step1, kept, stats = distributed_clustering(
        grid, by_camera, sizes, state, config, alpha, reach, timeout, max_distance)
    _, classes = np.unique(cluster_of, return_inverse=True)
    summary = {
        "alpha": alpha, "reach": reach, "max_distance": max_distance, "rounds": len(stats),
        "memories": ids.total,
        "edges_mutual": len(step1), "edges_kept": len(kept) // 2,
        "clusters": int(classes.max()) + 1 if ids.total else 0,
        "messages": sum(s.messages for s in stats),
        "bytes": sum(s.bytes_sent + s.bytes_received for s in stats),
        "seconds": sum(s.seconds for s in stats),
        "per_round": [s.__dict__ | {"bytes": s.bytes_sent + s.bytes_received} for s in stats],
    }
    truth = ground_truth(partitions, ids)
    if truth is not None and (truth >= 0).all():
        summary["diagnostics"] = {
            "triangle": cluster_scores(cluster_of, truth),
            "mutual_top1": cluster_scores(graph_clusters(step1, ids.total), truth),
        }
    run.write_json(f"clustering{tag}.json", summary)
    np.savez(saved, classes=classes.astype(np.int64), cluster_of=cluster_of, **ids.to_arrays())
    log(INFO, "Clustering: %d memories, %d mutual top-1 edges, %d kept (alpha %d), %d clusters, "
        "%d rounds, %.2f MB, %.1f s", ids.total, summary["edges_mutual"],
        summary["edges_kept"], alpha, summary["clusters"], summary["rounds"],
        summary["bytes"] / 1e6, summary["seconds"])
    if "diagnostics" in summary:
        tri = summary["diagnostics"]["triangle"]
        log(INFO, "Clusters vs true identities: precision %.2f recall %.2f F %.2f NMI %.2f",
            tri["precision"], tri["recall"], tri["fscore"], tri["nmi"])
    return ids.split(classes.astype(np.int64))
