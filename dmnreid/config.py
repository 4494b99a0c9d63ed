"""The run configuration: every ``[tool.flwr.app.config]`` key, typed and checked once.

Defaults here equal the ones in pyproject.toml (a test keeps them in step), so code and tests
that build a config without Flower get the same run as ``flwr run .``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

CHOICES = {
    "dataset": ("synthetic", "market1501", "dukemtmc", "msmt17", "mars", "devices"),
    "arch": ("resnet18", "resnet34", "resnet50"),
    "walk_strategy": ("random-walk", "fedavg"),
    "walk_order": ("random", "permutation"),
    "bn_statistics": ("update", "frozen"),
    "bn_mode": ("shared", "camera"),
    "eval_mode": ("server", "federated", "none"),
    "incremental_head": ("reinit", "travel"),
    "incremental_labels": ("clusters", "local", "oracle"),
    "incremental_loss": ("softmax", "prototype"),
    "prototype_negatives": ("all", "camera"),
    "unify": ("pick-one", "average"),
    "flood_reach": ("edges", "sets"),
    "top1_on": ("nodes", "server"),
    "memory_features": ("plain", "centred"),
    "style_use": ("translated", "both"),
    "transfer_dtype": ("float32", "float16", "bfloat16"),
    "feature_dtype": ("float32", "float16"),
    "synthetic_cameras_per_id": ("uniform", "poisson"),
}

# A phase key at FROM_PASSES (its default) takes its passes key times the run's cameras, so
# that training, evaluation and clustering grow with the network; any other value is hops.
FROM_PASSES = -1
PASSES = {"walk_hops": "walk_passes", "incremental_hops": "incremental_passes",
          "eval_every": "eval_passes", "recluster_every": "recluster_passes"}


MAX_SYNTHETIC_IDS = 9999
MAX_IMAGE_SIDE = 1024
RUN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class Range:
    """The values a numeric key allows: finite, within [low, high] (``open_low/high``:
    the bound itself excluded). ``str`` says it the way an error message needs it."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    why: str = ""

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.open_high
                                                            and value == self.high))

    def __str__(self) -> str:
        if self.high is None:
            text = f"{'>' if self.open_low else '>='} {_number(self.low)}"
        else:
            text = (f"in {'(' if self.open_low else '['}{_number(self.low)}, "
                    f"{_number(self.high)}{')' if self.open_high else ']'}")
        return f"a finite number {text}" + (f" ({self.why})" if self.why else "")


def _number(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else f"{value}"


AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)
IMAGE_SIDE = Range(16, MAX_IMAGE_SIDE, why="the ResNet halves the image five times; larger "
                   "images do not fit a batch in memory")
RANGES = {
    "target_camera": AT_LEAST_ONE,
    "synthetic_cameras": Range(2, 99, why="re-identification is across cameras"),
    "synthetic_train_ids": AT_LEAST_ONE,
    "synthetic_test_ids": AT_LEAST_ONE,
    "synthetic_min_cameras_per_id": Range(1, 99, why="1 lets training identities be seen by "
                                          "one camera only"),
    "synthetic_max_cameras_per_id": Range(0, 99, why="0 = all cameras"),
    "synthetic_ids_per_camera": Range(0, MAX_SYNTHETIC_IDS - 1,
                                      why="0 = synthetic-train-ids sets the total"),
    "synthetic_style_strength": Range(0, 1, why="0 no camera gap, 1 strong"),
    "image_height": IMAGE_SIDE,
    "image_width": IMAGE_SIDE,
    "source_ids": Range(1, MAX_SYNTHETIC_IDS - 1),
    "source_epochs": AT_LEAST_ONE,
    "source_seed": Range(0, 2**31 - 1),
    "style_iterations": AT_LEAST_ONE,
    "style_batch_size": AT_LEAST_ONE,
    "style_height": Range(4, MAX_IMAGE_SIDE),
    "style_width": Range(4, MAX_IMAGE_SIDE),
    "style_generator_filters": Range(1, 256, why="the reference uses 64"),
    "style_generator_blocks": Range(1, 32, why="the reference uses 9"),
    "style_discriminator_filters": Range(1, 256, why="the reference uses 64"),
    "style_discriminator_layers": Range(1, 6, why="the reference uses 3"),
    "style_lr_generator": NON_NEGATIVE,
    "style_lr_discriminator": NON_NEGATIVE,
    "style_cycle_weight": NON_NEGATIVE,
    "style_identity_weight": NON_NEGATIVE,
    "style_pool_size": NON_NEGATIVE,
    "walk_passes": AT_LEAST_ONE,
    "walkers": Range(1, 99, why="walks at once, each on its own camera"),
    "walker_merge": Range(0, why="steps between merges; 0 = once per pass over the cameras"),
    "local_epochs": AT_LEAST_ONE,
    "batch_size": Range(2, why="BatchNorm needs two images"),
    "lr_head": NON_NEGATIVE,
    "lr_backbone": NON_NEGATIVE,
    "momentum": Range(0, 1, open_high=True),
    "weight_decay": NON_NEGATIVE,
    "seed": Range(0, 2**32 - 1),
    "alpha": NON_NEGATIVE,
    "top1_max_distance": Range(0, why="a squared L2 distance; 0 = no limit"),
    "incremental_passes": Range(0, why="0 stops after the first walk"),
    "recluster_passes": Range(0, why="0 clusters once"),
    "prototype_temperature": Range(0, open_low=True),
    "prototype_momentum": Range(0, 1, open_high=True),
    "eval_passes": AT_LEAST_ONE,
    "node_timeout": Range(0, open_low=True, why="seconds"),
    "hop_timeout": Range(0, why="seconds; 0 = node-timeout"),
    "node_retries": Range(0, 100),
    "probe_interval": Range(0, open_low=True, why="seconds"),
    "poll_interval": Range(0.01, 60, why="seconds"),
}


class ConfigError(ValueError):
    """A run-config value that cannot be used; names the key as the user writes it."""


@dataclass(frozen=True)
class Schedule:
    """A run's training phases in steps (hops of the walk, rounds of FedAvg) for its number
    of cameras: what the ServerApp runs and the in-process driver reproduces."""

    walk: int
    incremental: int  # 0: no incremental walk
    eval_every: int
    recluster_every: int  # equal to ``incremental``: one clustering


@dataclass(frozen=True)
class RunConfig:
    # data
    dataset: str = "synthetic"
    data_root: str = ""
    partitions_dir: str = ""
    target_camera: int = 1
    cameras: int = 0
    synthetic_cameras: int = 6
    synthetic_train_ids: int = 100
    synthetic_test_ids: int = 100
    synthetic_style_strength: float = 1.0
    synthetic_cameras_per_id: str = "uniform"
    synthetic_min_cameras_per_id: int = 2
    synthetic_max_cameras_per_id: int = 0
    synthetic_ids_per_camera: int = 0
    # model
    arch: str = "resnet18"
    pretrained_weights: str = "synthetic-source"
    freeze_stem: bool = True
    bn_statistics: str = "frozen"
    bn_mode: str = "camera"
    bn_adapt_images: int = 512
    image_height: int = 64
    image_width: int = 32
    source_ids: int = 300
    source_epochs: int = 8
    source_seed: int = 0
    # style transfer (paper 3.1): a CycleGAN per node toward the target camera
    style_transfer: bool = True
    style_use: str = "both"
    style_iterations: int = 1000
    style_batch_size: int = 1
    style_height: int = 64
    style_width: int = 32
    style_generator_filters: int = 16
    style_generator_blocks: int = 3
    style_discriminator_filters: int = 16
    style_discriminator_layers: int = 2
    style_lr_generator: float = 2e-4
    style_lr_discriminator: float = 1e-4
    style_cycle_weight: float = 10.0
    style_identity_weight: float = 0.5
    style_pool_size: int = 50
    # random walk
    walk_strategy: str = "random-walk"
    walk_order: str = "random"
    walk_hops: int = FROM_PASSES
    walk_passes: int = 3
    walkers: int = 1
    walker_merge: int = 0
    local_epochs: int = 2
    batch_size: int = 32
    lr_head: float = 0.1
    lr_backbone: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    # distributed clustering, incremental walk, unification
    alpha: int = 1
    memory_features: str = "plain"
    top1_max_distance: float = 0.0
    flood_reach: str = "sets"
    top1_on: str = "nodes"
    incremental_hops: int = FROM_PASSES
    incremental_passes: int = 3
    recluster_every: int = FROM_PASSES
    recluster_passes: int = 0
    incremental_head: str = "reinit"
    incremental_labels: str = "clusters"
    incremental_loss: str = "softmax"
    prototype_temperature: float = 0.05
    prototype_momentum: float = 0.2
    prototype_cameras: bool = True
    prototype_negatives: str = "all"
    unify: str = "pick-one"
    # server
    eval_every: int = FROM_PASSES
    eval_passes: int = 1
    eval_mode: str = "server"
    evaluate_run: str = ""
    output_dir: str = ""
    run_name: str = ""
    resume_from: str = ""
    node_timeout: float = 300.0
    hop_timeout: float = 0.0
    node_retries: int = 1
    probe_interval: float = 30.0
    poll_interval: float = 0.5
    device: str = "auto"
    transfer_dtype: str = "float16"
    feature_dtype: str = "float32"
    message_audit: str = ""

    @staticmethod
    def key(name: str) -> str:
        """The user-facing key of a field (``walk_hops`` -> ``walk-hops``)."""
        return name.replace("_", "-")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build from Flower's run config; unknown keys and wrong types are errors."""
        known = {cls.key(f.name): f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown run-config key(s) {unknown}; known keys: {sorted(known)}")
        kwargs = {}
        for key, value in values.items():
            field = known[key]
            kwargs[field.name] = _coerce(key, value, field.type)
        config = cls(**kwargs)
        config.validate()
        return config

    @property
    def hop_wait(self) -> float:
        """Seconds to wait for one hop's reply."""
        return self.hop_timeout or self.node_timeout

    @property
    def max_distance(self) -> float | None:
        """``top1-max-distance`` as the clustering functions take it (0 = no limit)."""
        return self.top1_max_distance or None

    @property
    def incremental_walk(self) -> bool:
        """Whether the run walks again on global labels (on any number of cameras)."""
        return self.hops("incremental_hops", 1) > 0

    def hops(self, name: str, cameras: int) -> int:
        """Hops of a phase key (``walk_hops``, ``incremental_hops``, ``eval_every``,
        ``recluster_every``) on ``cameras`` cameras: its own value, or at FROM_PASSES its
        passes key times the cameras (a pass: each camera once, on average)."""
        value = getattr(self, name)
        return getattr(self, PASSES[name]) * cameras if value == FROM_PASSES else value

    def phase_steps(self, hops: int, cameras: int) -> int:
        """Steps of a training phase given in hops: the hops themselves for the walk; for
        FedAvg (every camera trains each round) rounds with about as many images seen, hops /
        cameras rounded, at least one (a pass is one round)."""
        if self.walk_strategy == "random-walk" or hops == 0:
            return hops
        return max(1, round(hops / cameras))

    def schedule(self, cameras: int) -> Schedule:
        """The phases of a run on ``cameras`` cameras (all the run's, also those left out for
        now, so that a resumed run has the same phases): the one place hops are resolved."""
        steps = {name: self.phase_steps(self.hops(name, cameras), cameras) for name in PASSES}
        return Schedule(walk=steps["walk_hops"], incremental=steps["incremental_hops"],
                        eval_every=steps["eval_every"],
                        recluster_every=steps["recluster_every"] or steps["incremental_hops"])

    def to_mapping(self) -> dict[str, Any]:
        return {self.key(k): v for k, v in asdict(self).items()}

    def validate(self) -> None:
        """Refuse every value a run could not use, naming the key and what it allows.

        Runs before anything is written, so a typo costs nothing; checks that need the data
        (does ``target-camera`` exist?) happen as soon as the data is known.
        """
        for name, options in CHOICES.items():
            if getattr(self, name) not in options:
                raise ConfigError(f"{self.key(name)} = {getattr(self, name)!r}; expected one of "
                                  f"{list(options)}")
        for name, allowed in RANGES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{self.key(name)} = {value!r}: must be {allowed}")
        for name, passes in PASSES.items():
            self._check_hops(name, passes)
        if not DEVICE.fullmatch(self.device):
            raise ConfigError(f"device = {self.device!r}; expected 'auto' (a CUDA GPU where "
                              "the machine has one, else the CPU), 'cpu', 'cuda' or 'cuda:N'")
        if self.bn_adapt_images == 1 or self.bn_adapt_images < 0:
            raise ConfigError(f"bn-adapt-images = {self.bn_adapt_images}: BN statistics need "
                              "at least 2 images (0 = all of a camera's images)")
        smallest = 3 * 2 ** self.style_discriminator_layers  # a non-empty PatchGAN output
        for name in ("style_height", "style_width"):
            size = getattr(self, name)
            if size % 4 or size < smallest:
                raise ConfigError(
                    f"{self.key(name)} = {size}: the CycleGAN needs a multiple of 4 (two "
                    f"downsamplings) and, with style-discriminator-layers = "
                    f"{self.style_discriminator_layers}, at least {smallest}")
        self._check_combinations()

    def _check_hops(self, name: str, passes: str) -> None:
        """A phase key is FROM_PASSES or hops within its passes key's range; given in hops,
        it wins over its passes key at the default, and is refused beside a changed one."""
        value, key, passes_key = getattr(self, name), self.key(name), self.key(passes)
        if value == FROM_PASSES:
            return
        if value not in RANGES[passes]:
            raise ConfigError(f"{key} = {value!r}: must be {FROM_PASSES} ({passes_key} x "
                              f"cameras) or {RANGES[passes]}")
        if getattr(self, passes) != _DEFAULTS[passes]:
            raise ConfigError(f"{key} = {value} and {passes_key} = {getattr(self, passes)} "
                              f"both set: {key} counts hops, {passes_key} passes over the "
                              f"cameras; set one ({key} = {FROM_PASSES} takes {passes_key})")

    def _check_combinations(self) -> None:
        """Settings that are fine alone but not together."""
        if self.evaluate_run and self.resume_from:
            raise ConfigError("evaluate-run and resume-from both set: evaluate-run scores a "
                              "finished run, resume-from continues an unfinished one; set one")
        if self.evaluate_run and self.eval_mode == "none":
            raise ConfigError("evaluate-run with eval-mode = 'none' would score nothing")
        if self.walk_strategy == "fedavg" and self.incremental_head == "travel":
            raise ConfigError("walk-strategy = 'fedavg' with incremental-head = 'travel': under "
                              "FedAvg every node keeps its own head (nothing to travel); use "
                              "incremental-head = 'reinit'")
        if self.walkers > 1 and self.walk_strategy == "fedavg":
            raise ConfigError(f"walkers = {self.walkers} with walk-strategy = 'fedavg': "
                              "walkers are walks at once; FedAvg trains every camera each "
                              "round already")
        if self.incremental_loss == "prototype" and (self.walk_strategy == "fedavg"
                                                     or self.incremental_head == "travel"):
            raise ConfigError("incremental-loss = 'prototype' trains against a memory that "
                              "travels from hop to hop in place of a head: it needs "
                              "walk-strategy = 'random-walk' and incremental-head = 'reinit'")
        if self.incremental_loss == "prototype" and self.incremental_labels == "local":
            raise ConfigError("incremental-loss = 'prototype' trains against the centroids of "
                              "global classes: it needs incremental-labels = 'clusters' or "
                              "'oracle', not 'local'")
        if self.prototype_negatives == "camera" and not self.prototype_cameras:
            raise ConfigError("prototype-negatives = 'camera' keeps this camera's own entries "
                              "as the negatives: it needs prototype-cameras = true")
        if self.run_name and not RUN_NAME.fullmatch(self.run_name):
            raise ConfigError(f"run-name = {self.run_name!r}: use letters, digits, '.', '_' "
                              "and '-' only, not starting with '.' (it names a folder)")
        if self.dataset == "devices":
            self._check_devices()
            return
        if self.cameras:
            raise ConfigError(f"cameras = {self.cameras} is only for dataset = 'devices' (the "
                              f"number of cameras of {self.dataset!r} is known from its data)")
        if self.dataset != "synthetic" and not self.data_root:
            raise ConfigError(
                f"dataset = {self.dataset!r} needs data-root, the folder holding the dataset, "
                f"e.g. --run-config \"dataset='{self.dataset}' data-root='/data/{self.dataset}'\""
            )
        if self.dataset == "synthetic":
            if self.target_camera > self.synthetic_cameras:
                raise ConfigError(
                    f"target-camera = {self.target_camera}: the synthetic network has cameras "
                    f"1..{self.synthetic_cameras} (synthetic-cameras)")
            if self.synthetic_train_ids + self.synthetic_test_ids > MAX_SYNTHETIC_IDS:
                raise ConfigError(
                    f"synthetic-train-ids + synthetic-test-ids = "
                    f"{self.synthetic_train_ids + self.synthetic_test_ids}: at most "
                    f"{MAX_SYNTHETIC_IDS} identities (Market-style 4-digit person ids)")
            self._check_cameras_per_id()
            if self.walkers > self.synthetic_cameras:
                raise ConfigError(f"walkers = {self.walkers} but the synthetic network has "
                                  f"{self.synthetic_cameras} cameras (synthetic-cameras): the "
                                  "walkers of a step train on distinct cameras")

    def _check_cameras_per_id(self) -> None:
        """How many cameras see an identity, and identities per camera, of the synthetic
        network: bounds within its cameras; a per-camera count or a total, not both."""
        top = self.synthetic_max_cameras_per_id or self.synthetic_cameras
        if top > self.synthetic_cameras:
            raise ConfigError(f"synthetic-max-cameras-per-id = {top}: the synthetic network "
                              f"has {self.synthetic_cameras} cameras (synthetic-cameras)")
        if top < 2:
            raise ConfigError(f"synthetic-max-cameras-per-id = {top}: a test identity needs a "
                              "query camera and another camera for its gallery (at least 2)")
        if self.synthetic_min_cameras_per_id > top:
            raise ConfigError(f"synthetic-min-cameras-per-id = "
                              f"{self.synthetic_min_cameras_per_id} is more than "
                              f"synthetic-max-cameras-per-id ({top})")
        if self.synthetic_ids_per_camera and \
                self.synthetic_train_ids != _DEFAULTS["synthetic_train_ids"]:
            raise ConfigError(f"synthetic-ids-per-camera = {self.synthetic_ids_per_camera} and "
                              f"synthetic-train-ids = {self.synthetic_train_ids} both set: the "
                              "total of training identities follows from the per-camera "
                              "count; set one")

    def _check_devices(self) -> None:
        """``dataset = "devices"``: the cameras' data is on their devices, the server has none."""
        if self.cameras < 2:
            raise ConfigError(f"dataset = 'devices' needs cameras, the number of camera "
                              f"devices to wait for (at least 2), got {self.cameras}")
        if self.walkers > self.cameras:
            raise ConfigError(f"walkers = {self.walkers} but cameras = {self.cameras}: the "
                              "walkers of a step train on distinct cameras")
        if self.eval_mode == "server":
            raise ConfigError("dataset = 'devices': the server holds no query/gallery images, "
                              "so eval-mode must be 'federated' (devices with labelled test "
                              "images) or 'none'")


def _coerce(key: str, value: Any, kind: Any) -> Any:
    kind = kind if isinstance(kind, str) else kind.__name__
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind == "str" and isinstance(value, str):
        return value
    raise ConfigError(f"{key} = {value!r}: expected a {kind}")


_DEFAULTS = {f.name: f.default for f in fields(RunConfig) if f.default is not MISSING}


def defaults() -> dict[str, Any]:
    """The default value of every key, as pyproject.toml must list them."""
    return {RunConfig.key(name): value for name, value in _DEFAULTS.items()}
