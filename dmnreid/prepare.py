"""Server-side set-up before any message: the dataset on disk and its per-camera partition.

The synthetic default is generated on first use and cached, like the partition of any dataset,
under ``$DMNREID_CACHE`` (default ``~/.cache/dmnreid``).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from logging import INFO
from pathlib import Path

from flwr.common.logger import log

from dmnreid.cache import cache_home
from dmnreid.config import MAX_SYNTHETIC_IDS, ConfigError, RunConfig
from dmnreid.data_prep.datasets import read_dataset
from dmnreid.data_prep.partition import write_partition
from dmnreid.data_prep.synthetic import (
    GENERATOR_VERSION,
    SyntheticConfig,
    generate,
    mean_cameras_per_id,
    train_ids_for,
)


def synthetic_config(cfg: RunConfig) -> SyntheticConfig:
    """The camera network of a run. Fixed seed: runs with other seeds share the same data.
    With ``synthetic-ids-per-camera`` the training identities are as many as give each
    camera that many on average (refused, naming the key, beyond the 4-digit person ids)."""
    top = cfg.synthetic_max_cameras_per_id
    syn = SyntheticConfig(cameras=cfg.synthetic_cameras, train_ids=cfg.synthetic_train_ids,
                          test_ids=cfg.synthetic_test_ids,
                          style_strength=cfg.synthetic_style_strength, seed=0,
                          min_cameras_per_id=cfg.synthetic_min_cameras_per_id,
                          max_cameras_per_id=None if top in (0, cfg.synthetic_cameras) else top,
                          cameras_per_id=cfg.synthetic_cameras_per_id)
    if not cfg.synthetic_ids_per_camera:
        return syn
    train_ids = train_ids_for(cfg.synthetic_ids_per_camera, syn)
    if train_ids + syn.test_ids > MAX_SYNTHETIC_IDS:
        raise ConfigError(
            f"synthetic-ids-per-camera = {cfg.synthetic_ids_per_camera} takes {train_ids} "
            f"training identities ({cfg.synthetic_ids_per_camera} x {syn.cameras} cameras / "
            f"{mean_cameras_per_id(syn):.2f} cameras per identity), with synthetic-test-ids = "
            f"{syn.test_ids} more than {MAX_SYNTHETIC_IDS} identities")
    return replace(syn, train_ids=train_ids)


def synthetic_folder(syn: SyntheticConfig) -> str:
    """The cache folder's name of a synthetic network; how many cameras see an identity is
    in it only where not the default, so the default network keeps the folder it always had
    (and its partitions, whose cache key is that folder)."""
    name = (f"c{syn.cameras}-tr{syn.train_ids}-te{syn.test_ids}-st{syn.style_strength:g}"
            f"-s{syn.seed}-v{GENERATOR_VERSION}")
    seen = (syn.cameras_per_id, syn.min_cameras_per_id, syn.max_cameras_per_id)
    default = SyntheticConfig()
    if seen == (default.cameras_per_id, default.min_cameras_per_id, default.max_cameras_per_id):
        return name
    kind, low, high = seen
    return f"{name}-{kind}-k{low}-{high or 'all'}"


def dataset_root(cfg: RunConfig, progress: bool = False) -> Path:
    """The dataset folder, generating the synthetic network when it is the one asked for."""
    if cfg.dataset != "synthetic":
        return Path(cfg.data_root).expanduser()
    syn = synthetic_config(cfg)
    root = Path(cfg.data_root).expanduser() if cfg.data_root else \
        cache_home() / "synthetic" / synthetic_folder(syn)
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
