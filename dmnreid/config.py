"""The run configuration: every ``[tool.flwr.app.config]`` key, typed and checked once.

Defaults here equal the ones in pyproject.toml (a test keeps them in step), so code and tests
that build a config without Flower get the same run as ``flwr run .``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

CHOICES = {
    "dataset": ("synthetic", "market1501", "dukemtmc", "msmt17", "mars"),
    "arch": ("resnet18", "resnet34", "resnet50"),
    "walk_order": ("random", "permutation"),
    "bn_statistics": ("update", "frozen"),
    "bn_mode": ("shared", "camera"),
    "eval_mode": ("server", "federated"),
    "incremental_head": ("reinit", "travel"),
    "incremental_labels": ("clusters", "local"),
    "unify": ("pick-one", "average"),
    "flood_reach": ("edges", "sets"),
    "memory_features": ("plain", "centred"),
    "style_use": ("translated", "both"),
}


class ConfigError(ValueError):
    """A run-config value that cannot be used; names the key as the user writes it."""


@dataclass(frozen=True)
class RunConfig:
    # data
    dataset: str = "synthetic"
    data_root: str = ""
    partitions_dir: str = ""
    target_camera: int = 1
    synthetic_cameras: int = 6
    synthetic_train_ids: int = 100
    synthetic_test_ids: int = 100
    synthetic_style_strength: float = 1.0
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
    walk_order: str = "random"
    walk_hops: int = 18
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
    flood_reach: str = "edges"
    incremental_hops: int = 18
    recluster_every: int = 0
    incremental_head: str = "reinit"
    incremental_labels: str = "clusters"
    unify: str = "pick-one"
    # server
    eval_every: int = 6
    eval_mode: str = "server"
    evaluate_run: str = ""
    output_dir: str = ""
    run_name: str = ""
    resume_from: str = ""
    node_timeout: float = 300.0
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
    def max_distance(self) -> float | None:
        """``top1-max-distance`` as the clustering functions take it (0 = no limit)."""
        return self.top1_max_distance or None

    def to_mapping(self) -> dict[str, Any]:
        return {self.key(k): v for k, v in asdict(self).items()}

    def validate(self) -> None:
        for name, options in CHOICES.items():
            if getattr(self, name) not in options:
                raise ConfigError(f"{self.key(name)} = {getattr(self, name)!r}; expected one of "
                                  f"{list(options)}")
        positive = ("walk_hops", "local_epochs", "batch_size", "image_height", "image_width",
                    "eval_every", "synthetic_cameras", "synthetic_train_ids",
                    "synthetic_test_ids", "source_ids", "source_epochs", "style_iterations",
                    "style_batch_size", "style_generator_filters", "style_generator_blocks",
                    "style_discriminator_filters", "style_discriminator_layers")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{self.key(name)} must be >= 1, got {getattr(self, name)}")
        if min(self.alpha, self.incremental_hops, self.top1_max_distance,
               self.recluster_every) < 0:
            raise ConfigError("alpha, incremental-hops, top1-max-distance and recluster-every "
                              "must be >= 0")
        if self.bn_adapt_images == 1 or self.bn_adapt_images < 0:
            raise ConfigError(f"bn-adapt-images = {self.bn_adapt_images}: BN statistics need "
                              "at least 2 images (0 = all of a camera's images)")
        if min(self.style_lr_generator, self.style_lr_discriminator, self.style_cycle_weight,
               self.style_identity_weight, self.style_pool_size) < 0:
            raise ConfigError("style learning rates, loss weights and pool size must be >= 0")
        smallest = 3 * 2 ** self.style_discriminator_layers  # a non-empty PatchGAN output
        for name in ("style_height", "style_width"):
            size = getattr(self, name)
            if size % 4 or size < smallest:
                raise ConfigError(
                    f"{self.key(name)} = {size}: the CycleGAN needs a multiple of 4 (two "
                    f"downsamplings) and, with style-discriminator-layers = "
                    f"{self.style_discriminator_layers}, at least {smallest}")
        if self.batch_size < 2:
            raise ConfigError("batch-size must be >= 2 (BatchNorm needs two images)")
        if self.dataset != "synthetic" and not self.data_root:
            raise ConfigError(
                f"dataset = {self.dataset!r} needs data-root, the folder holding the dataset, "
                f"e.g. --run-config \"dataset='{self.dataset}' data-root='/data/{self.dataset}'\""
            )


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


def defaults() -> dict[str, Any]:
    """The default value of every key, as pyproject.toml must list them."""
    return {RunConfig.key(f.name): f.default for f in fields(RunConfig)
            if f.default is not MISSING}
