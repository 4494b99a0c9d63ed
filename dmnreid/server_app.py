"""ServerApp: runs the phases in order and writes the run directory.

Phases so far: set-up (data, weights, nodes), direct-transfer baseline, random walk with
periodic evaluation, final evaluation.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from logging import INFO, WARNING
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import read_partition
from dmnreid.messages import CONFIG, NodeError, metrics_of, replies_by_node, reply_content
from dmnreid.prepare import prepare_partitions
from dmnreid.reid.evaluator import Evaluator
from dmnreid.reid.model import (
    build_model,
    load_walking_state,
    resolve_weights,
    stem_digest,
    walking_state,
)
from dmnreid.reid.pretrain import ensure_source_weights
from dmnreid.run_dir import RunDir
from dmnreid.strategies.random_walk import Hop, hop_order, walk

app = ServerApp()


def open_run(cfg: RunConfig) -> tuple[RunConfig, RunDir]:
    """A new run directory, or the one named by ``resume-from`` with its saved config."""
    if cfg.resume_from:
        run = RunDir.resume(Path(cfg.resume_from))
        saved = run.read_json("config.json")
        cfg = RunConfig.from_mapping({**saved, "resume-from": cfg.resume_from})
        log(INFO, "Resuming %s", run.path)
        return cfg, run
    output = Path(cfg.output_dir).expanduser() if cfg.output_dir else Path.cwd() / "outputs"
    run = RunDir.create(output.resolve(), cfg.run_name or f"{cfg.dataset}-{cfg.arch}")
    run.write_json("config.json", cfg.to_mapping())
    log(INFO, "Run directory: %s", run.path)
    return cfg, run


def pretrained_file(cfg: RunConfig) -> Path | None:
    if cfg.pretrained_weights == "synthetic-source":
        return ensure_source_weights(cfg)
    if cfg.pretrained_weights == "none" and cfg.bn_statistics == "frozen":
        log(WARNING, "pretrained-weights = 'none' with bn-statistics = 'frozen' keeps the BN "
            "statistics of a random initialisation; consider bn-statistics = 'update'")
    return resolve_weights(cfg.pretrained_weights, cfg.arch)


def discover_nodes(grid: Grid, partitions: Path, timeout: float) -> list[tuple[int, int]]:
    """Wait for one node per camera; return [(node id, camera)] sorted by camera."""
    cameras = [n["camera"] for n in read_partition(partitions)["nodes"]]
    deadline = time.monotonic() + timeout
    node_ids: list[int] = []
    while len(node_ids) < len(cameras) and time.monotonic() < deadline:
        node_ids = list(grid.get_node_ids())
        time.sleep(0.5)
    if len(node_ids) < len(cameras):
        raise NodeError(
            f"{len(cameras)} cameras need {len(cameras)} nodes, only {len(node_ids)} connected "
            f"within {timeout:.0f} s (simulation: --federation-config "
            f"\"num-supernodes={len(cameras)}\")")
    messages = [Message(RecordDict({CONFIG: ConfigRecord({"partition-dir": str(partitions)})}),
                        dst_node_id=n, message_type="query.info") for n in node_ids]
    replies = replies_by_node(grid.send_and_receive(messages, timeout=timeout), node_ids,
                              "query.info")
    holders: dict[int, list[int]] = {}
    for node_id, reply in replies.items():
        camera = int(metrics_of(reply_content(reply, str(node_id)))["camera"])
        if camera >= 0:
            holders.setdefault(camera, []).append(node_id)
    missing = sorted(set(cameras) - set(holders))
    doubled = sorted(c for c, ids in holders.items() if len(ids) > 1)
    if missing or doubled:
        raise NodeError(f"cameras without a node: {missing}; cameras on several nodes: {doubled}")
    return [(holders[c][0], c) for c in sorted(cameras)]


def record_evaluation(run: RunDir, evaluator: Evaluator, model: torch.nn.Module, stage: str,
                      hop: int) -> dict[str, float]:
    scores = evaluator.evaluate(model)
    run.append("evaluations.jsonl", {"stage": stage, "hop": hop, **scores})
    log(INFO, "[%s, %d hops] rank-1 %.1f  rank-5 %.1f  rank-10 %.1f  mAP %.1f", stage, hop,
        scores["rank1"], scores["rank5"], scores["rank10"], scores["mAP"])
    return scores


def run_pipeline(grid: Grid, cfg: RunConfig) -> RunDir:
    cfg, run = open_run(cfg)
    partitions = prepare_partitions(cfg)
    weights = pretrained_file(cfg)
    nodes = discover_nodes(grid, partitions, cfg.node_timeout)
    log(INFO, "%d nodes, cameras %s", len(nodes), [c for _, c in nodes])

    model = build_model(cfg.arch, weights, 1, cfg.freeze_stem)
    evaluator = Evaluator(partitions, cfg.image_height, cfg.image_width)
    metrics = run.read_json("metrics.json")
    state, start = walking_state(model, cfg.freeze_stem), 0
    if cfg.resume_from:
        state, info = run.load_checkpoint()
        start = int(info["hop"]) + 1
        run.truncate_lines("hops.jsonl", start)
        run.truncate_lines("evaluations.jsonl", len(
            [e for e in run.read_lines("evaluations.jsonl") if e["hop"] <= start]))
        load_walking_state(model, state, cfg.freeze_stem)
    if "baseline" not in metrics:
        metrics["baseline"] = record_evaluation(run, evaluator, model, "baseline", 0)
        run.write_metrics(metrics)

    order = hop_order(len(nodes), cfg.walk_hops, cfg.walk_order, cfg.seed)
    hop_config = {"partition-dir": str(partitions),
                  "weights-file": str(weights) if weights else ""}

    server_stem = stem_digest(model)

    def after_hop(hop: Hop, new_state: OrderedDict[str, torch.Tensor]) -> None:
        if hop.stem_digest != server_stem:
            raise NodeError(f"camera {hop.camera} trained with a stem that differs from the "
                            "server's: every node needs the same pretrained-weights file")
        run.append("hops.jsonl", hop.__dict__)
        run.save_checkpoint(new_state, {"hop": hop.hop})
        log(INFO, "hop %d/%d camera %d: loss %.3f acc %.2f, %d images in %.1f s, %.1f MB each way",
            hop.hop + 1, len(order), hop.camera, hop.loss, hop.accuracy, hop.images,
            hop.seconds, hop.bytes_sent / 1e6)
        done = hop.hop + 1
        if done % cfg.eval_every == 0 and done < len(order):
            load_walking_state(model, new_state, cfg.freeze_stem)
            record_evaluation(run, evaluator, model, "walk", done)

    state = walk(grid, nodes, state, order, start, hop_config, cfg.node_timeout, after_hop)
    load_walking_state(model, state, cfg.freeze_stem)
    metrics["final"] = record_evaluation(run, evaluator, model, "final", len(order))
    run.write_metrics(metrics)
    run.plot_curve()
    gain = metrics["final"]["mAP"] - metrics["baseline"]["mAP"]
    level = INFO if gain > 0 else WARNING
    log(level, "mAP %.1f -> %.1f (%+.1f). Outputs in %s", metrics["baseline"]["mAP"],
        metrics["final"]["mAP"], gain, run.path)
    return run


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_pipeline(grid, RunConfig.from_mapping(context.run_config))
