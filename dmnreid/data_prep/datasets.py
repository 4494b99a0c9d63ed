"""Dataset registry: one name per supported dataset, one entry point for every reader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dmnreid.data_prep.image_folders import (
    SYNTHETIC_MARKER,
    read_dukemtmc,
    read_market1501,
    read_synthetic,
    resolve_root,
)
from dmnreid.data_prep.mars import read_mars
from dmnreid.data_prep.msmt17 import read_msmt17
from dmnreid.data_prep.records import DatasetError, ReidDataset

DATASETS = ("market1501", "dukemtmc", "msmt17", "mars", "synthetic")


def read_checked_synthetic(root: Path | str) -> ReidDataset:
    """The synthetic reader, refusing folders the generator did not write."""
    folder = resolve_root(root)
    if not (folder / SYNTHETIC_MARKER).is_file():
        raise DatasetError(
            f"{folder}: not a synthetic dataset folder ({SYNTHETIC_MARKER} is missing); "
            f"generate one with `python -m dmnreid.data_prep synthetic --out {folder}`"
        )
    return read_synthetic(folder)


READERS: dict[str, Callable[[Path | str], ReidDataset]] = {
    "market1501": read_market1501,
    "dukemtmc": read_dukemtmc,
    "msmt17": read_msmt17,
    "mars": read_mars,
    "synthetic": read_checked_synthetic,
}


def read_dataset(name: str, root: Path | str) -> ReidDataset:
    """Read dataset ``name`` from ``root`` (the dataset folder or a parent of it)."""
    reader = READERS.get(name)
    if reader is None:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return reader(root)
