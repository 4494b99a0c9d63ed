"""Style transfer on one node (paper 3.1): train its CycleGAN, translate its frames, keep both.

Everything stays in the node's folder under ``style/<key>/``, where the key fingerprints the
style settings and the node's file lists: a rerun with the same settings reuses the finished
generator and translations, and an interrupted training continues from its checkpoint. Only
losses, counts and timings go back to the server.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from logging import INFO
from pathlib import Path

import torch
from flwr.common.logger import log

from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import NodeData
from dmnreid.data_prep.records import DatasetError
from dmnreid.reid.images import cached_decode, resize
from dmnreid.style.training import (
    StyleConfig,
    load_generator,
    save_generator,
    train_cyclegan,
    translate,
)

DONE = "done.json"


def style_config(cfg: RunConfig) -> StyleConfig:
    """The CycleGAN settings of a run."""
    return StyleConfig(
        iterations=cfg.style_iterations, batch_size=cfg.style_batch_size,
        height=cfg.style_height, width=cfg.style_width,
        generator_filters=cfg.style_generator_filters,
        generator_blocks=cfg.style_generator_blocks,
        discriminator_filters=cfg.style_discriminator_filters,
        discriminator_layers=cfg.style_discriminator_layers,
        lr_generator=cfg.style_lr_generator, lr_discriminator=cfg.style_lr_discriminator,
        cycle_weight=cfg.style_cycle_weight, identity_weight=cfg.style_identity_weight,
        pool_size=cfg.style_pool_size, seed=cfg.seed,
        checkpoint_every=max(1, min(100, cfg.style_iterations // 10)),
    )


def needs_style(data: NodeData, cfg: RunConfig) -> bool:
    """The target camera's images are already in the target style."""
    return cfg.style_transfer and data.camera != data.target_camera


def _frame_paths(data: NodeData) -> list[Path]:
    return [p for frames in data.frames for p in frames]


def style_dir(data: NodeData, cfg: RunConfig) -> Path:
    """This node's folder for one style setting (settings + own files + target files)."""
    settings = {k: v for k, v in asdict(style_config(cfg)).items() if k != "checkpoint_every"}
    names = [str(p.relative_to(data.root)) for p in _frame_paths(data)]
    names += [str(p.relative_to(data.root)) for p in data.target_domain]
    digest = hashlib.sha1(json.dumps([settings, names]).encode()).hexdigest()[:16]
    return data.root / "style" / digest


def _translated_file(folder: Path, height: int, width: int) -> Path:
    return folder / f"translated-{height}x{width}.pt"


def _translate_frames(data: NodeData, cfg: RunConfig, folder: Path) -> tuple[Path, float]:
    """Translate every training frame at the style size, store it at the re-ID size."""
    generator = load_generator(folder / "generator.pt")
    originals = cached_decode(_frame_paths(data), cfg.style_height, cfg.style_width,
                              data.root / "cache", "style")
    translated, seconds_per_image = translate(generator, originals)
    path = _translated_file(folder, cfg.image_height, cfg.image_width)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(resize(translated, cfg.image_height, cfg.image_width), tmp)
    os.replace(tmp, path)
    return path, seconds_per_image


def transfer_style(data: NodeData, cfg: RunConfig) -> dict[str, float | int]:
    """Train (or finish, or reuse) this node's CycleGAN and translate its training frames.

    Returns what the server may see: loss terms at the start and the end of training,
    iteration counts, and timings (training seconds per batch, inference seconds per image).
    """
    if not needs_style(data, cfg):
        return {"camera": data.camera, "skipped": 1}
    folder = style_dir(data, cfg)
    done = folder / DONE
    if done.is_file():
        metrics = json.loads(done.read_text())
        if not _translated_file(folder, cfg.image_height, cfg.image_width).is_file():
            _translate_frames(data, cfg, folder)
        return {**metrics, "reused": 1}
    folder.mkdir(parents=True, exist_ok=True)
    own = cached_decode(_frame_paths(data), cfg.style_height, cfg.style_width,
                        data.root / "cache", "style")
    target = cached_decode(data.target_domain, cfg.style_height, cfg.style_width,
                           data.root / "cache", "style-target")
    if len(target) == 0:
        raise DatasetError(f"{data.root.name}: target_domain/ holds no images to learn the "
                           f"target camera's style from")

    def progress(iteration: int, losses: dict[str, float]) -> None:
        log(INFO, "camera %d style transfer %d/%d: %s", data.camera, iteration,
            cfg.style_iterations, " ".join(f"{k} {v:.3f}" for k, v in losses.items()))

    generator, stats = train_cyclegan(own, target, style_config(cfg), folder / "checkpoint.pt",
                                      progress)
    save_generator(generator, folder / "generator.pt")
    _, seconds_per_image = _translate_frames(data, cfg, folder)
    metrics: dict[str, float | int] = {
        "camera": data.camera, "skipped": 0, "reused": 0, "images": len(own),
        "target-images": len(target), "iterations": stats.iterations,
        "resumed-from": stats.resumed_from, "train-seconds": stats.seconds,
        "seconds-per-batch": stats.seconds_per_batch,
        "translate-seconds-per-image": seconds_per_image,
        **{f"first-{k}": v for k, v in stats.first.items()},
        **{f"last-{k}": v for k, v in stats.last.items()},
    }
    tmp = done.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(metrics))
    os.replace(tmp, done)
    return metrics


def translated_frames(data: NodeData, cfg: RunConfig) -> torch.Tensor:
    """The node's training frames in the target style at the re-ID size, (N, 3, H, W) uint8."""
    folder = style_dir(data, cfg)
    path = _translated_file(folder, cfg.image_height, cfg.image_width)
    if not path.is_file():
        if not (folder / DONE).is_file():
            raise DatasetError(
                f"camera {data.camera}: style-transfer is on but this node holds no finished "
                f"style transfer for these settings ({folder}); the train.style phase did not "
                "finish here")
        path, _ = _translate_frames(data, cfg, folder)
    return torch.load(path, weights_only=True)


def generator_state(data: NodeData, cfg: RunConfig) -> dict[str, torch.Tensor]:
    """The trained generator's weights (model weights: they may leave the node)."""
    folder = style_dir(data, cfg)
    if not (folder / DONE).is_file():
        raise DatasetError(f"camera {data.camera} has no finished style transfer to send")
    return load_generator(folder / "generator.pt").state_dict()
