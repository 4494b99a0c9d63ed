"""MSMT17 (V1 and V2) reader, driven by the official list files.

The lists, not the folders, define the splits (train vs. val share one folder), so every image
a list names but the disk lacks is reported in ``missing`` rather than failing the import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from dmnreid.data_prep.image_folders import (
    check_camera,
    is_image_name,
    locate_dataset_dir,
)
from dmnreid.data_prep.records import DatasetError, ReidDataset, Sample

NUM_CAMERAS = 15
LIST_FILES = {
    "train": "list_train.txt",
    "val": "list_val.txt",
    "query": "list_query.txt",
    "gallery": "list_gallery.txt",
}
# Image folder of each list, per version: V1 ships train/ and test/, V2 the masked copies.
IMAGE_DIRS = {
    "V1": {"train": "train", "val": "train", "query": "test", "gallery": "test"},
    "V2": {"train": "mask_train_v2", "val": "mask_train_v2", "query": "mask_test_v2",
           "gallery": "mask_test_v2"},
}
# Searched in this order: the root itself, then the folder names torchreid users already have.
LAYOUTS = (".", "MSMT17_V1", "MSMT17_V2", "msmt17/MSMT17_V1", "msmt17/MSMT17_V2", "msmt17",
           "MSMT17")
MARKERS = (*LIST_FILES.values(), "train", "test", "mask_train_v2", "mask_test_v2")
LINE_HINT = "'PPPP/PPPP_NNN_CC_<date><time>_NNNN_N[_ex].jpg label' (CC = camera 01-15)"


class ListEntry(NamedTuple):
    """One list line: image path relative to the split's image folder, its pid and camera."""

    relpath: str
    pid: int
    camid: int


def parse_list_line(line: str, where: str) -> ListEntry:
    """A list line as ``ListEntry``; ``where`` (file:line) names the culprit on error."""
    parts = line.split()
    bad = DatasetError(f"{where}: malformed list line {line.strip()!r}; expected {LINE_HINT}")
    if len(parts) != 2 or not parts[1].isdigit() or not is_image_name(parts[0]):
        raise bad
    relpath, label = parts
    fields = relpath.rsplit("/", 1)[-1].split("_")
    if len(fields) < 3 or not fields[2].isdigit():
        raise bad
    camid = int(fields[2])
    check_camera(camid, NUM_CAMERAS, where)
    return ListEntry(relpath=relpath, pid=int(label), camid=camid)


def read_list(path: Path) -> list[ListEntry]:
    """All entries of an MSMT17 list file, in file order (blank lines skipped)."""
    if not path.is_file():
        raise DatasetError(
            f"{path}: MSMT17 list file is missing; expected the official list with lines "
            f"{LINE_HINT}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read the list file ({err})") from err
    return [
        parse_list_line(line, f"{path}:{number}")
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def present_images(image_dir: Path) -> set[str]:
    """``PPPP/name`` of every image under ``image_dir``, from directory listings only."""
    if not image_dir.is_dir():
        return set()
    found = set()
    with os.scandir(image_dir) as pid_dirs:
        for pid_dir in pid_dirs:
            if not pid_dir.is_dir():
                continue
            with os.scandir(pid_dir.path) as entries:
                found.update(f"{pid_dir.name}/{e.name}" for e in entries if is_image_name(e.name))
    return found


def version_of(folder: Path) -> str:
    """V2 when the masked image folders are there, V1 otherwise."""
    v2 = IMAGE_DIRS["V2"]
    return "V2" if any((folder / name).is_dir() for name in v2.values()) else "V1"


def build_split(
    entries: list[ListEntry], image_dir: Path, present: set[str]
) -> tuple[list[Sample], list[str]]:
    """Samples of the present images and the paths of the absent ones.

    Every entry is kept: MSMT17 has no junk or distractor labels (0 is a real identity).
    """
    samples, missing = [], []
    for entry in entries:
        path = str(image_dir / entry.relpath)
        if entry.relpath in present:
            samples.append(Sample(frames=(path,), pid=entry.pid, camid=entry.camid))
        else:
            missing.append(path)
    return samples, missing


def read_msmt17(root: Path | str, include_val: bool = False) -> ReidDataset:
    """MSMT17 V1 or V2. Train is ``list_train`` only unless ``include_val`` (the usual setting).

    Train and val share one id space, so including val just adds images of the same ids.
    """
    folder = locate_dataset_dir(root, LAYOUTS, MARKERS, "MSMT17")
    dirs = IMAGE_DIRS[version_of(folder)]
    lists = {"train": ["train", "val"] if include_val else ["train"],
             "query": ["query"], "gallery": ["gallery"]}
    entries = {key: read_list(folder / LIST_FILES[key]) for keys in lists.values() for key in keys}
    listed = {name: present_images(folder / name) for name in set(dirs.values())}
    splits: dict[str, list[Sample]] = {}
    missing: dict[str, list[str]] = {}
    for split, keys in lists.items():
        splits[split], missing[split] = [], []
        for key in keys:
            image_dir = folder / dirs[key]
            samples, absent = build_split(entries[key], image_dir, listed[dirs[key]])
            splits[split] += samples
            missing[split] += absent
    return ReidDataset(name="msmt17", root=folder, video=False, missing=missing, **splits)
