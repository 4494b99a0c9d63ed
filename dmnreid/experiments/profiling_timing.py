"""Table 2: the run time of each module, measured with the code a node runs.

Inputs are random uint8 images of the configured sizes and the networks start from a random
initialisation: timings depend on shapes, not on pixel values or trained weights, so no
dataset or weights file is needed. Every measurement is repeated after one warm-up call.
"""

from __future__ import annotations

import copy
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median

import numpy as np
import torch

from dmnreid.compute import device_name, resolve_device
from dmnreid.config import RunConfig
from dmnreid.reid.model import build_model
from dmnreid.reid.train import TrainConfig, extract_features, train_local
from dmnreid.style.networks import ResnetGenerator
from dmnreid.style.node_transfer import style_config
from dmnreid.style.training import train_cyclegan, translate

# train_cyclegan reports progress every 10% of its iterations, i.e. after every iteration
# while there are fewer than 20: one call yields one time stamp per training step
STEPS_PER_CALL = 19
STYLE_IMAGES = 8  # per camera: train_cyclegan draws each batch from these, with replacement
# the paper's Table 2 (NVIDIA Jetson TX2, seconds), for comparison
PAPER_SECONDS = {"style transfer inference": 0.1, "re-ID inference": 0.2,
                 "style transfer training": 0.2, "re-ID training": 0.2}


@dataclass(frozen=True)
class Timing:
    """One module's measured seconds (one value per repeat, warm-up excluded)."""

    module: str
    unit: str
    batch: int
    seconds: list[float]

    @property
    def median(self) -> float:
        return median(self.seconds)


def machine(device: torch.device) -> dict[str, str]:
    """What the timings were measured on."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} logical ({usable} usable by this process)",
        "torch threads": str(torch.get_num_threads()),
        "load average": _load(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device_name(device),
        "torch CUDA build": torch.version.cuda or "none (a CPU-only PyTorch)",
    }


def _load() -> str:
    """Other work on the machine slows every module: say how busy it was."""
    if not hasattr(os, "getloadavg"):
        return "unknown"
    return f"{os.getloadavg()[0]:.1f} over the minute before profiling"


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def random_images(count: int, height: int, width: int, seed: int) -> torch.Tensor:
    """uint8 (count, 3, height, width) noise: the input format of every module."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, height, width), dtype=torch.uint8,
                         generator=generator)


def repeated(measure: Callable[[], float], repeats: int) -> list[float]:
    """``measure()`` once to warm up (allocations, kernel selection), then ``repeats`` times."""
    measure()
    return [measure() for _ in range(repeats)]


def wall_seconds(call: Callable[[], object]) -> Callable[[], float]:
    """A measurement of ``call``'s wall time."""

    def measure() -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    return measure


def style_training(cfg: RunConfig, repeats: int) -> tuple[ResnetGenerator, list[float]]:
    """Seconds per CycleGAN training step (``train_cyclegan`` with the run's settings), and the
    trained generator. The first step of each call is the warm-up and is not counted."""
    style = style_config(cfg)
    own = random_images(STYLE_IMAGES, cfg.style_height, cfg.style_width, cfg.seed)
    target = random_images(STYLE_IMAGES, cfg.style_height, cfg.style_width, cfg.seed + 1)
    seconds: list[float] = []
    stamps: list[float] = []

    def stamp(*_: object) -> None:
        stamps.append(time.perf_counter())

    while len(seconds) < repeats:
        steps = min(repeats - len(seconds), STEPS_PER_CALL - 1) + 1
        stamps.clear()
        generator, _ = train_cyclegan(own, target, replace(style, iterations=steps),
                                      on_progress=stamp, device=resolve_device(cfg.device))
        if len(stamps) != steps:
            raise RuntimeError(f"train_cyclegan reported {len(stamps)} of {steps} steps: it no "
                               "longer reports every step of a short training")
        seconds += np.diff(stamps).tolist()
    return generator, seconds


def measure_modules(cfg: RunConfig, num_classes: int, repeats: int,
                    progress: Callable[[str], None]) -> list[Timing]:
    """The four rows of Table 2 for one configuration.

    ``num_classes``: the classifier size of a hop (a camera's tracklets), which sets the size
    of the re-ID head.
    """
    progress(f"style transfer training, {repeats} step(s) of batch {cfg.style_batch_size} at "
             f"{cfg.style_height}x{cfg.style_width}")
    generator, style_steps = style_training(cfg, repeats)
    one_style_image = random_images(1, cfg.style_height, cfg.style_width, cfg.seed)
    device = resolve_device(cfg.device)
    progress(f"style transfer inference on {device}")
    generator.to(device)  # once: a node keeps its models where it computes
    style_inference = repeated(
        lambda: translate(generator, one_style_image, device=device)[1], repeats)

    model = build_model(cfg.arch, None, num_classes, cfg.freeze_stem,
                        cfg.bn_statistics).to(device)
    one_image = random_images(1, cfg.image_height, cfg.image_width, cfg.seed)
    progress(f"re-ID inference ({cfg.arch} at {cfg.image_height}x{cfg.image_width})")
    reid_inference = repeated(
        wall_seconds(lambda: extract_features(model, one_image, device=device)), repeats)
    batch = random_images(cfg.batch_size, cfg.image_height, cfg.image_width, cfg.seed)
    labels = torch.randint(0, num_classes, (cfg.batch_size,),
                           generator=torch.Generator().manual_seed(cfg.seed))
    step = TrainConfig(epochs=1, batch_size=cfg.batch_size, lr_head=cfg.lr_head,
                       lr_backbone=cfg.lr_backbone, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay, seed=cfg.seed)
    progress(f"re-ID training, {repeats} step(s) of batch {cfg.batch_size}")
    # every timed step starts from the same weights: steps on one random batch in a row can
    # diverge (an untrained network at the head's learning rate), and timing needs none of it
    start = copy.deepcopy(model.state_dict())

    def training_step() -> float:
        model.load_state_dict(start)
        return train_local(model, batch, labels, step, device=device).seconds

    reid_training = repeated(training_step, repeats)
    return [
        Timing("style transfer inference", "per image", 1, style_inference),
        Timing("re-ID inference", "per image", 1, reid_inference),
        Timing("style transfer training", "per batch", cfg.style_batch_size, style_steps),
        Timing("re-ID training", "per batch", cfg.batch_size, reid_training),
    ]
