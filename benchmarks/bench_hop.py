"""Training throughput of one random-walk hop vs a bare PyTorch loop, measured in one run.

The hop is everything a node does for ``train.walk`` (read its manifest and cached images,
build the model, load the walking weights, train, hand the weights back); the bare loop is
the plain textbook loop over the same images, labels, model and augmentation. Prints images
per second of both and their ratio (target: the hop reaches at least 90% of the bare loop).

    python benchmarks/bench_hop.py [--epochs 2] [--repeats 3] [--arch resnet18]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dmnreid.config import RunConfig
from dmnreid.data_prep.datasets import read_dataset
from dmnreid.data_prep.partition import load_node, write_partition
from dmnreid.data_prep.synthetic import SyntheticConfig, generate
from dmnreid.node import training_images, walk_hop
from dmnreid.reid.images import train_augmentation
from dmnreid.reid.model import build_model, walking_state


def bare_loop(cfg: RunConfig, images: torch.Tensor, labels: torch.Tensor,
              num_classes: int) -> float:
    """Images per second of a plain loop: same model, data, augmentation and optimiser."""
    model = build_model(cfg.arch, None, num_classes, cfg.freeze_stem)
    transform = train_augmentation(cfg.image_height, cfg.image_width)
    optimizer = torch.optim.SGD(
        [{"params": [p for n, p in model.named_parameters()
                     if p.requires_grad and not n.startswith("head.")], "lr": cfg.lr_backbone},
         {"params": model.head.parameters(), "lr": cfg.lr_head}],
        momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    rng = np.random.default_rng(0)
    start, seen = time.perf_counter(), 0
    for _ in range(cfg.local_epochs):
        order = torch.from_numpy(rng.permutation(len(images)))
        for begin in range(0, len(order), cfg.batch_size):
            idx = order[begin:begin + cfg.batch_size]
            if len(idx) < 2:
                continue
            x = torch.stack([transform(img) for img in images[idx]])
            loss = loss_fn(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(idx)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="local epochs per hop")
    parser.add_argument("--repeats", type=int, default=3, help="measurements; best is kept")
    parser.add_argument("--arch", default="resnet18")
    args = parser.parse_args()
    cfg = RunConfig(arch=args.arch, local_epochs=args.epochs, pretrained_weights="none")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "syn"
        generate(root, SyntheticConfig(), progress=False)
        write_partition(read_dataset("synthetic", root), Path(tmp) / "parts", progress=False)
        node_dir = Path(tmp) / "parts" / "camera-02"
        data = load_node(node_dir)
        images, labels = training_images(data, cfg)  # fills the node's decode cache
        state = walking_state(build_model(cfg.arch, None, 1, cfg.freeze_stem))
        bare, hop = [], []
        for r in range(args.repeats):
            bare.append(bare_loop(cfg, images, labels, data.num_classes))
            start = time.perf_counter()
            result = walk_hop(node_dir, cfg, None, state, hop=r)
            hop.append(result.stats.images / (time.perf_counter() - start))
    print(f"node camera-02: {data.num_classes} tracklets, {len(images)} images, "
          f"{cfg.arch} {cfg.image_height}x{cfg.image_width}, {cfg.local_epochs} local epochs, "
          f"{torch.get_num_threads()} threads")
    print(f"bare PyTorch loop : {max(bare):8.1f} images/s  (runs: "
          f"{', '.join(f'{v:.0f}' for v in bare)})")
    print(f"walk hop (node)   : {max(hop):8.1f} images/s  (runs: "
          f"{', '.join(f'{v:.0f}' for v in hop)})")
    print(f"ratio hop / bare  : {max(hop) / max(bare):8.3f}  (target >= 0.90)")


if __name__ == "__main__":
    main()
