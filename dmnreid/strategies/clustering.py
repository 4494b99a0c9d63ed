"""Distributed clustering over Flower messages (paper 3.3): the server relays, nodes decide.

Rounds, one message per node each: ``query.memory`` (memory banks), ``query.top1`` (mutual
top-1 edges of the camera pairs dealt to a node; none with ``top1-on = "server"``),
``query.triangle`` (edges that pass the triangle relation), then ``query.flood`` until every
kept edge joins equal labels. The rounds, the relaying and the reply checks are
:func:`dmnreid.memory.protocol.run_protocol`'s, the same code the in-process driver and its
tests use; this module only turns payloads into messages and replies back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dmnreid.config import ConfigError, RunConfig
from dmnreid.data_prep.partition import EVALUATOR_DIR
from dmnreid.data_prep.records import DatasetError
from dmnreid.memory.diagnostics import cluster_scores
from dmnreid.memory.protocol import (
    AllCamerasLost,
    LazyPayloads,
    Pairs,
    RoundStats,
    Send,
    Top1Payload,
    TriangleReply,
    run_protocol,
)
from dmnreid.memory.reference import GlobalIds
from dmnreid.messages import (
    CONFIG,
    PAYLOAD,
    WEIGHTS,
    Answers,
    NodeError,
    arrays_record,
    causes,
    exchange,
    message_bytes,
    state_record,
    wire_features,
)
from dmnreid.run_dir import RunDir
from dmnreid.strategies.hops import State

MEMORY = "memory"


def _send_round(grid: Grid, nodes: Mapping[int, int], name: str, message_type: str,
                payloads: Mapping[int, Mapping[str, np.ndarray]], config: dict,
                timeout: float, stats: list[RoundStats],
                extra: Mapping[str, ArrayRecord] | None = None) -> Answers:
    """One message per camera in ``payloads``; each camera's reply content, and why each
    camera that gave none is missing. A payload read from a ``LazyPayloads`` is built and
    turned into its message at once, so its arrays never exist twice for every camera."""
    start = time.perf_counter()
    messages, sent = {}, 0
    for camera, arrays in payloads.items():
        content = RecordDict({PAYLOAD: arrays_record(arrays), CONFIG: ConfigRecord(config),
                              **(extra or {})})
        sent += message_bytes(content)
        messages[camera] = Message(content, dst_node_id=nodes[camera],
                                   message_type=message_type)
    answers = exchange(grid, messages, timeout)
    stats.append(RoundStats(name, len(messages), sent,
                            sum(message_bytes(c) for c in answers.content.values()),
                            time.perf_counter() - start))
    log(INFO, "Clustering round %s: %d of %d cameras answered in %.1f s", name,
        len(answers.content), len(messages), stats[-1].seconds)
    return answers


def _arrays(content: RecordDict, name: str, camera: int) -> dict[str, np.ndarray]:
    record = content.get(name)
    if not isinstance(record, ArrayRecord):
        raise NodeError(f"camera {camera}: reply without a {name!r} record")
    return {k: a.numpy() for k, a in record.items()}


def usable_banks(banks: Mapping[int, np.ndarray | None], sizes: Mapping[int, int],
                 nodes: Mapping[int, int]) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """The banks that are (tracklets, d) with the common d and finite, and why each other
    camera's bank is refused (missing, wrong shape, non-finite), naming camera and node."""
    checked: dict[int, np.ndarray] = {}
    refused: dict[int, str] = {}
    for camera in sorted(sizes):
        bank = banks.get(camera)
        where = f"camera {camera} (node {nodes.get(camera)})"
        if bank is None:
            refused[camera] = f"no memory bank from {where}"
        elif bank.ndim != 2 or bank.shape[0] != sizes[camera]:
            refused[camera] = (f"{where}: memory bank of shape {bank.shape}, expected "
                               f"({sizes[camera]}, d)")
        elif not np.isfinite(bank).all():
            refused[camera] = f"{where}: non-finite memories"
        else:
            checked[camera] = bank
    if checked:
        widths = [b.shape[1] for b in checked.values()]
        common = max(set(widths), key=widths.count)
        for camera in [c for c, b in checked.items() if b.shape[1] != common]:
            refused[camera] = (f"camera {camera} (node {nodes.get(camera)}): memory bank of "
                               f"width {checked.pop(camera).shape[1]}, the other cameras' "
                               f"have {common}")
    return checked, refused


def collect_banks(grid: Grid, nodes: Mapping[int, int], sizes: Mapping[int, int], state: State,
                  config: dict, timeout: float, stats: list[RoundStats], dtype: str = "float32"
                  ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """``query.memory``: the usable memory bank of every node that answered, and why each
    other camera has none."""
    answers = _send_round(grid, nodes, "memory", "query.memory", {c: {} for c in nodes},
                          config, timeout, stats, {WEIGHTS: state_record(state, dtype)})
    banks = {}
    for camera, reply in answers.content.items():
        try:
            banks[camera] = _arrays(reply, MEMORY, camera).get("features")
        except NodeError as err:
            answers.missing[camera] = str(err)
    checked, refused = usable_banks(banks, {c: sizes[c] for c in banks}, nodes)
    return checked, {**answers.missing, **refused}


def graph_clusters(edges: Pairs, total: int) -> np.ndarray:
    """Smallest gid of each memory's component: the clustering a graph gives."""
    graph = coo_matrix((np.ones(len(edges)), (edges.owner, edges.member)), shape=(total, total))
    _, comp = connected_components(graph, directed=False)
    smallest = np.full(comp.max() + 1 if total else 0, total, dtype=np.int64)
    np.minimum.at(smallest, comp, np.arange(total))
    return smallest[comp]


def identities_file(partitions: Path | None) -> Path | None:
    """The evaluator's true identity of every training tracklet (None without partitions)."""
    return partitions / EVALUATOR_DIR / "train_identities.csv" if partitions else None


def ground_truth(partitions: Path | None, ids: GlobalIds) -> np.ndarray | None:
    """True identity per memory (gid order), for diagnostics only; None if unknown."""
    path = identities_file(partitions)
    if path is None or not path.is_file():
        return None
    table = pd.read_csv(path)
    truth = np.full(ids.total, -1, dtype=np.int64)
    for camera, rows in table[table["camera"].isin(ids.cameras)].groupby("camera"):
        truth[ids.gids(int(camera), rows["label"].to_numpy())] = rows["pid"].to_numpy()
    return truth


@dataclass
class Clustering:
    """The outcome of the protocol: ids of the cameras that took part, cluster id per gid,
    step-1 and kept edges, round stats, and the cameras left out, with the round each went
    missing in and why."""

    ids: GlobalIds
    cluster_of: np.ndarray
    step1: Pairs
    kept: Pairs
    stats: list[RoundStats]
    missing: dict[int, dict[str, str]]
    banks: dict[int, np.ndarray]


# how each round's reply is read: the payload's arrays -> what the protocol checks
REPLIES: dict[str, Callable[[dict[str, np.ndarray]], object]] = {
    "top1": lambda arrays: Pairs.from_arrays(arrays, "pairs"),
    "triangle": TriangleReply.from_arrays,
    "flood": lambda arrays: arrays["labels"],
}


def flower_send(grid: Grid, nodes: Mapping[int, int], config: dict, alpha: int,
                max_distance: float, timeout: float, stats: list[RoundStats],
                feature_dtype: str) -> Send:
    """The protocol's rounds as Flower messages (``query.top1``, ``query.triangle``,
    ``query.flood``): each payload becomes its message when read, banks in ``feature_dtype``;
    a camera without a usable reply is reported lost, with the cause."""

    def send(name: str, ids: GlobalIds, payloads: Mapping[int, object]
             ) -> tuple[dict[int, object], dict[int, str]]:
        kind = name.partition("-")[0]
        settings = {**config, **({"max-distance": max_distance} if kind == "top1" else {}),
                    **({"alpha": alpha} if kind == "triangle" else {})}

        def arrays(camera: int) -> dict[str, np.ndarray]:
            payload = payloads[camera]
            wire = {"features": wire_features(payload.features, feature_dtype)} \
                if isinstance(payload, Top1Payload) else {}
            return {**payload.to_arrays(), **wire, **ids.to_arrays()}

        answers = _send_round(grid, nodes, name, f"query.{kind}",
                              LazyPayloads(payloads, arrays), settings, timeout, stats)
        replies, lost = {}, dict(answers.missing)
        for camera, content in answers.content.items():
            try:
                replies[camera] = REPLIES[kind](_arrays(content, PAYLOAD, camera))
            except (NodeError, KeyError) as err:
                lost[camera] = f"malformed reply ({err})"
        return replies, lost

    return send


def distributed_clustering(grid: Grid, nodes: Mapping[int, int], sizes: Mapping[int, int],
                           state: State, config: dict, alpha: int, reach: str, timeout: float,
                           max_distance: float = 0.0, dtype: str = "float32",
                           feature_dtype: str = "float32", top1_on: str = "nodes"
                           ) -> Clustering:
    """Run every round over the cameras that answer.

    A camera without a usable bank at the memory round is left out of this clustering; one
    lost in a later round is dropped with its edges and the protocol goes on without it
    (``run_protocol``: from the triangle round, or dealing a lost top-1 node's pairs again),
    so labels only ever come from cameras that answered every round, and equal those of a
    run on those cameras alone.
    """
    stats: list[RoundStats] = []
    banks, refused = collect_banks(grid, nodes, sizes, state, config, timeout, stats, dtype)
    missing = {c: {"round": "memory", "cause": why} for c, why in refused.items()}
    if not banks:
        raise NodeError("no camera gave a usable memory bank: " + causes(
            {c: m["cause"] for c, m in missing.items()}))
    send = flower_send(grid, nodes, config, alpha, max_distance, timeout, stats, feature_dtype)
    try:
        out = run_protocol(banks, alpha, send, reach=reach, top1_on=top1_on,
                           max_distance=max_distance or None)
    except AllCamerasLost as lost:
        raise NodeError("no camera answered every clustering round: " + causes(
            {c: m["cause"] for c, m in {**missing, **lost.missing}.items()})) from lost
    if out.missing:
        log(WARNING, "Clustering went on without camera(s) %s", sorted(out.missing))
    missing.update(out.missing)
    return Clustering(out.ids, out.cluster_of, out.step1, out.kept, stats, missing,
                      {c: banks[c] for c in out.ids.cameras.tolist()})


@dataclass(frozen=True)
class GlobalLabels:
    """What the incremental walk trains on: a global class (0..K-1) per local tracklet of
    every camera that took part, the cameras left out (round and cause), and the memory
    banks the classes label (what a prototype memory is built from)."""

    classes: dict[int, np.ndarray]
    missing: dict[int, dict[str, str]]
    banks: dict[int, np.ndarray]

    @property
    def num_classes(self) -> int:
        return max((int(c.max()) + 1 for c in self.classes.values() if len(c)), default=0)


def _saved_labels(run: RunDir, tag: str) -> GlobalLabels | None:
    """A clustering (or the oracle's labels) this run already made: reused on resume."""
    saved = run.path / f"clusters{tag}.npz"
    if not saved.is_file():
        return None
    data = np.load(saved)
    ids = GlobalIds.from_arrays(data)
    missing = run.read_json(f"clustering{tag}.json").get("missing", {})
    return GlobalLabels(ids.split(data["classes"]), {int(c): m for c, m in missing.items()},
                        ids.split(data["banks"]) if "banks" in data else {})


def _save_labels(run: RunDir, tag: str, ids: GlobalIds, classes: np.ndarray,
                 banks: Mapping[int, np.ndarray], summary: dict,
                 missing: Mapping[int, dict[str, str]], **arrays: np.ndarray) -> GlobalLabels:
    run.write_json(f"clustering{tag}.json", summary)
    if banks:  # those of the labelled cameras, one row per memory
        arrays["banks"] = np.concatenate([np.asarray(banks[c], dtype=np.float32)
                                          for c in ids.cameras.tolist()])
    np.savez(run.path / f"clusters{tag}.npz", classes=classes.astype(np.int64), **arrays,
             **ids.to_arrays())
    return GlobalLabels(ids.split(classes.astype(np.int64)), dict(missing), dict(banks))


def cluster_phase(grid: Grid, nodes: list[tuple[int, int]], sizes: Mapping[int, int],
                  state: State, config: dict, alpha: int, reach: str, timeout: float,
                  run: RunDir, partitions: Path | None, max_distance: float = 0.0,
                  tag: str = "", dtype: str = "float32", feature_dtype: str = "float32"
                  ) -> GlobalLabels:
    """The distributed protocol's global classes, saved and reused on resume.

    ``tag`` tells apart the clusterings of one run when it re-clusters during the walk;
    ``top1-on`` comes from the run's settings, which ``config`` carries to every node.
    """
    saved = _saved_labels(run, tag)
    if saved is not None:
        return saved
    top1_on = RunConfig.from_mapping(json.loads(config["run-config"])).top1_on
    by_camera = {camera: node for node, camera in nodes}
    result = distributed_clustering(grid, by_camera, sizes, state, config, alpha, reach,
                                    timeout, max_distance, dtype, feature_dtype, top1_on)
    ids, cluster_of, step1, kept, stats = (result.ids, result.cluster_of, result.step1,
                                           result.kept, result.stats)
    _, classes = np.unique(cluster_of, return_inverse=True)
    summary = {
        "labels": "clusters",
        "cameras": ids.cameras.tolist(),
        "missing": {str(c): m for c, m in sorted(result.missing.items())},
        "alpha": alpha, "reach": reach, "top1_on": top1_on, "max_distance": max_distance,
        "rounds": len(stats),
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
    labels = _save_labels(run, tag, ids, classes, result.banks, summary, result.missing,
                          cluster_of=cluster_of)
    log(INFO, "Clustering: %d memories, %d mutual top-1 edges, %d kept (alpha %d), %d clusters, "
        "%d rounds, %.2f MB, %.1f s", ids.total, summary["edges_mutual"],
        summary["edges_kept"], alpha, summary["clusters"], summary["rounds"],
        summary["bytes"] / 1e6, summary["seconds"])
    if "diagnostics" in summary:
        tri = summary["diagnostics"]["triangle"]
        log(INFO, "Clusters vs true identities: precision %.2f recall %.2f F %.2f NMI %.2f",
            tri["precision"], tri["recall"], tri["fscore"], tri["nmi"])
    if result.missing:
        log(WARNING, "Clustering left out camera(s) %s: their tracklets get no global label "
            "and they sit out the incremental walk until a new clustering", sorted(result.missing))
    return labels


def check_oracle(partitions: Path | None) -> None:
    """``incremental-labels = "oracle"`` needs the evaluator's true identity of every training
    tracklet; a ConfigError names what is missing."""
    path = identities_file(partitions)
    if path is None or not path.is_file():
        where = f"{path} does not exist" if path else \
            "the server holds no partitions (dataset = 'devices')"
        raise ConfigError("incremental-labels = 'oracle' trains on the true identities from "
                          f"the evaluator's ground truth, and there is none: {where}")


def true_classes(partitions: Path | None, ids: GlobalIds) -> np.ndarray:
    """The oracle's global class per memory (gid order): its true identity, numbered 0..K-1;
    a DatasetError names the file when a tracklet has none."""
    truth = ground_truth(partitions, ids)
    if truth is None or (truth < 0).any():
        raise DatasetError(f"{identities_file(partitions)} holds no true identity for every "
                           "training tracklet: incremental-labels = 'oracle' and undoing the "
                           "clusters' wrong merges (experiments) need them")
    return np.unique(truth, return_inverse=True)[1].astype(np.int64)


def oracle_phase(grid: Grid, nodes: list[tuple[int, int]], sizes: Mapping[int, int],
                 state: State, config: dict, timeout: float, run: RunDir, partitions: Path,
                 with_banks: bool, tag: str = "", dtype: str = "float32") -> GlobalLabels:
    """``incremental-labels = "oracle"`` (experiments only): each tracklet's true identity
    as its global class, in place of the clusters; with ``with_banks`` the nodes' memory
    banks too (``query.memory``), for a prototype memory. Saved and reused on resume like a
    clustering, its record marked ``"labels": "oracle"``."""
    saved = _saved_labels(run, tag)
    if saved is not None:
        return saved
    by_camera = {camera: node for node, camera in nodes}
    stats: list[RoundStats] = []
    banks, refused = collect_banks(grid, by_camera, sizes, state, config, timeout, stats,
                                   dtype) if with_banks else ({}, {})
    cameras = sorted(banks) if with_banks else sorted(by_camera)
    if not cameras:
        raise NodeError("no camera gave a usable memory bank: " + causes(refused))
    ids = GlobalIds.from_sizes({c: sizes[c] for c in cameras})
    classes = true_classes(partitions, ids)
    missing = {c: {"round": "memory", "cause": why} for c, why in refused.items()}
    summary = {
        "labels": "oracle",
        "note": "true identities from the evaluator's ground truth, not clusters: an "
                "experiment's upper limit, not a federated method",
        "cameras": ids.cameras.tolist(), "missing": {str(c): m for c, m in missing.items()},
        "memories": ids.total, "clusters": int(classes.max()) + 1 if ids.total else 0,
        "rounds": len(stats), "messages": sum(s.messages for s in stats),
        "bytes": sum(s.bytes_sent + s.bytes_received for s in stats),
        "seconds": sum(s.seconds for s in stats),
    }
    log(WARNING, "incremental-labels = 'oracle': the incremental walk trains on the TRUE "
        "identities of %d tracklets (%d identities), not on clusters", ids.total,
        summary["clusters"])
    return _save_labels(run, tag, ids, classes, banks, summary, missing)
