"""Training a CycleGAN between a node's camera (A) and the target camera (B), resumably.

A node trains on its own CPU, possibly over several calls: a checkpoint holds everything the
next iteration depends on (networks, optimisers, schedules, fake pools, random states), so a
resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim import Adam
from torch.optim.lr_scheduler import LambdaLR

from dmnreid.atomic import save_torch
from dmnreid.checks import TrainingDiverged
from dmnreid.compute import CPU, on_device
from dmnreid.style.losses import discriminator_objective, generator_objective
from dmnreid.style.networks import (
    PatchDiscriminator,
    ResnetGenerator,
    check_patch_size,
    check_size,
    init_weights,
)
from dmnreid.style.pool import ImagePool

TERMS = ("g_adv", "f_adv", "cycle", "identity", "g_total", "d_a", "d_b")


@dataclass(frozen=True)
class StyleConfig:
    """CycleGAN settings; the defaults are the paper's except for the image size and length."""

    iterations: int = 2000  # total; lr constant for the first half, then linear decay to 0
    batch_size: int = 1  # paper: 1
    height: int = 64
    width: int = 32
    generator_filters: int = 64
    generator_blocks: int = 9
    discriminator_filters: int = 64
    lr_generator: float = 2e-4  # paper
    lr_discriminator: float = 1e-4  # paper
    cycle_weight: float = 10.0
    identity_weight: float = 0.5
    pool_size: int = 50
    seed: int = 0
    checkpoint_every: int = 100
    # 3 = the 70x70 PatchGAN; images need sides >= 3 * 2**layers (fewer layers for tiny tests)
    discriminator_layers: int = 3

    def settings(self) -> dict:
        """The fields that decide the result (``checkpoint_every`` does not)."""
        return {k: v for k, v in asdict(self).items() if k != "checkpoint_every"}


@dataclass(frozen=True)
class StyleStats:
    """What a training call did; loss means are over all iterations so far, resumed ones too."""

    iterations: int  # done in total
    resumed_from: int  # iteration the call started from (0 = fresh)
    seconds: float  # training wall time of this call (checkpoint writes included)
    seconds_per_batch: float
    first: dict[str, float]  # mean of each loss term over the first 10% of iterations (>= 1)
    last: dict[str, float]  # same over the last 10%


def _fingerprint(cfg: StyleConfig, images_a: torch.Tensor, images_b: torch.Tensor) -> str:
    """What a checkpoint must match to be continued: the settings and the images."""
    digest = hashlib.sha256(json.dumps(cfg.settings(), sort_keys=True).encode())
    for images in (images_a, images_b):
        digest.update(str(tuple(images.shape)).encode())
        digest.update(images.contiguous().reshape(-1).numpy().data)
    return digest.hexdigest()


def linear_decay(iterations: int) -> Callable[[int], float]:
    """LR factor of an iteration: 1 for the first half, then down linearly to ~0 at the end."""
    half = iterations // 2

    def factor(iteration: int) -> float:
        if iteration < half:
            return 1.0
        return 1.0 - (iteration - half + 1) / (iterations - half + 1)

    return factor


def _batch(images: torch.Tensor, rng: np.random.Generator, size: int) -> torch.Tensor:
    """``size`` random images (with replacement), half of them mirrored, in [-1, 1]."""
    index = torch.from_numpy(rng.integers(0, len(images), size))
    flip = torch.from_numpy(rng.random(size) < 0.5)
    batch = images[index].float().div_(127.5).sub_(1.0)
    batch[flip] = batch[flip].flip(-1)
    return batch


def _mean_terms(rows: list[list[float]]) -> dict[str, float]:
    return dict(zip(TERMS, np.mean(rows, axis=0).tolist(), strict=True))


class _CycleGan:
    """The two generators, two discriminators, their optimisers, schedules and fake pools."""

    def __init__(self, cfg: StyleConfig, rng: np.random.Generator,
                 device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)
        self.g = ResnetGenerator(cfg.generator_filters, cfg.generator_blocks)
        self.f = ResnetGenerator(cfg.generator_filters, cfg.generator_blocks)
        self.d_a = PatchDiscriminator(cfg.discriminator_filters, cfg.discriminator_layers)
        self.d_b = PatchDiscriminator(cfg.discriminator_filters, cfg.discriminator_layers)
        for net in self.networks.values():
            init_weights(net)  # on the CPU: the same initial weights on every device
            net.to(device)
        self.opt_g = Adam(chain(self.g.parameters(), self.f.parameters()),
                          lr=cfg.lr_generator, betas=(0.5, 0.999))
        self.opt_d = Adam(chain(self.d_a.parameters(), self.d_b.parameters()),
                          lr=cfg.lr_discriminator, betas=(0.5, 0.999))
        self.sched_g = LambdaLR(self.opt_g, linear_decay(cfg.iterations))
        self.sched_d = LambdaLR(self.opt_d, linear_decay(cfg.iterations))
        self.pool_a = ImagePool(cfg.pool_size, rng=rng)
        self.pool_b = ImagePool(cfg.pool_size, rng=rng)

    @property
    def networks(self) -> dict[str, nn.Module]:
        return {"g": self.g, "f": self.f, "d_a": self.d_a, "d_b": self.d_b}

    def _discriminators_trainable(self, flag: bool) -> None:
        """Off during the generator step: its loss needs no gradients for D's weights."""
        for p in chain(self.d_a.parameters(), self.d_b.parameters()):
            p.requires_grad_(flag)

    def step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> list[float]:
        """One generator update, then one discriminator update on pooled fakes; the terms."""
        cfg = self.cfg
        fake_b = self.g(real_a)
        fake_a = self.f(real_b)
        self._discriminators_trainable(False)
        self.opt_g.zero_grad(set_to_none=True)
        with_identity = cfg.identity_weight > 0
        g_total, terms = generator_objective(
            d_b_on_g_a=self.d_b(fake_b), d_a_on_f_b=self.d_a(fake_a), real_a=real_a,
            real_b=real_b, f_g_a=self.f(fake_b), g_f_b=self.g(fake_a),
            g_b=self.g(real_b) if with_identity else None,
            f_a=self.f(real_a) if with_identity else None,
            cycle_weight=cfg.cycle_weight, identity_weight=cfg.identity_weight)
        g_total.backward()
        self.opt_g.step()

        self._discriminators_trainable(True)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d_b = discriminator_objective(self.d_b(real_b),
                                           self.d_b(self.pool_b.query(fake_b.detach())))
        loss_d_a = discriminator_objective(self.d_a(real_a),
                                           self.d_a(self.pool_a.query(fake_a.detach())))
        (loss_d_a + loss_d_b).backward()
        self.opt_d.step()
        self.sched_g.step()
        self.sched_d.step()
        terms |= {"d_a": loss_d_a.item(), "d_b": loss_d_b.item()}
        return [terms[name] for name in TERMS]

    def state_dict(self) -> dict:
        return {
            "networks": {name: net.state_dict() for name, net in self.networks.items()},
            "optimizers": {"g": self.opt_g.state_dict(), "d": self.opt_d.state_dict()},
            "schedulers": {"g": self.sched_g.state_dict(), "d": self.sched_d.state_dict()},
            "pools": {"a": self.pool_a.state_dict(), "b": self.pool_b.state_dict()},
        }

    def load_state_dict(self, state: dict) -> None:
        for name, net in self.networks.items():
            net.load_state_dict(state["networks"][name])
        self.opt_g.load_state_dict(state["optimizers"]["g"])
        self.opt_d.load_state_dict(state["optimizers"]["d"])
        self.sched_g.load_state_dict(state["schedulers"]["g"])
        self.sched_d.load_state_dict(state["schedulers"]["d"])
        for name, pool in (("a", self.pool_a), ("b", self.pool_b)):
            pool.load_state_dict({"images": state["pools"][name]["images"].to(self.device)})


def _save_checkpoint(path: Path, gan: _CycleGan, rng: np.random.Generator, fingerprint: str,
                     iteration: int, losses: list[list[float]]) -> None:
    save_torch({
        "fingerprint": fingerprint, "iteration": iteration, **gan.state_dict(),
        "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
        "losses": torch.tensor(losses, dtype=torch.float64),
    }, path)


def _load_checkpoint(path: Path, gan: _CycleGan, rng: np.random.Generator,
                     fingerprint: str) -> tuple[int, list[list[float]]]:
    """Restore a checkpoint into ``gan`` and ``rng``; its iteration and recorded losses."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["fingerprint"] != fingerprint:
        raise ValueError(f"style checkpoint {path} was made with other settings or other "
                         "images; delete it to start afresh")
    gan.load_state_dict(state)
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    return state["iteration"], state["losses"].tolist()


def _check_inputs(images_a: torch.Tensor, images_b: torch.Tensor, cfg: StyleConfig,
                  stop_after: int | None) -> None:
    if cfg.iterations < 1 or cfg.batch_size < 1 or cfg.checkpoint_every < 1:
        raise ValueError("style iterations, batch size and checkpoint interval must be >= 1")
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be >= 1, not {stop_after}")
    expected = (3, cfg.height, cfg.width)
    for name, images in (("A (own camera)", images_a), ("B (target camera)", images_b)):
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"style images {name} must be uint8 (N, 3, {cfg.height}, "
                             f"{cfg.width}), got {images.dtype} {tuple(images.shape)}")
        if len(images) == 0:
            raise ValueError(f"style images {name}: the set is empty")
    check_size(cfg.height, cfg.width, 2)
    check_patch_size(cfg.height, cfg.width, cfg.discriminator_layers)


def train_cyclegan(
    images_a: torch.Tensor,
    images_b: torch.Tensor,
    cfg: StyleConfig,
    checkpoint: Path | None = None,
    on_progress: Callable[[int, dict[str, float]], None] | None = None,
    stop_after: int | None = None,
    device: torch.device = CPU,
) -> tuple[ResnetGenerator, StyleStats]:
    """Train G: A -> B (with F: B -> A and both discriminators); return G and what happened.

    ``images_a``/``images_b`` are uint8 (N, 3, cfg.height, cfg.width). With ``checkpoint``, the
    state is saved every ``cfg.checkpoint_every`` iterations and at the end, and an existing
    file is continued (or, when complete, returned without training). ``on_progress`` gets the
    iteration and the mean loss terms since the previous call, about every 10%, after any
    checkpoint of that iteration is written. ``stop_after`` stops early after that iteration
    (checkpointed), to split training across calls. Trains on ``device``; G comes back on
    the CPU.
    """
    _check_inputs(images_a, images_b, cfg, stop_after)
    rng = np.random.default_rng(cfg.seed)
    gan = _CycleGan(cfg, rng, device)
    fingerprint = _fingerprint(cfg, images_a, images_b)
    start, losses = 0, []
    if checkpoint is not None and checkpoint.is_file():
        start, losses = _load_checkpoint(checkpoint, gan, rng, fingerprint)
    end = cfg.iterations if stop_after is None else min(stop_after, cfg.iterations)
    report_every = max(1, cfg.iterations // 10)
    began = time.perf_counter()
    for done in range(start + 1, end + 1):
        real_a = _batch(images_a, rng, cfg.batch_size).to(device)
        real_b = _batch(images_b, rng, cfg.batch_size).to(device)
        terms = gan.step(real_a, real_b)
        if not all(math.isfinite(v) for v in terms):  # never checkpoint or keep a broken GAN
            raise TrainingDiverged(done, "CycleGAN losses " + ", ".join(
                f"{k} {v}" for k, v in zip(TERMS, terms, strict=True)))
        losses.append(terms)
        if checkpoint is not None and (done % cfg.checkpoint_every == 0 or done == end):
            _save_checkpoint(checkpoint, gan, rng, fingerprint, done, losses)
        if on_progress is not None and (done % report_every == 0 or done == cfg.iterations):
            on_progress(done, _mean_terms(losses[-report_every:]))
    seconds = time.perf_counter() - began
    trained = max(0, end - start)
    window = max(1, len(losses) // 10)
    gan.g.eval().to(CPU)
    return gan.g, StyleStats(
        iterations=max(start, end), resumed_from=start, seconds=seconds,
        seconds_per_batch=seconds / trained if trained else 0.0,
        first=_mean_terms(losses[:window]), last=_mean_terms(losses[-window:]))


def translate(generator: ResnetGenerator, images: torch.Tensor, batch_size: int = 64,
              device: torch.device = CPU) -> tuple[torch.Tensor, float]:
    """Render uint8 (N, 3, H, W) images in the generator's output style (computed on
    ``device``); and seconds per image."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"translate expects uint8 (N, 3, H, W) images, got {images.dtype} "
                         f"{tuple(images.shape)}")
    check_size(images.shape[2], images.shape[3], generator.downsamplings)
    was_training = generator.training
    generator.eval()
    out = torch.empty_like(images)
    began = time.perf_counter()
    with torch.no_grad(), on_device(generator, device):
        for i in range(0, len(images), batch_size):
            mapped = generator(images[i:i + batch_size].to(device).float().div(127.5).sub(1.0))
            out[i:i + batch_size] = mapped.add(1.0).mul(127.5).round().clamp(0, 255).byte().cpu()
    seconds = time.perf_counter() - began
    generator.train(was_training)
    return out, seconds / max(1, len(images))


def save_generator(generator: ResnetGenerator, path: Path) -> None:
    """Save the weights with the shape needed to rebuild the generator (atomically)."""
    save_torch({"filters": generator.filters, "blocks": generator.blocks,
                "downsamplings": generator.downsamplings, "state": generator.state_dict()}, path)


def load_generator(path: Path) -> ResnetGenerator:
    """A generator saved by ``save_generator``, in eval mode."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    generator = ResnetGenerator(saved["filters"], saved["blocks"], saved["downsamplings"])
    generator.load_state_dict(saved["state"])
    return generator.eval()
