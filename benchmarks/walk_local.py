"""The random walk in one process, for quick comparisons of settings.

Uses the very code a Flower run uses on the nodes (``dmnreid.node.walk_hop``) and on the
server (hop order, evaluator), without the Flower transport, so that several settings can be
compared in minutes. Prints baseline, intermediate and final CMC/mAP per setting.

    python benchmarks/walk_local.py --set pretrained-weights=none --set walk-hops=12
    python benchmarks/walk_local.py --compare pretrained-weights=none,synthetic-source
"""

from __future__ import annotations

import argparse
import json
import time

from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import read_partition
from dmnreid.node import walk_hop
from dmnreid.prepare import prepare_partitions
from dmnreid.reid.evaluator import Evaluator
from dmnreid.reid.model import build_model, load_walking_state, walking_state
from dmnreid.server_app import pretrained_file
from dmnreid.strategies.random_walk import hop_order


def parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(cfg: RunConfig) -> list[dict]:
    partitions = prepare_partitions(cfg)
    weights = pretrained_file(cfg)
    nodes = [partitions / n["node"] for n in read_partition(partitions)["nodes"]]
    model = build_model(cfg.arch, weights, 1, cfg.freeze_stem)
    evaluator = Evaluator(partitions, cfg.image_height, cfg.image_width)
    rows = [{"hop": 0, **evaluator.evaluate(model)}]
    state = walking_state(model, cfg.freeze_stem)
    start = time.perf_counter()
    for hop, index in enumerate(hop_order(len(nodes), cfg.walk_hops, cfg.walk_order, cfg.seed)):
        state = walk_hop(nodes[index], cfg, weights, state, hop).state
        if (hop + 1) % cfg.eval_every == 0 or hop + 1 == cfg.walk_hops:
            load_walking_state(model, state, cfg.freeze_stem)
            rows.append({"hop": hop + 1, **evaluator.evaluate(model),
                         "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a run-config override (repeatable)")
    parser.add_argument("--compare", default="", metavar="KEY=V1,V2",
                        help="run once per value of one key")
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
        print(f"== {overrides or 'defaults'}", flush=True)
        results[json.dumps(variant)] = run(cfg)
    print("\nsetting | baseline mAP / R1 | final mAP / R1")
    for name, rows in results.items():
        print(f"{name} | {rows[0]['mAP']:.1f} / {rows[0]['rank1']:.1f} | "
              f"{rows[-1]['mAP']:.1f} / {rows[-1]['rank1']:.1f}")


if __name__ == "__main__":
    main()
