"""What a node keeps on its own disk between messages, and where its data is: torch-free.

In deployment every message runs in a fresh ClientApp process, so a clustering round
(``query.top1``, ``query.triangle``, ``query.flood``) pays for every import: these rounds use
only this module, numpy and the protocol, never torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dmnreid.data_prep.partition import read_partition
from dmnreid.data_prep.records import DatasetError


def node_dir(node_config: Mapping[str, object], partition_dir: str) -> Path | None:
    """The node's data folder: ``data-dir`` in deployment, else its simulation partition.

    Returns None for a simulated node beyond the number of cameras (it has no data).
    """
    if "data-dir" in node_config:
        return Path(str(node_config["data-dir"]))
    if "partition-id" not in node_config:
        raise DatasetError("node has neither a data-dir nor a partition-id in its node config")
    if not partition_dir:
        raise DatasetError("this node has no data-dir in its node config and the server sent "
                           "no partition folder (dataset = 'devices' needs SuperNodes started "
                           "with --node-config \"data-dir='...'\")")
    nodes = read_partition(Path(partition_dir))["nodes"]
    index = int(node_config["partition-id"])  # type: ignore[call-overload]
    return Path(partition_dir) / nodes[index]["node"] if index < len(nodes) else None


def run_state_dir(directory: Path, run_key: str) -> Path:
    """A node's own state for one run: its memory bank and its copy of the model."""
    if not run_key or "/" in run_key or "\\" in run_key or run_key.startswith("."):
        raise ValueError(f"bad run key {run_key!r}")
    return directory / "runs" / run_key


def model_copy_path(directory: Path, run_key: str) -> Path:
    """Where a node keeps its own copy of the model after it trained (for unification)."""
    return run_state_dir(directory, run_key) / "model.pt"


def local_head_path(directory: Path, run_key: str, name: str) -> Path:
    """Where a node keeps its own classifier head between FedAvg rounds (never sent)."""
    if not name.replace("-", "").isalnum():
        raise ValueError(f"bad local-head name {name!r}")
    return run_state_dir(directory, run_key) / f"head-{name}.pt"


def save_memory_bank(directory: Path, run_key: str, bank: np.ndarray) -> None:
    path = run_state_dir(directory, run_key) / "memory.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, bank)


def load_memory_bank(directory: Path, run_key: str) -> np.ndarray:
    path = run_state_dir(directory, run_key) / "memory.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{directory.name} has no memory bank for run {run_key}")
    return np.load(path)
