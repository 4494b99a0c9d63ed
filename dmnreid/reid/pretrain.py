"""An offline stand-in for ImageNet pretraining, for the synthetic default.

The paper freezes an ImageNet-pretrained stem. Offline there are no ImageNet weights, and a
frozen random stem is not the paper's setting. So the backbone is trained once, supervised, on
a separate labelled synthetic source domain: identities disjoint from the camera network's
(another appearance seed) and imaging styles drawn afresh for every tracklet (no fixed camera
looks to overfit to). The weights are saved with torchvision's key names, so they load exactly
like an ImageNet file, and cached.

Every result of the synthetic default starts from these weights, so they must be the same on
every machine: the pretraining runs in a process of its own with its CPU kernel paths pinned
(:mod:`dmnreid.reid.kernels`), always on the CPU, and its record (``.json`` beside the weights)
names the stand-in by the sha256 of its tensors. ``python -m dmnreid.reid.pretrain`` is that
process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from logging import INFO, WARNING
from pathlib import Path

import torch
from filelock import FileLock
from flwr.common.logger import log

from dmnreid.atomic import save_torch, write_bytes
from dmnreid.cache import cache_home
from dmnreid.config import RunConfig
from dmnreid.data_prep.datasets import read_dataset
from dmnreid.data_prep.synthetic import GENERATOR_VERSION, SyntheticConfig, generate
from dmnreid.reid import kernels
from dmnreid.reid.images import cached_decode
from dmnreid.reid.model import ReidNet
from dmnreid.reid.train import TrainConfig, TrainStats, cross_entropy, train_local

SOURCE_APPEARANCE_SEED = 7_919
SOURCE_STYLE_SEED = 104_729
BATCH_SIZE = 64


def source_config(cfg: RunConfig) -> SyntheticConfig:
    return SyntheticConfig(
        cameras=cfg.synthetic_cameras, train_ids=cfg.source_ids, test_ids=1, distractors=0,
        junk=0, random_styles=True, seed=1, appearance_seed=SOURCE_APPEARANCE_SEED,
        style_seed=SOURCE_STYLE_SEED,
    )


def weights_path(cfg: RunConfig) -> Path:
    """The cached stand-in of these settings; named after the kernel pinning too, so weights
    pretrained before it (machine-dependent) are never taken for it."""
    return cache_home() / "pretrained" / (
        f"source-{cfg.arch}-{cfg.image_height}x{cfg.image_width}-ids{cfg.source_ids}"
        f"-ep{cfg.source_epochs}-s{cfg.source_seed}-v{GENERATOR_VERSION}"
        f"-pinned{kernels.PIN_VERSION}.pt")


def record_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def torchvision_state(model: ReidNet) -> dict[str, torch.Tensor]:
    """stem.*/middle.* keys renamed to torchvision's (conv1..layer4), contiguous; the head is
    dropped."""
    return {k.split(".", 1)[1]: v.contiguous().clone() for k, v in model.state_dict().items()
            if k.startswith(("stem.", "middle."))}


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state's names, dtypes, shapes and bytes in key order: names weights by what
    they hold, whatever file format or file name ``torch.save`` gave them."""
    digest = hashlib.sha256()
    for key, value in state.items():
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def source_model(cfg: RunConfig, classes: int) -> ReidNet:
    """The network the pretraining starts from, initialised from ``source-seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.source_seed)
        model = ReidNet(cfg.arch, classes)
    return model


def source_data(cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The source domain's training images (uint8, decoded once and cached), each one's class
    and the number of classes; generated on first use."""
    syn = source_config(cfg)
    root = cache_home() / "synthetic" / (
        f"source-c{syn.cameras}-ids{syn.train_ids}-v{GENERATOR_VERSION}")
    generate(root, syn, progress=False)
    train = read_dataset("synthetic", root).train
    pids = sorted({s.pid for s in train})
    index = {pid: i for i, pid in enumerate(pids)}
    paths = [f for s in train for f in s.frames]
    labels = torch.tensor([index[s.pid] for s in train for _ in s.frames])
    images = cached_decode(paths, cfg.image_height, cfg.image_width, root / "cache", "source")
    return images, labels, len(pids)


def steps_per_epoch(images: int) -> int:
    """Optimizer steps in one epoch over ``images`` (a last batch of one image is skipped)."""
    return sum(1 for begin in range(0, images, BATCH_SIZE) if images - begin >= 2)


def pretrain_source(cfg: RunConfig, out: Path, pinned: bool = True,
                    on_step: Callable[[ReidNet, int], None] | None = None) -> TrainStats:
    """Train the whole backbone on the source domain and save it to ``out``, in this process.

    ``pinned``: the kernel path of a pinned process (convolutions in channels-last layout;
    the process itself must have been started pinned, see :mod:`dmnreid.reid.kernels`);
    False trains as any other computation here does. ``on_step(model, step)`` after every
    optimizer step (snapshots for ``benchmarks/stand_in_kernels.py``).
    """
    if pinned and not kernels.is_pinned():
        raise RuntimeError("pretrain_source(pinned=True) in a process that was not started "
                           "pinned: use ensure_source_weights (or python -m "
                           "dmnreid.reid.pretrain), which starts one")
    images, labels, classes = source_data(cfg)
    model = source_model(cfg, classes)
    objective = cross_entropy
    if pinned:
        model = model.to(memory_format=torch.channels_last)

        def objective(m: ReidNet, x: torch.Tensor, y: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
            return cross_entropy(m, x.contiguous(memory_format=torch.channels_last), y)

    steps = cfg.source_epochs * steps_per_epoch(len(images))
    log(INFO, "Pretraining the %s stand-in for ImageNet on %d source images, %d identities, "
        "%d epochs, %d steps (once; cached at %s); kernels %s", cfg.arch, len(images),
        classes, cfg.source_epochs, steps, out, json.dumps(kernels.kernel_record()))

    epochs_sha256: list[str] = []  # after each epoch: a shorter pretraining's end, to check

    def progress(epoch: int, stats: TrainStats) -> None:
        epochs_sha256.append(tensors_sha256(torchvision_state(model)))
        log(INFO, "  source epoch %d/%d: loss %.3f accuracy %.2f (%.0f s, about %.0f s left)",
            epoch + 1, cfg.source_epochs, stats.loss, stats.accuracy, stats.seconds,
            stats.seconds / (epoch + 1) * (cfg.source_epochs - epoch - 1))

    stats = train_local(model, images, labels, TrainConfig(
        epochs=cfg.source_epochs, batch_size=BATCH_SIZE, lr_head=0.1, lr_backbone=0.05,
        seed=cfg.source_seed + 1), on_epoch=progress, objective=objective,
        on_step=None if on_step is None else (lambda step: on_step(model, step)))
    state, syn = torchvision_state(model), source_config(cfg)
    save_torch(state, out)
    write_bytes(record_path(out), json.dumps({
        "sha256": tensors_sha256(state), "epochs-sha256": epochs_sha256, "arch": cfg.arch,
        "image-size": [cfg.image_height, cfg.image_width], "source-seed": cfg.source_seed,
        "source": syn.__dict__ | {"frames_per_tracklet": list(syn.frames_per_tracklet)},
        "images": len(images), "identities": classes, "epochs": cfg.source_epochs,
        "steps": steps, "loss": stats.loss, "accuracy": stats.accuracy,
        "seconds": stats.seconds, "kernels": kernels.kernel_record()}, indent=2).encode())
    if barely_learned(stats, classes):
        log(WARNING, "The %s stand-in barely learned: mean loss %.2f over %d epochs against "
            "%.2f for guessing among %d identities. Features from these weights will be "
            "weak; raise source-epochs or give ImageNet weights (pretrained-weights = a "
            "path).", cfg.arch, stats.loss, cfg.source_epochs, math.log(classes), classes)
    return stats


def barely_learned(stats: TrainStats, classes: int) -> bool:
    """Whether the mean training loss stayed within 10% of chance (ln of the class count):
    measured for ResNet-50 at 256x128 after 8 epochs, 5.6 against 5.7."""
    return classes > 1 and stats.loss > 0.9 * math.log(classes)


def ensure_source_weights(cfg: RunConfig) -> Path:
    """The cached stand-in weights for these settings, pretrained on first use in a pinned
    process of their own (its progress goes to this process's log)."""
    out = weights_path(cfg)
    if out.is_file() and record_path(out).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(out.with_suffix(".lock")):  # processes sharing the cache pretrain it once
        if not (out.is_file() and record_path(out).is_file()):
            kernels.run_module("dmnreid.reid.pretrain",
                               ["--run-config", json.dumps(cfg.to_mapping()), "--out",
                                str(out)], _relay)
    return out


LOG_LINE = re.compile(r"^(?:\x1b\[[0-9;]*m)?(DEBUG|INFO|WARNING|ERROR)\s*(?:\x1b\[0m)?\s*:\s*")


def _relay(line: str) -> None:
    """A line of the pretraining process's output into this process's log, at its level."""
    match = LOG_LINE.match(line)
    level = logging.getLevelName(match.group(1)) if match else INFO
    log(level, "[stand-in] %s", line[match.end():] if match else line)


def stand_in_record(weights: Path) -> dict:
    """The record a stand-in was saved with (its sha256, the kernels it was pretrained
    with); empty for weights without one (ImageNet, a user's file)."""
    path = record_path(weights)
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dmnreid.reid.pretrain",
        description="Pretrain the stand-in in this process (started pinned by "
                    "ensure_source_weights; --unpinned for kernel-path experiments).")
    parser.add_argument("--run-config", required=True, help="the run config as JSON")
    parser.add_argument("--out", type=Path, required=True, help="weights file to write")
    parser.add_argument("--unpinned", action="store_true",
                        help="train on whatever kernel paths this process has")
    parser.add_argument("--snapshot-steps", default="",
                        help="comma-separated optimizer steps after which to save the "
                             "weights to --out's folder as step-N.pt")
    args = parser.parse_args(argv)
    if not args.unpinned:
        kernels.pin_in_process()
    cfg = RunConfig.from_mapping(json.loads(args.run_config))
    wanted = {int(s) for s in args.snapshot_steps.split(",") if s.strip()}

    def snapshot(model: ReidNet, step: int) -> None:
        if step in wanted:
            save_torch(torchvision_state(model), args.out.parent / f"step-{step}.pt")

    pretrain_source(cfg, args.out, pinned=not args.unpinned, on_step=snapshot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
