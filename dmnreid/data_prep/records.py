"""The in-memory form every dataset reader produces, so one code path serves all datasets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "query", "gallery")


class DatasetError(ValueError):
    """Bad dataset input: names the path and what was expected there."""


@dataclass(frozen=True)
class Sample:
    """One retrieval or training unit.

    For image datasets a sample is one image (``frames`` has one path); for MARS it is one
    tracklet (all its frames, in order). ``camid`` is 1-based, as in the datasets' file names.
    ``track`` is the dataset's own tracklet number (MARS ``T0003`` -> 3), 0 for image datasets.
    """

    frames: tuple[str, ...]
    pid: int
    camid: int
    track: int = 0


@dataclass
class ReidDataset:
    """A dataset's three splits plus what its metadata names but the disk lacks.

    Samples whose frames are all absent are left out of the splits; partly present samples
    keep their present frames. ``missing`` maps a split to the absent frame paths so callers
    can report them instead of crashing.
    """

    name: str
    root: Path
    video: bool
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    missing: dict[str, list[str]] = field(default_factory=dict)

    def split(self, name: str) -> list[Sample]:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)
