"""The whole pipeline in one process, for quick comparisons of settings.

Uses the very code a Flower run uses on the nodes (``dmnreid.node``: hops, memory banks), the
distributed protocol's node functions and routing (``cluster_distributed``), the hop order,
unification and evaluator, without the Flower transport, so several settings can be compared
in minutes. Prints the style transfer's camera gap (the grid goes to ./style_grid.png),
baseline, walk, clustering diagnostics, incremental and final CMC/mAP; the walking weights
go through the same ``transfer-dtype`` conversion as on the wire; with bn-mode = shared
also the mAP each stage's model reaches with camera statistics estimated at test time only.

    python benchmarks/walk_local.py --set pretrained-weights=none --set walk-hops=12
    python benchmarks/walk_local.py --compare alpha=0,1,2,3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import load_node, read_partition
from dmnreid.memory.diagnostics import cluster_scores
from dmnreid.memory.protocol import Pairs, cluster_distributed
from dmnreid.messages import record_state, state_record
from dmnreid.node import Targets, memory_bank, walk_hop
from dmnreid.prepare import prepare_partitions
from dmnreid.reid.evaluator import Evaluator
from dmnreid.reid.model import build_model, load_walking_state, walking_state
from dmnreid.server_app import pretrained_file
from dmnreid.strategies.clustering import graph_clusters, ground_truth
from dmnreid.strategies.evaluation import evaluate_state
from dmnreid.strategies.random_walk import hop_order
from dmnreid.strategies.style import held_out_images, mean_gaps, measure_gaps
from dmnreid.strategies.unification import average_states, pick_one
from dmnreid.style.node_transfer import trained_generator, transfer_style


def parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(cfg: RunConfig) -> dict:
    partitions = prepare_partitions(cfg)
    weights = pretrained_file(cfg)
    nodes = {n["camera"]: partitions / n["node"] for n in read_partition(partitions)["nodes"]}
    cameras = sorted(nodes)
    model = build_model(cfg.arch, weights, 1, cfg.freeze_stem)
    evaluator = Evaluator(partitions, cfg.image_height, cfg.image_width)

    def score(state) -> dict:
        scores = {k: round(v, 1) for k, v in evaluate_state(state, cfg, model, evaluator).items()}
        if cfg.bn_mode == "shared":  # what test-time camera statistics alone would give
            load_walking_state(model, state, cfg.freeze_stem)
            scores["camera-eval-mAP"] = round(
                evaluator.evaluate(model, "camera", cfg.bn_adapt_images)["mAP"], 1)
        return scores

    def wire(state):  # what a message would carry: the walking weights in transfer-dtype
        return record_state(state_record(state, cfg.transfer_dtype))

    state = walking_state(model, cfg.freeze_stem, cfg.bn_mode)
    start = time.perf_counter()
    out: dict = {"style": style(cfg, nodes, partitions, model)} if cfg.style_transfer else {}
    out["baseline"] = score(state)
    for hop, i in enumerate(hop_order(len(cameras), cfg.walk_hops, cfg.walk_order, cfg.seed)):
        state = wire(walk_hop(nodes[cameras[i]], cfg, weights, wire(state), hop).state)
    out["walk"] = score(state)
    if cfg.incremental_hops == 0:
        return out
    head, copies = None, {}
    order = hop_order(len(cameras), cfg.incremental_hops, cfg.walk_order, cfg.seed + 1)
    every = cfg.recluster_every or len(order)
    for first in range(0, len(order), every):
        classes, num_classes = None, 0
        if cfg.incremental_labels == "clusters":
            classes, num_classes, out[f"clustering{'-' + str(first) if first else ''}"] = \
                cluster(cfg, nodes, cameras, weights, wire(state), partitions)
            head = None
        for hop in range(first, min(first + every, len(order))):
            camera = cameras[order[hop]]
            targets = None
            if classes is not None:
                targets = Targets(classes[camera], num_classes,
                                  wire(head) if cfg.incremental_head == "travel" and head
                                  else None)
            hop_result = walk_hop(nodes[camera], cfg, weights, wire(state), hop, targets)
            state, head = wire(hop_result.state), hop_result.head
            copies[camera] = state
    out["incremental"] = score(state)
    visited = sorted(copies)
    out["pick-one"] = score(copies[pick_one(visited, cfg.seed)])
    out["average"] = score(average_states([copies[c] for c in visited]))
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def style(cfg: RunConfig, nodes: dict, partitions: Path, model) -> dict:
    """Every non-target node's CycleGAN (reused when already trained) and the camera gap."""
    data = {c: load_node(folder) for c, folder in nodes.items()}
    target = next(iter(data.values())).target_camera
    generators, seconds = {}, []
    for camera, node in data.items():
        metrics = transfer_style(node, cfg)
        if not metrics["skipped"]:
            seconds.append(metrics["train-seconds"])
            generators[camera] = trained_generator(node, cfg)
    gaps = measure_gaps(generators, held_out_images(partitions, cfg), target, model, cfg,
                        Path("style_grid.png"))
    mean = {k: round(v, 3) for k, v in mean_gaps(gaps, generators).items() if v is not None}
    return {**mean, "floor": gaps["floor"], "train_seconds": round(sum(seconds), 1)}


def cluster(cfg: RunConfig, nodes: dict, cameras: list[int], weights, state,
            partitions: Path) -> tuple[dict[int, np.ndarray], int, dict]:
    """Memory banks on every node, the distributed protocol, and its diagnostics."""
    banks = {c: memory_bank(nodes[c], cfg, weights, state) for c in cameras}
    result, rounds = cluster_distributed(banks, cfg.alpha, reach=cfg.flood_reach,
                                         max_distance=cfg.max_distance)
    truth = ground_truth(partitions, result.ids)
    scores = cluster_scores(result.cluster_of, truth)
    mutual = cluster_scores(graph_clusters(Pairs(*result.mutual_edges.T), result.ids.total),
                            truth)
    summary = {
        "edges_mutual": result.edges_mutual, "edges_kept": result.edges_kept,
        "clusters": result.clusters, "true_ids": scores["true_ids"], "rounds": len(rounds),
        **{k: round(scores[k], 3) for k in ("precision", "recall", "fscore", "nmi")},
        "mutual_top1_precision": round(mutual["precision"], 3),
        "mutual_top1_recall": round(mutual["recall"], 3)}
    _, flat = np.unique(result.cluster_of, return_inverse=True)
    return result.ids.split(flat.astype(np.int64)), int(flat.max()) + 1, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a run-config override (repeatable)")
    parser.add_argument("--compare", default="", metavar="KEY=V1,V2",
                        help="run once per value of one key")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    base = dict(kv.split("=", 1) for kv in args.set)
    variants = [{}]
    if args.compare:
        key, values = args.compare.split("=", 1)
        variants = [{key: v} for v in values.split(",")]
    results = {}
    for variant in variants:
        overrides = {k: parse_value(v) for k, v in {**base, **variant}.items()}
        cfg = RunConfig.from_mapping({**RunConfig().to_mapping(), **overrides})
        result = run(cfg)
        results[json.dumps(overrides)] = result
        print(json.dumps({"setting": overrides, **result}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
