"""An offline stand-in for ImageNet pretraining, for the synthetic default.

The paper freezes an ImageNet-pretrained stem. Offline there are no ImageNet weights, and a
frozen random stem is not the paper's setting. So the backbone is trained once, supervised, on
a separate labelled synthetic source domain: identities disjoint from the camera network's
(another appearance seed) and imaging styles drawn afresh for every tracklet (no fixed camera
looks to overfit to). The weights are saved with torchvision's key names, so they load exactly
like an ImageNet file, and cached.
"""

from __future__ import annotations

import json
import math
from logging import INFO, WARNING
from pathlib import Path

import torch
from filelock import FileLock
from flwr.common.logger import log

from dmnreid.atomic import save_torch
from dmnreid.cache import cache_home
from dmnreid.compute import resolve_device
from dmnreid.config import RunConfig
from dmnreid.data_prep.datasets import read_dataset
from dmnreid.data_prep.synthetic import GENERATOR_VERSION, SyntheticConfig, generate
from dmnreid.reid.images import cached_decode
from dmnreid.reid.model import ReidNet, build_model
from dmnreid.reid.train import TrainConfig, TrainStats, train_local

SOURCE_APPEARANCE_SEED = 7_919
SOURCE_STYLE_SEED = 104_729


def source_config(cfg: RunConfig) -> SyntheticConfig:
    return SyntheticConfig(
        cameras=cfg.synthetic_cameras, train_ids=cfg.source_ids, test_ids=1, distractors=0,
        junk=0, random_styles=True, seed=1, appearance_seed=SOURCE_APPEARANCE_SEED,
        style_seed=SOURCE_STYLE_SEED,
    )


def weights_path(cfg: RunConfig) -> Path:
    return cache_home() / "pretrained" / (
        f"source-{cfg.arch}-{cfg.image_height}x{cfg.image_width}-ids{cfg.source_ids}"
        f"-ep{cfg.source_epochs}-v{GENERATOR_VERSION}-seeded.pt")


def torchvision_state(model: ReidNet) -> dict[str, torch.Tensor]:
    """stem.*/middle.* keys renamed to torchvision's (conv1..layer4); the head is dropped."""
    return {k.split(".", 1)[1]: v.clone() for k, v in model.state_dict().items()
            if k.startswith(("stem.", "middle."))}


def pretrain_source(cfg: RunConfig, out: Path) -> TrainStats:
    """Train the whole backbone on the source domain and save it to ``out``."""
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
    model = build_model(cfg.arch, None, len(pids), freeze_stem=False, bn_statistics="update")
    log(INFO, "Pretraining the %s stand-in for ImageNet on %d source images, %d identities, "
        "%d epochs (once; cached at %s)", cfg.arch, len(images), len(pids), cfg.source_epochs,
        out)

    def progress(epoch: int, stats: TrainStats) -> None:
        log(INFO, "  source epoch %d/%d: loss %.3f accuracy %.2f (%.0f s)", epoch + 1,
            cfg.source_epochs, stats.loss, stats.accuracy, stats.seconds)

    stats = train_local(model, images, labels, TrainConfig(
        epochs=cfg.source_epochs, batch_size=64, lr_head=0.1, lr_backbone=0.05, seed=1),
        on_epoch=progress, device=resolve_device(cfg.device))
    save_torch(torchvision_state(model), out)
    out.with_suffix(".json").write_text(json.dumps({
        "arch": cfg.arch, "source": syn.__dict__ | {"frames_per_tracklet":
                                                   list(syn.frames_per_tracklet)},
        "images": len(images), "identities": len(pids), "loss": stats.loss,
        "accuracy": stats.accuracy, "seconds": stats.seconds}, indent=2))
    if barely_learned(stats, len(pids)):
        log(WARNING, "The %s stand-in barely learned: mean loss %.2f over %d epochs against "
            "%.2f for guessing among %d identities. Features from these weights will be "
            "weak; raise source-epochs or give ImageNet weights (pretrained-weights = a "
            "path).", cfg.arch, stats.loss, cfg.source_epochs, math.log(len(pids)), len(pids))
    return stats


def barely_learned(stats: TrainStats, classes: int) -> bool:
    """Whether the mean training loss stayed within 10% of chance (ln of the class count):
    measured for ResNet-50 at 256x128 after 8 epochs, 5.6 against 5.7."""
    return classes > 1 and stats.loss > 0.9 * math.log(classes)


def ensure_source_weights(cfg: RunConfig) -> Path:
    """The cached stand-in weights for this arch and image size, trained on first use."""
    out = weights_path(cfg)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(out.with_suffix(".lock")):  # processes sharing the cache pretrain it once
        if not out.is_file():
            pretrain_source(cfg, out)
    return out
