"""Peak memory of one random-walk hop and one CycleGAN iteration, at the paper's sizes.

What a device must hold (docs/deployment.md, "Jetson"): a hop of ResNet-50 at 256x128 (frozen
stem, the walking middle and a head trained by SGD) and an iteration of the reference CycleGAN
at 256x256 (two ResNet generators of 64 filters and 9 blocks, two 70x70 PatchGANs, Adam), at a
few batch sizes. Each case runs in a fresh process; it reports the resident memory after the
model and data are built, the peak during two training steps (``ru_maxrss``) and the seconds
per step on this machine. The difference is what training itself adds on this CPU. Two
device-independent figures estimate a GPU: the bytes autograd saves for the backward pass
(the activations) and the trained weights with their gradients and optimiser state.

    python benchmarks/bench_memory.py                 # every case, a Markdown table
    python benchmarks/bench_memory.py --case hop:16   # one case (JSON line)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

CASES = ["hop:8", "hop:16", "hop:32", "cyclegan:1", "cyclegan:2", "cyclegan:4"]


def _rss_mb() -> float:
    """Current resident set size of this process (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class SavedTensors:
    """Bytes of the tensors autograd keeps for the backward pass (each storage once): the
    activation memory of a step on any device, a GPU included."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, tensor):
        storage = tensor.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def mb(self) -> float:
        return sum(self.storages.values()) / 2**20


def run_case(case: str) -> dict:
    import torch
    from torch.autograd.graph import saved_tensors_hooks

    kind, batch = case.split(":")
    batch = int(batch)
    torch.manual_seed(0)
    if kind == "hop":
        from dmnreid.reid.model import build_model
        from dmnreid.reid.train import TrainConfig, train_local

        model = build_model("resnet50", None, 751, freeze_stem=True, bn_statistics="update")
        images = torch.randint(0, 256, (2 * batch, 3, 256, 128), dtype=torch.uint8)
        labels = torch.randint(0, 751, (2 * batch,))
        before = _rss_mb()
        start = time.perf_counter()
        train_local(model, images, labels, TrainConfig(epochs=1, batch_size=batch))
        seconds = (time.perf_counter() - start) / 2
        saved = SavedTensors()
        with saved_tensors_hooks(saved.pack, lambda t: t):
            train_local(model, images[:batch], labels[:batch],
                        TrainConfig(epochs=1, batch_size=batch))
        trained = [p for p in model.parameters() if p.requires_grad]
        state = 3  # weight, gradient, SGD momentum
        what = "ResNet-50 hop, 256x128, 751 classes"
    else:
        from dmnreid.style.networks import PatchDiscriminator
        from dmnreid.style.training import StyleConfig, train_cyclegan

        cfg = StyleConfig(iterations=2, batch_size=batch, height=256, width=256,
                          generator_filters=64, generator_blocks=9, discriminator_filters=64,
                          discriminator_layers=3, checkpoint_every=100)
        images_a = torch.randint(0, 256, (8, 3, 256, 256), dtype=torch.uint8)
        images_b = torch.randint(0, 256, (8, 3, 256, 256), dtype=torch.uint8)
        before = _rss_mb()
        start = time.perf_counter()
        generator, _ = train_cyclegan(images_a, images_b, cfg)
        seconds = (time.perf_counter() - start) / 2
        saved = SavedTensors()  # both generator and discriminator passes: an upper bound
        with saved_tensors_hooks(saved.pack, lambda t: t):
            train_cyclegan(images_a, images_b, StyleConfig(**{**cfg.__dict__, "iterations": 1}))
        discriminator = PatchDiscriminator(cfg.discriminator_filters,
                                           cfg.discriminator_layers)
        trained = [p for net in (generator, discriminator) for p in net.parameters()] * 2
        state = 4  # weight, gradient, Adam's two moments; two generators, two discriminators
        what = "CycleGAN iteration, 256x256, 64 filters, 9 blocks"
    weights_mb = state * sum(p.numel() * p.element_size() for p in trained) / 2**20
    return {"case": what, "batch": batch, "rss_before_mb": round(before),
            "peak_mb": round(_peak_mb()), "training_mb": round(_peak_mb() - before),
            "saved_mb": round(saved.mb), "weights_state_mb": round(weights_mb),
            "seconds_per_step": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, help="run one case in this process")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPUs, "
          f"Python {platform.python_version()}")
    print("| case | batch | RSS before (MB) | peak (MB) | training adds (MB) | saved for "
          "backward (MB) | trained weights + grads + optimiser (MB) | s/step |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True,
                             text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"| {row['case']} | {row['batch']} | {row['rss_before_mb']} | {row['peak_mb']} | "
              f"{row['training_mb']} | {row['saved_mb']} | {row['weights_state_mb']} | "
              f"{row['seconds_per_step']} |", flush=True)


if __name__ == "__main__":
    main()
