"""Retrieval with query/gallery features rounded to float16 (``feature-dtype``) against float32.

Federated evaluation sends each camera's query and gallery features to the server; this
scores the same features both ways for given walking weights (``state.pt`` files, e.g. the
rw+t weights the ablation keeps under ``runs/<bn-mode>/seed-<s>/rw+t/``) or, with none, the
pretrained weights. Prints one line per state and the largest difference.

    python benchmarks/bench_feature_dtype.py [--state PATH ...] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dmnreid.experiments.driver import Network
from dmnreid.experiments.settings import run_config
from dmnreid.messages import wire_features
from dmnreid.reid.evaluator import rank
from dmnreid.reid.model import load_walking_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, action="append", default=[])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    network = Network(run_config(args.set))
    cfg = network.cfg
    states = {str(p): OrderedDict(torch.load(p, weights_only=True)) for p in args.state} or {
        "pretrained": network.initial_state()}
    worst = 0.0
    for name, state in states.items():
        load_walking_state(network.model, state, cfg.freeze_stem, cfg.bn_mode)
        embedded = network.evaluator.embed(network.model, cfg.bn_mode, cfg.bn_adapt_images)
        full = rank(embedded.values())
        half = rank([{split: replace(f, features=wire_features(f.features, "float16")
                                     .astype(np.float32)) for split, f in camera.items()}
                     for camera in embedded.values()])
        diff = {k: half[k] - full[k] for k in ("rank1", "mAP")}
        worst = max(worst, *map(abs, diff.values()))
        print(f"{name}: mAP {full['mAP']:.3f} (float32) vs {half['mAP']:.3f} (float16), "
              f"rank-1 {full['rank1']:.3f} vs {half['rank1']:.3f}")
    print(f"largest difference: {worst:.3f} points")


if __name__ == "__main__":
    main()
