"""The whole pipeline in one process, for quick comparisons of settings.

Runs :mod:`dmnreid.experiments.driver` (the very node code a Flower run uses: hops, memory
banks, the distributed protocol's node functions and routing, the hop order, unification
and evaluator, without the Flower transport; walking weights and memory banks rounded as
on the wire). Prints the style transfer's camera gap (the grid goes to ./style_grid.png),
baseline, walk, clustering diagnostics, incremental and final CMC/mAP; with bn-mode = shared
also the mAP each stage's model reaches with camera statistics estimated at test time only.
The paper's experiments over seeds are ``python -m dmnreid.experiments``.

    python benchmarks/walk_local.py --set pretrained-weights=none --set walk-hops=12
    python benchmarks/walk_local.py --compare alpha=0,1,2,3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dmnreid.config import RunConfig
from dmnreid.experiments.driver import Network
from dmnreid.strategies.unification import average_states, pick_one


def parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(cfg: RunConfig) -> dict:
    network = Network(cfg)

    def score(state) -> dict:
        return {k: round(v, 1) for k, v in network.score(state).items()}

    start = time.perf_counter()
    out: dict = {"style": network.style(Path("style_grid.png"))} if cfg.style_transfer else {}
    state = network.initial_state()
    out["baseline"] = score(state)
    walked = network.first_walk(state)
    out["walk"] = score(walked.state)
    if not cfg.incremental_walk:
        return out
    incremental, clusterings = network.incremental(walked.state)
    for i, clustering in enumerate(clusterings):
        out["clustering" + (f"-{i}" if i else "")] = {
            k: round(v, 3) if isinstance(v, float) else v for k, v in clustering.items()}
    out["incremental"] = score(incremental.state)
    visited = sorted(incremental.copies)
    out["pick-one"] = score(incremental.copies[pick_one(visited, cfg.seed)])
    out["average"] = score(network.wire(average_states([incremental.copies[c] for c in visited])))
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


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
