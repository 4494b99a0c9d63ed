"""How far each camera's images are from the target camera's, and a picture of the translation.

Both are computed by the server on the evaluator's query/gallery images (which the server holds
anyway), translated with the generator each node sends: a held-out check of the style
transfer that needs no node image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def colour_statistics(images: torch.Tensor) -> np.ndarray:
    """Per-channel mean and standard deviation of uint8 (N, 3, H, W) images, in [0, 1] units."""
    x = images.double().div(255.0).transpose(0, 1).reshape(3, -1)
    return torch.cat([x.mean(1), x.std(1)]).numpy()


def colour_gap(images: torch.Tensor, target: torch.Tensor) -> float:
    """Euclidean distance between two image sets' colour statistics (0 = same palette)."""
    return float(np.linalg.norm(colour_statistics(images) - colour_statistics(target)))


def feature_gap(features: np.ndarray, target: np.ndarray) -> float:
    """Fréchet distance between diagonal Gaussians fitted to two feature sets.

    The per-dimension means and spreads are what batch normalisation sees of a camera, so
    this is the camera shift as the re-ID network meets it; the diagonal form stays stable
    with fewer images than dimensions, where a full covariance would not.
    """
    mean = np.square(features.mean(0) - target.mean(0)).sum()
    spread = np.square(features.std(0) - target.std(0)).sum()
    return float(mean + spread)


def save_grid(rows: Sequence[tuple[int, torch.Tensor, torch.Tensor]],
              target: tuple[int, torch.Tensor], path: Path) -> None:
    """One panel per camera: originals above, translations below; the target camera last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def strip(images: torch.Tensor) -> np.ndarray:
        return torch.cat(list(images), dim=2).permute(1, 2, 0).numpy()

    panels = [(f"camera {c}: original / translated",
               np.concatenate([strip(o), strip(t)], axis=0)) for c, o, t in rows]
    panels.append((f"camera {target[0]} (target)", strip(target[1])))
    width = max(p.shape[1] for _, p in panels)
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(max(4.0, width / 40), 1.2 + 1.6 * len(panels)),
                             gridspec_kw={"height_ratios": [p.shape[0] for _, p in panels]})
    for ax, (title, panel) in zip(axes[:, 0], panels, strict=True):
        ax.imshow(panel)
        ax.set_title(title, fontsize=9, loc="left")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
