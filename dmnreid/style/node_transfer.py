"""Style transfer on one node (paper 3.1): train its CycleGAN, translate its frames, keep both.

Everything stays in the node's folder under ``style/<key>/``, where the key fingerprints the
style settings and the node's file lists: a rerun with the same settings reuses the finished
generator and translations, and an interrupted training continues from its checkpoint. Only
losses, counts and timings go back to the server.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from logging import INFO
from pathlib import Path

import torch
from filelock import FileLock
from flwr.common.logger import log

from dmnreid.atomic import save_torch, write_bytes
from dmnreid.compute import resolve_device
from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import NodeData
from dmnreid.data_prep.records import DatasetError
from dmnreid.reid.images import cached_decode, resize
from dmnreid.style.networks import ResnetGenerator
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
    own = {"seed": cfg.seed, "checkpoint_every": max(1, min(100, cfg.style_iterations // 10))}
    return StyleConfig(**own, **{f.name: getattr(cfg, f"style_{f.name}")
                                 for f in fields(StyleConfig) if f.name not in own})


def needs_style(data: NodeData, cfg: RunConfig) -> bool:
    """The target camera's images are already in the target style."""
    return cfg.style_transfer and data.camera != data.target_camera


def _frame_paths(data: NodeData) -> list[Path]:
    return [p for frames in data.frames for p in frames]


def style_dir(data: NodeData, cfg: RunConfig) -> Path:
    """This node's folder for one style setting (settings + own files + target files)."""
    names = [str(p.relative_to(data.root)) for p in _frame_paths(data)]
    names += [str(p.relative_to(data.root)) for p in data.target_domain]
    digest = hashlib.sha1(json.dumps([style_config(cfg).settings(), names]).encode())
    return data.root / "style" / digest.hexdigest()[:16]


def _translated_file(folder: Path, height: int, width: int) -> Path:
    return folder / f"translated-{height}x{width}.pt"


def _style_frames(data: NodeData, cfg: RunConfig) -> torch.Tensor:
    """The node's training frames at the style size (decoded once, cached on its disk)."""
    return cached_decode(_frame_paths(data), cfg.style_height, cfg.style_width,
                         data.root / "cache", "style")


def _translate_frames(data: NodeData, cfg: RunConfig, folder: Path,
                      generator: ResnetGenerator) -> tuple[Path, float]:
    """Translate every training frame at the style size, store it at the re-ID size."""
    translated, seconds_per_image = translate(generator, _style_frames(data, cfg),
                                              device=resolve_device(cfg.device))
    path = _translated_file(folder, cfg.image_height, cfg.image_width)
    save_torch(resize(translated, cfg.image_height, cfg.image_width), path)
    return path, seconds_per_image


def transfer_style(data: NodeData, cfg: RunConfig) -> dict[str, float | int]:
    """Train (or finish, or reuse) this node's CycleGAN and translate its training frames.

    Returns what the server may see: loss terms at the start and the end of training,
    iteration counts, and timings (training seconds per batch, inference seconds per image).
    """
    if not needs_style(data, cfg):
        return {"camera": data.camera, "skipped": 1}
    folder = style_dir(data, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(folder / "lock"):  # two runs sharing this folder train the CycleGAN once
        return _transfer_style(data, cfg, folder)


def _transfer_style(data: NodeData, cfg: RunConfig, folder: Path) -> dict[str, float | int]:
    done = folder / DONE
    if done.is_file():
        if not _translated_file(folder, cfg.image_height, cfg.image_width).is_file():
            _translate_frames(data, cfg, folder, trained_generator(data, cfg))
        return {**json.loads(done.read_text()), "reused": 1}
    target = cached_decode(data.target_domain, cfg.style_height, cfg.style_width,
                           data.root / "cache", "style-target")
    if len(target) == 0:
        raise DatasetError(f"{data.root.name}: target_domain/ holds no images to learn the "
                           f"target camera's style from")
    own = _style_frames(data, cfg)

    def progress(iteration: int, losses: dict[str, float]) -> None:
        log(INFO, "camera %d style transfer %d/%d: %s", data.camera, iteration,
            cfg.style_iterations, " ".join(f"{k} {v:.3f}" for k, v in losses.items()))

    generator, stats = train_cyclegan(own, target, style_config(cfg), folder / "checkpoint.pt",
                                      progress, device=resolve_device(cfg.device))
    save_generator(generator, folder / "generator.pt")
    _, seconds_per_image = _translate_frames(data, cfg, folder, generator)
    metrics: dict[str, float | int] = {
        "camera": data.camera, "skipped": 0, "reused": 0, "images": len(own),
        "target-images": len(target), "iterations": stats.iterations,
        "resumed-from": stats.resumed_from, "train-seconds": stats.seconds,
        "seconds-per-batch": stats.seconds_per_batch,
        "translate-seconds-per-image": seconds_per_image,
        **{f"first-{k}": v for k, v in stats.first.items()},
        **{f"last-{k}": v for k, v in stats.last.items()},
    }
    write_bytes(done, json.dumps(metrics).encode())
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
        path, _ = _translate_frames(data, cfg, folder, trained_generator(data, cfg))
    return torch.load(path, weights_only=True)


def trained_generator(data: NodeData, cfg: RunConfig) -> ResnetGenerator:
    """This node's finished generator (its weights may leave the node: model weights)."""
    folder = style_dir(data, cfg)
    if not (folder / DONE).is_file():
        raise DatasetError(f"camera {data.camera} has no finished style transfer to send")
    return load_generator(folder / "generator.pt")
