"""The history of generated images the discriminators are trained on (Shrivastava et al. 2017).

Showing a discriminator older fakes as well as the latest ones keeps it from chasing only the
generator's current output, which damps oscillation.
"""

from __future__ import annotations

import numpy as np
import torch


class ImagePool:
    """A buffer of up to ``size`` generated images; ``size`` 0 disables it.

    The random generator is the trainer's, so that its state (checkpointed there) decides
    every draw made here.
    """

    def __init__(self, size: int = 50, *, rng: np.random.Generator) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, not {size}")
        self.size = size
        self.rng = rng
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """A batch the same shape as ``images``, each one either new or swapped for a stored one.

        While the pool fills, every image is stored and returned. Once full, each image is, with
        probability 1/2, stored in place of a random stored image, which is returned instead.
        """
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif self.rng.random() < 0.5:
                slot = int(self.rng.integers(self.size))
                out.append(self.images[slot])
                self.images[slot] = image
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The stored images, stacked (an empty tensor while the pool is empty)."""
        return {"images": torch.stack(self.images) if self.images else torch.empty(0)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        images = state["images"]
        if len(images) > self.size:
            raise ValueError(f"{len(images)} stored images do not fit a pool of {self.size}")
        self.images = list(images.unbind(0)) if images.numel() else []
