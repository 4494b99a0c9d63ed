"""Decoding, caching and augmenting re-ID images.

A node decodes its frames once, resized to the training size, into one uint8 tensor cached on
its own disk: every later hop reads that file instead of thousands of JPEGs. The cache never
leaves the node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from tqdm import tqdm

from dmnreid.atomic import save_torch
from dmnreid.data_prep.records import DatasetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode(paths: Sequence[Path | str], height: int, width: int,
           progress: bool = False) -> torch.Tensor:
    """Decode and resize images into an (N, 3, H, W) uint8 tensor; unreadable files are named."""
    out = torch.empty((len(paths), 3, height, width), dtype=torch.uint8)
    for i, path in enumerate(tqdm(paths, desc="decoding", unit="img", disable=not progress)):
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((width, height), Image.BILINEAR)
        except (OSError, ValueError) as err:
            raise DatasetError(f"cannot read image {path}: {err}") from err
        out[i] = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)
    return out


def cached_decode(paths: Sequence[Path | str], height: int, width: int, cache_dir: Path,
                  tag: str, progress: bool = False) -> torch.Tensor:
    """:func:`decode` with an on-disk cache keyed by the file list and size."""
    key = hashlib.sha1("\n".join(map(str, paths)).encode()).hexdigest()[:16]
    cache = cache_dir / f"{tag}-{height}x{width}-{key}.pt"
    if cache.is_file():
        try:
            return torch.load(cache, weights_only=True)
        except (OSError, RuntimeError):
            cache.unlink(missing_ok=True)
    images = decode(paths, height, width, progress)
    save_torch(images, cache)
    return images


def resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a uint8 (N, 3, h, w) batch (antialiased bilinear); a no-op at the same size."""
    if tuple(images.shape[-2:]) == (height, width):
        return images
    resized = torch.nn.functional.interpolate(images.float(), size=(height, width),
                                              mode="bilinear", antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (N,3,H,W) -> float, ImageNet-normalised."""
    x = batch.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=batch.device).view(1, 3, 1, 1)
    return (x - mean) / std


def train_augmentation(height: int, width: int) -> v2.Compose:
    """The paper's augmentation: random flip, random crop (after padding), random erasing."""
    pad = max(1, round(height / 25))
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.Pad(pad),
        v2.RandomCrop((height, width)),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        v2.RandomErasing(p=0.5, value=0),
    ])


def augment(batch: torch.Tensor, transform: v2.Compose) -> torch.Tensor:
    """Apply ``transform`` to each image of a uint8 batch independently."""
    return torch.stack([transform(image) for image in batch])
