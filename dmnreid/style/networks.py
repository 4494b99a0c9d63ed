"""CycleGAN's networks (Zhu et al. 2017): the ResNet generator and the 70x70 PatchGAN.

Both use instance normalisation without affine parameters, so every convolution keeps its
bias. Images are in [-1, 1]; the discriminator outputs raw scores for the least-squares loss.
"""

from __future__ import annotations

import torch
from torch import nn


def check_size(height: int, width: int, downsamplings: int) -> None:
    """Refuse sizes the generator cannot map back to themselves.

    Each stride-2 convolution halves a side and each transposed one doubles it, so the sides
    must be multiples of ``2**downsamplings``; the reflection padding (3 pixels at full size,
    1 pixel in the residual blocks) needs at least 4 pixels before and 2 after downsampling.
    """
    step = 2**downsamplings
    least = max(4, 2 * step)
    if any(side % step or side < least for side in (height, width)):
        raise ValueError(
            f"image size {height}x{width} does not fit a generator with {downsamplings} "
            f"downsamplings: both sides must be multiples of {step} and at least {least}")


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions added back onto the input: the generator's style-changing core."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Encoder, residual blocks, decoder: maps (N, 3, H, W) images to the same shape.

    The constructor arguments are kept as attributes so a saved generator can be rebuilt.
    """

    def __init__(self, filters: int = 64, blocks: int = 9, downsamplings: int = 2) -> None:
        super().__init__()
        self.filters, self.blocks, self.downsamplings = filters, blocks, downsamplings
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(3, filters, 7),
            nn.InstanceNorm2d(filters), nn.ReLU(inplace=True),
        ]
        channels = filters
        for _ in range(downsamplings):
            layers += [nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),
                       nn.InstanceNorm2d(2 * channels), nn.ReLU(inplace=True)]
            channels *= 2
        layers += [ResidualBlock(channels) for _ in range(blocks)]
        for _ in range(downsamplings):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 3, stride=2, padding=1,
                                          output_padding=1),
                       nn.InstanceNorm2d(channels // 2), nn.ReLU(inplace=True)]
            channels //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size(x.shape[-2], x.shape[-1], self.downsamplings)
        return self.model(x)


def patch_map_size(height: int, width: int, layers: int) -> tuple[int, int]:
    """The discriminator's output size: ``layers`` halvings (k4 s2 p1), then two k4 s1 p1 (-1 each).

    The map is empty unless both sides are at least ``3 * 2**layers`` (24 for the default
    3 layers, so a 32x16 image needs ``layers=2``, giving a 6x2 map).
    """
    return height // 2**layers - 2, width // 2**layers - 2


def check_patch_size(height: int, width: int, layers: int) -> None:
    """Refuse images too small to leave a PatchGAN any patch to score."""
    rows, cols = patch_map_size(height, width, layers)
    if rows < 1 or cols < 1:
        raise ValueError(
            f"image size {height}x{width} is too small for a {layers}-layer PatchGAN: "
            f"both sides must be at least {3 * 2**layers} (use fewer layers)")


class PatchDiscriminator(nn.Module):
    """The PatchGAN: one real/fake score per overlapping patch (70x70 pixels with 3 layers).

    Judging patches rather than whole images leaves content to the cycle loss and makes the
    discriminator look at texture and colour, i.e. style.
    """

    def __init__(self, filters: int = 64, layers: int = 3) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"a PatchGAN needs at least 1 layer, not {layers}")
        self.layers = layers
        parts: list[nn.Module] = [nn.Conv2d(3, filters, 4, stride=2, padding=1),
                                  nn.LeakyReLU(0.2, inplace=True)]
        for n in range(1, layers):
            before, after = filters * min(2 ** (n - 1), 8), filters * min(2**n, 8)
            parts += [nn.Conv2d(before, after, 4, stride=2, padding=1),
                      nn.InstanceNorm2d(after), nn.LeakyReLU(0.2, inplace=True)]
        before, after = filters * min(2 ** (layers - 1), 8), filters * min(2**layers, 8)
        parts += [nn.Conv2d(before, after, 4, stride=1, padding=1),
                  nn.InstanceNorm2d(after), nn.LeakyReLU(0.2, inplace=True),
                  nn.Conv2d(after, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_patch_size(x.shape[-2], x.shape[-1], self.layers)
        return self.model(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """The reference 'normal' initialisation: conv weights ~ N(0, gain), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
