"""Server-side set-up before any message: the dataset on disk and its per-camera partition.

The synthetic default is generated on first use and cached, like the partition of any dataset,
under ``$DMNREID_CACHE`` (default ``~/.cache/dmnreid``).
"""

from __future__ import annotations

import hashlib
from logging import INFO
from pathlib import Path

from flwr.common.logger import log

from dmnreid.cache import cache_home
from dmnreid.config import RunConfig
from dmnreid.data_prep.datasets import read_dataset
from dmnreid.data_prep.partition import write_partition
from dmnreid.data_prep.synthetic import GENERATOR_VERSION, SyntheticConfig, generate


def synthetic_config(cfg: RunConfig) -> SyntheticConfig:
    """The camera network of a run. Fixed seed: runs with other seeds share the same data."""
    return SyntheticConfig(cameras=cfg.synthetic_cameras, train_ids=cfg.synthetic_train_ids,
                           test_ids=cfg.synthetic_test_ids,
                           style_strength=cfg.synthetic_style_strength, seed=0)


def dataset_root(cfg: RunConfig, progress: bool = False) -> Path:
    """The dataset folder, generating the synthetic network when it is the one asked for."""
    if cfg.dataset != "synthetic":
        return Path(cfg.data_root).expanduser()
    syn = synthetic_config(cfg)
    root = Path(cfg.data_root).expanduser() if cfg.data_root else (
        cache_home() / "synthetic" / f"c{syn.cameras}-tr{syn.train_ids}-te{syn.test_ids}"
        f"-st{syn.style_strength:g}-s{syn.seed}-v{GENERATOR_VERSION}")
    log(INFO, "Synthetic camera network: %s (generated on first use)", root)
    generate(root, syn, progress=progress)
    return root


def prepare_partitions(cfg: RunConfig, progress: bool = False) -> Path | None:
    """Dataset -> one node folder per camera (cached); returns the partition folder, or None
    with ``dataset = "devices"`` (each device built its own folder; the server holds none)."""
    if cfg.dataset == "devices":
        return None
    root = dataset_root(cfg, progress)
    if cfg.partitions_dir:
        out = Path(cfg.partitions_dir).expanduser()
    else:
        tag = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:10]
        out = cache_home() / "partitions" / f"{cfg.dataset}-{tag}-target{cfg.target_camera}"
    log(INFO, "Node folders: %s (written on first use)", out)
    # a cached partition from an older format is rewritten; a user's folder is only reported
    write_partition(read_dataset(cfg.dataset, root), out, target_camera=cfg.target_camera,
                    seed=0, force=not cfg.partitions_dir, progress=progress,
                    out_name="partitions-dir", target_name="target-camera",
                    force_name="--force to `python -m dmnreid.data_prep partition`")
    return out
