"""The pipeline in one process, for experiments: the very node code a Flower run uses.

Hops (:func:`dmnreid.node.walk_hop`), memory banks, the distributed clustering protocol's
node functions and routing (``cluster_distributed``), the hop order, unification and the
evaluator, without the Flower transport. Walking weights go through the same
``transfer-dtype`` conversion as on the wire and memory banks through ``feature-dtype``'s,
so for the same settings the scores equal those of a Flower run with server-side evaluation.

Where the incremental walk's labels come from is explicit (:class:`Labels`): the clusters
(the paper), local labels (a control: the walk goes on), or the true identities (an oracle
for experiments; only this path reads them, and a Flower run has no such option). A network
made with ``correct_merges_only`` undoes the clusters' wrong merges with the true identities
(experiments only): the same clustering at precision 1, to tell wrong merges from missing
ones.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from dmnreid.compute import resolve_device
from dmnreid.config import ConfigError, RunConfig, Schedule
from dmnreid.data_prep.partition import load_node, read_partition
from dmnreid.experiments.settings import configured
from dmnreid.memory.diagnostics import cluster_scores
from dmnreid.memory.protocol import Pairs, cluster_distributed
from dmnreid.memory.prototypes import PrototypeMemory, build_memory
from dmnreid.memory.reference import GlobalIds
from dmnreid.messages import METRICS, WEIGHTS, as_sent, state_record, wire_features
from dmnreid.node import HopResult, Targets, memory_bank, walk_hop
from dmnreid.prepare import prepare_partitions
from dmnreid.reid.evaluator import Evaluator
from dmnreid.reid.model import ReidNet, build_model, load_walking_state, walking_state
from dmnreid.server_app import pretrained_file
from dmnreid.strategies.camera_training import aggregated_state
from dmnreid.strategies.clustering import graph_clusters, ground_truth, true_classes
from dmnreid.strategies.evaluation import evaluate_state
from dmnreid.strategies.style import held_out_images, mean_gaps, measure_gaps
from dmnreid.strategies.walk_strategy import hop_order
from dmnreid.strategies.walkers import (
    Walkers,
    evaluates_after,
    merge_interval,
    owned_entries,
    step_members,
    step_number,
    steps,
)
from dmnreid.style.node_transfer import trained_generator, transfer_style

State = OrderedDict[str, torch.Tensor]
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    """Progress sink that prints nothing."""


@dataclass(frozen=True)
class Labels:
    """What an incremental walk trains on: ``classes`` per camera (one global class per
    local tracklet) or None for local labels; ``source`` says where they came from."""

    source: str
    classes: dict[int, np.ndarray] | None = None
    num_classes: int = 0
    summary: dict = field(default_factory=dict)
    banks: dict[int, np.ndarray] | None = None  # the memory banks the classes came from


@dataclass
class Walked:
    """A walk's (or FedAvg's) end: the walking weights, each visited camera's last copy,
    images seen, and one record per node trained (step, camera, loss, images, seconds)."""

    state: State
    copies: dict[int, State]
    images: int
    hops: list[dict]

    def deployed_seconds(self) -> float:
        """Training time a deployment would spend: the steps one after another, the nodes
        of one step (a FedAvg round, the walkers' hops) at once; messages and evaluations
        not counted."""
        longest: dict[int, float] = {}
        for record in self.hops:
            longest[record["step"]] = max(longest.get(record["step"], 0.0), record["seconds"])
        return sum(longest.values())


class Network:
    """One camera network in this process: node folders, weights, model and evaluator."""

    def __init__(self, cfg: RunConfig, progress: Progress = _quiet) -> None:
        # scored on the server's copy of the test split: the numbers federated evaluation
        # gives too (every camera's queries against every gallery)
        cfg = replace(cfg, eval_mode="server")
        partitions = prepare_partitions(cfg)
        if partitions is None:
            raise ConfigError("dataset = 'devices' has no node folders on this machine: the "
                              "in-process driver needs a partitioned dataset")
        self.cfg, self.partitions, self.progress = cfg, partitions, progress
        self.weights = pretrained_file(cfg)
        self.nodes = {n["camera"]: partitions / n["node"]
                      for n in read_partition(partitions)["nodes"]}
        self.cameras = sorted(self.nodes)
        self.model: ReidNet = build_model(cfg.arch, self.weights, 1, cfg.freeze_stem)
        self.evaluator = Evaluator(partitions, cfg.image_height, cfg.image_width,
                                   device=resolve_device(cfg.device))
        self.correct_merges_only = False

    def with_correct_merges_only(self) -> Network:
        """This network with every clustering's wrong merges undone (reads the truth)."""
        other = copy.copy(self)
        other.correct_merges_only = True
        return other

    def with_config(self, **changes: object) -> Network:
        """This network under other settings (``style_transfer``, ``alpha``...): the same
        node folders, model and evaluator, so nothing is loaded twice."""
        other = copy.copy(self)
        other.cfg = configured(self.cfg, **changes)
        return other

    def initial_state(self) -> State:
        return walking_state(self.model, self.cfg.freeze_stem, self.cfg.bn_mode)

    def wire_bytes(self, state: State) -> int:
        """Bytes of the walking weights in one message (``transfer-dtype``)."""
        return sum(len(a.data) for a in state_record(state, self.cfg.transfer_dtype).values())

    def wire(self, state: State) -> State:
        """What a message would carry: the walking weights in ``transfer-dtype``."""
        return as_sent(state, self.cfg.transfer_dtype)

    def score(self, state: State) -> dict:
        """CMC/mAP on the server's copy of the test split; with bn-mode = shared also what
        camera statistics estimated at test time alone would give (``camera-eval-mAP``)."""
        scores = dict(evaluate_state(state, self.cfg, self.model, self.evaluator))
        if self.cfg.bn_mode == "shared":
            load_walking_state(self.model, state, self.cfg.freeze_stem)
            scores["camera-eval-mAP"] = self.evaluator.evaluate(
                self.model, "camera", self.cfg.bn_adapt_images)["mAP"]
        return scores

    def style(self, grid: Path) -> dict:
        """Every non-target node's CycleGAN (reused when already trained) and the camera
        gap it leaves; the translation grid (a PNG) goes to ``grid``."""
        data = {c: load_node(folder) for c, folder in self.nodes.items()}
        target = next(iter(data.values())).target_camera
        generators, seconds = {}, []
        for camera, node in data.items():
            self.progress(f"style transfer: camera {camera}")
            metrics = transfer_style(node, self.cfg)
            if not metrics["skipped"]:
                seconds.append(metrics["train-seconds"])
                generators[camera] = trained_generator(node, self.cfg)
        gaps = measure_gaps(generators, held_out_images(self.partitions, self.cfg), target,
                            self.model, self.cfg, grid)
        mean = {k: v for k, v in mean_gaps(gaps, generators).items() if v is not None}
        return {**mean, "floor": gaps["floor"], "train_seconds": sum(seconds)}

    def walk(self, state: State, visits: list[int], labels: Labels | None = None,
             first_hop: int = 0, what: str = "walk", seed: int | None = None,
             phase_hops: int | None = None, segment: int | None = None) -> Walked:
        """Hops planned for the cameras ``visits``, numbered from ``first_hop``, in steps of
        ``walkers`` hops merged as the server merges them (every ``walker-merge`` steps,
        before each of the ``phase_hops``-hop phase's evaluations, at the end; ``seed``: the
        phase's walk seed; steps restart every ``segment`` hops). With ``labels`` the hops
        train on those global classes (a fresh head per hop, or the travelling one, or a
        prototype memory)."""
        cfg, k = self.cfg, self.cfg.walkers
        seed = cfg.seed if seed is None else seed
        phase_hops = phase_hops or first_hop + len(visits)
        segment = segment or phase_hops
        eval_every = self.schedule().eval_every
        memory = self.prototypes(labels)
        travelling = memory.to_state() if memory is not None else None
        team = Walkers.start(k, state, travelling, memory is not None)
        memory_bytes = self.memory_bytes(memory)  # each hop's message: the same size
        copies, images, records = {}, 0, []
        start = time.perf_counter()
        plan = steps(first_hop, first_hop + len(visits), k)
        for done, hops in enumerate(plan, start=1):
            chosen = step_members([visits[h - first_hop] for h in hops], self.cameras,
                                  [w.member for w in team.walkers[:len(hops)]], seed,
                                  hops.start)
            for index, (hop, camera) in enumerate(zip(hops, chosen, strict=True)):
                walker = team.walkers[index]
                walker.member = camera
                result = walk_hop(self.nodes[camera], cfg, self.weights, self.wire(walker.state),
                                  hop, self.targets(labels, camera, walker.head, memory))
                head, owned = self.travelling(result, labels, camera)
                copies[camera] = self.wire(result.state)
                team.hopped(index, hop, copies[camera], head, result.stats.images, owned)
                images += result.stats.images
                records.append({**_record(hop, step_number(hop, segment, k), index,
                                          camera, result), "memory-bytes": memory_bytes})
            team.since_merge += 1
            if team.since_merge >= merge_interval(cfg.walker_merge, len(self.cameras), k):
                team.merge()
            if evaluates_after(hops, eval_every, phase_hops):
                team.merge()  # the server merges before every evaluation
            self.progress(f"{what}: step {done}/{len(plan)} cameras "
                          f"{[c for c in chosen if c is not None]}, loss "
                          f"{result.stats.loss:.3f}, ETA "
                          f"{_eta(time.perf_counter() - start, done, len(plan))}")
        state, _ = team.merge()
        return Walked(state, copies, images, records)

    def targets(self, labels: Labels | None, camera: int, head: State | None,
                memory: PrototypeMemory | None) -> Targets | None:
        """What a hop on ``camera`` learns with ``labels``: its global classes, and the
        walker's travelling head or prototype memory."""
        if labels is None or labels.classes is None:
            return None
        travelling = head if self.cfg.incremental_head == "travel" else None
        return Targets(labels.classes[camera], labels.num_classes, travelling,
                       PrototypeMemory.from_state(head) if memory is not None else None)

    def travelling(self, result: HopResult, labels: Labels | None, camera: int
                   ) -> tuple[State | None, np.ndarray | None]:
        """What travels on from a hop, as the server receives it (a head or a memory, in
        ``transfer-dtype``), and the memory entries the hop refreshed."""
        if result.memory is not None:
            refreshed = self.wire(result.memory.to_state())
            return refreshed, owned_entries(refreshed, labels.classes[camera], camera)
        if labels is not None and labels.classes is not None \
                and self.cfg.incremental_head == "travel":
            return self.wire(result.head), None
        return None, None

    def prototypes(self, labels: Labels | None) -> PrototypeMemory | None:
        """With ``incremental-loss = "prototype"``: the cluster memory the server would build
        from the banks and send with the weights, rounded as on the wire."""
        if self.cfg.incremental_loss != "prototype" or labels is None \
                or labels.classes is None:
            return None
        if labels.banks is None:
            raise ValueError(f"{labels.source} labels without the memory banks they label")
        return self.wire_memory(build_memory(labels.banks, labels.classes,
                                             self.cfg.prototype_cameras))

    def wire_memory(self, memory: PrototypeMemory) -> PrototypeMemory:
        """The memory as a message carries it (vectors in ``transfer-dtype``)."""
        return PrototypeMemory.from_state(self.wire(memory.to_state()))

    def memory_bytes(self, memory: PrototypeMemory | None) -> int:
        """Bytes of the prototype memory a hop's message carries (and its reply carries
        back); 0 without one."""
        if memory is None:
            return 0
        return state_record(memory.to_state(), self.cfg.transfer_dtype).count_bytes()

    def fedavg(self, state: State, rounds: int, labels: Labels | None = None,
               first_round: int = 0, what: str = "walk") -> Walked:
        """FedAvg rounds (``walk-strategy = "fedavg"``), numbered from ``first_round``: every
        camera (with ``labels``, every labelled one) trains from the same weights with its
        own head, kept across these rounds, and Flower's FedAvg aggregation averages the
        walking layers weighted by images, as the server does."""
        cameras = self.cameras if labels is None or labels.classes is None \
            else sorted(labels.classes)
        heads: dict[int, State] = {}
        copies, images, records = {}, 0, []
        start = time.perf_counter()
        for done, step in enumerate(range(first_round, first_round + rounds), start=1):
            replies, sent = [], self.wire(state)
            for camera in cameras:
                targets = Targets(head=heads.get(camera))
                if labels is not None and labels.classes is not None:
                    targets = Targets(labels.classes[camera], labels.num_classes,
                                      heads.get(camera))
                result = walk_hop(self.nodes[camera], self.cfg, self.weights, sent, step,
                                  targets)
                heads[camera], copies[camera] = result.head, self.wire(result.state)
                images += result.stats.images
                records.append(_record(step, step, -1, camera, result))
                replies.append(RecordDict({
                    WEIGHTS: state_record(copies[camera]),
                    METRICS: MetricRecord({"images": result.stats.images})}))
            state = aggregated_state(aggregate_arrayrecords(replies, "images"), state)
            self.progress(f"{what}: round {done}/{rounds}, loss "
                          f"{np.mean([r['loss'] for r in records[-len(cameras):]]):.3f}, ETA "
                          f"{_eta(time.perf_counter() - start, done, rounds)}")
        return Walked(state, copies, images, records)

    def schedule(self) -> Schedule:
        """The run's phases in steps on this network's cameras, resolved as the server does."""
        return self.cfg.schedule(len(self.cameras))

    def order(self, hops: int, seed: int) -> list[int]:
        """The cameras a walk of ``hops`` visits (the server's order for the same seed)."""
        return [self.cameras[i]
                for i in hop_order(len(self.cameras), hops, self.cfg.walk_order, seed)]

    def first_walk(self, state: State) -> Walked:
        steps = self.schedule().walk
        if self.cfg.walk_strategy == "fedavg":
            return self.fedavg(state, steps)
        return self.walk(state, self.order(steps, self.cfg.seed), seed=self.cfg.seed,
                         phase_hops=steps)

    def incremental(self, state: State) -> tuple[Walked, list[dict]]:
        """The incremental walk (paper 3.4) from ``state`` on the labels ``incremental-labels``
        names; clusters are recomputed every ``recluster-every`` hops, as in a Flower run.
        Returns the walk and each clustering's diagnostics."""
        source, plan = self.cfg.incremental_labels, self.schedule()
        steps = plan.incremental
        visits = self.order(steps, self.cfg.seed + 1)
        every = plan.recluster_every if source == "clusters" else steps
        walked = Walked(state, {}, 0, [])
        clusterings = []
        for first in range(0, steps, every):
            labels = {"clusters": self.clusters, "oracle": self.truth,
                      "local": lambda _: Labels("local")}[source](walked.state)
            if labels.summary:
                clusterings.append(labels.summary)
            what = f"incremental ({source})"
            part = self.fedavg(walked.state, min(every, steps - first), labels, first, what) \
                if self.cfg.walk_strategy == "fedavg" else \
                self.walk(walked.state, visits[first:first + every], labels, first, what,
                          self.cfg.seed + 1, steps, every)
            walked = Walked(part.state, {**walked.copies, **part.copies},
                            walked.images + part.images, walked.hops + part.hops)
        return walked, clusterings

    def banks(self, state: State) -> dict[int, np.ndarray]:
        """Every node's memory bank from ``state`` as ``query.memory`` carries it
        (``transfer-dtype``; an average of walkers or of FedAvg's nodes is not exactly
        representable in it), the banks rounded as they travel (``feature-dtype``)."""
        sent = self.wire(state)
        return {c: wire_features(memory_bank(self.nodes[c], self.cfg, self.weights, sent),
                                 self.cfg.feature_dtype).astype(np.float32)
                for c in self.cameras}

    def clusters(self, state: State) -> Labels:
        """Global classes from the distributed protocol, with diagnostics against the true
        identities (read for the diagnostics only)."""
        self.progress("clustering: memory banks and the distributed protocol")
        banks = self.banks(state)
        result, rounds = cluster_distributed(banks, self.cfg.alpha,
                                             reach=self.cfg.flood_reach,
                                             max_distance=self.cfg.max_distance)
        summary = {"edges_mutual": result.edges_mutual, "edges_kept": result.edges_kept,
                   "clusters": result.clusters, "rounds": len(rounds)}
        truth = ground_truth(self.partitions, result.ids)
        cluster_of = result.cluster_of
        if self.correct_merges_only:
            cluster_of = correct_merges(result.kept_edges,
                                        true_classes(self.partitions, result.ids))
            summary["wrong_merges_undone"] = True
        if truth is not None:
            mutual = cluster_scores(graph_clusters(Pairs(*result.mutual_edges.T),
                                                   result.ids.total), truth)
            summary.update(cluster_scores(cluster_of, truth),
                           mutual_top1_precision=mutual["precision"],
                           mutual_top1_recall=mutual["recall"])
        _, flat = np.unique(cluster_of, return_inverse=True)
        return Labels("clusters", result.ids.split(flat.astype(np.int64)),
                      int(flat.max()) + 1, summary, banks)

    def truth(self, state: State | None = None) -> Labels:
        """The oracle: each tracklet's true identity as its global class (and, for a
        prototype memory, the banks under ``state``)."""
        ids = GlobalIds.from_sizes({c: load_node(self.nodes[c]).num_classes
                                    for c in self.cameras})
        flat = true_classes(self.partitions, ids)
        banks = self.banks(state) \
            if state is not None and self.cfg.incremental_loss == "prototype" else None
        return Labels("oracle", ids.split(flat), int(flat.max()) + 1,
                      {"clusters": int(flat.max()) + 1}, banks)


def correct_merges(edges: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The clustering the kept ``edges`` (E, 2 gids) give once every edge between two true
    identities is dropped: each cluster splits into its correctly merged parts."""
    right = edges[truth[edges[:, 0]] == truth[edges[:, 1]]]
    return graph_clusters(Pairs(right[:, 0], right[:, 1]), len(truth))


def _record(hop: int, step: int, walker: int, camera: int, result: HopResult) -> dict:
    """One node's training in a walk or FedAvg round, as ``Walked.hops`` holds it (a FedAvg
    round's hop and step are its number, its walker -1, as in hops.jsonl)."""
    return {"hop": hop, "step": step, "walker": walker, "camera": camera,
            "loss": result.stats.loss,
            "images": result.stats.images, "seconds": result.stats.seconds}


def _eta(elapsed: float, done: int, total: int) -> str:
    left = elapsed / done * (total - done)
    return f"{int(left // 60)}m{int(left % 60):02d}s"
