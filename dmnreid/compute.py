"""Where a node's (or the server's) tensors are computed: the ``device`` setting.

Each process resolves the setting for itself, since the run config reaches every node alike
but the machines differ (a Jetson's GPU, a CPU-only laptop in simulation). Models and states
live on the CPU everywhere else in the project; a computation moves its model to the device
for its own duration and back (``on_device``), so what is saved, sent or compared never
depends on where it was computed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from dmnreid.config import DEVICE, ConfigError

CPU = torch.device("cpu")


def resolve_device(setting: str) -> torch.device:
    """The torch device for ``device = setting`` on this machine; a clear error where the
    setting asks for a GPU this machine does not have."""
    if not DEVICE.fullmatch(setting):
        raise ConfigError(f"device = {setting!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if setting == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else CPU
    if setting == "cpu":
        return CPU
    if not torch.cuda.is_available():
        raise ConfigError(f"device = {setting!r}, but this machine has no CUDA GPU that "
                          f"PyTorch {torch.__version__} can use (use 'auto' or 'cpu')")
    device = torch.device(setting)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device = {setting!r}, but this machine has "
                          f"{torch.cuda.device_count()} CUDA GPU(s)")
    return device


def device_name(device: torch.device) -> str:
    """What a run record says about the device: 'cpu' or the GPU's name."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def module_device(module: nn.Module) -> torch.device:
    """Where ``module``'s weights are (the CPU for a module without any)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return CPU


@contextmanager
def on_device(module: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """``module`` moved to ``device`` for the block and back to where it was after it (in
    place); nothing moves when it is there already (a profiler keeps it on the GPU)."""
    before = module_device(module)
    if before == device:
        yield module
        return
    module.to(device)
    try:
        yield module
    finally:
        module.to(before)
