"""Market-1501 style reader, shared by Market-1501, DukeMTMC-reID and the synthetic dataset.

Also home of the small layout helpers (finding the dataset folder under a user's root, listing
images fast) that the MSMT17 and MARS readers reuse, so every reader accepts roots alike.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from dmnreid.data_prep.records import SPLITS, DatasetError, ReidDataset, Sample

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
NAME_PATTERN = re.compile(r"^(-?\d+)_c(\d+)")
NAME_HINT = "PPPP_cC... (e.g. 0002_c1s1_069056_02.jpg, -1 = junk, 0000 = distractor)"
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
JUNK_PID = -1
DISTRACTOR_PID = 0

# Searched in this order: the root itself, then the folder names torchreid users already have.
MARKET_LAYOUTS = (
    ".",
    "Market-1501-v15.09.15",
    "market1501/Market-1501-v15.09.15",
    "market1501",
    "Market-1501",
)
DUKE_LAYOUTS = (
    ".",
    "DukeMTMC-reID",
    "dukemtmcreid/DukeMTMC-reID",
    "dukemtmc-reid/DukeMTMC-reID",
    "dukemtmcreid",
    "dukemtmc-reid",
)
MARKET_CAMERAS = 6
DUKE_CAMERAS = 8
SYNTHETIC_MARKER = "synthetic.json"


def resolve_root(root: Path | str) -> Path:
    """The user's root as an absolute folder, so frame paths stay valid from any directory."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: dataset root does not exist")
    if not path.is_dir():
        raise DatasetError(f"{path}: dataset root is not a folder")
    return path.resolve()


def locate_dataset_dir(
    root: Path | str, layouts: Sequence[str], markers: Sequence[str], what: str
) -> Path:
    """First folder of ``layouts`` (relative to ``root``, in order) that holds any marker.

    Users keep datasets either as shipped or under torchreid's parent folders; trying the
    candidates in a fixed, documented order makes the choice predictable.
    """
    base = resolve_root(root)
    for layout in layouts:
        folder = base / layout if layout != "." else base
        if folder.is_dir() and any((folder / marker).exists() for marker in markers):
            return folder
    tried = ", ".join(layouts)
    raise DatasetError(
        f"{base}: no {what} folder found; expected one of {list(markers)} in the root itself "
        f"or in one of its sub-folders [{tried}]"
    )


def is_image_name(name: str) -> bool:
    """Image files only, so stray files (Thumbs.db, .DS_Store, readmes) are ignored."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def list_images(folder: Path) -> list[str]:
    """Sorted image file names of ``folder`` from one directory listing (no stat per file)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if is_image_name(e.name) and e.is_file())


def parse_image_name(path: Path, num_cameras: int | None) -> tuple[int, int]:
    """(pid, camid) of a Market/Duke style file name, validated against the camera count."""
    match = NAME_PATTERN.match(path.name)
    if match is None:
        raise DatasetError(f"{path}: file name does not match the pattern {NAME_HINT}")
    pid, camid = int(match.group(1)), int(match.group(2))
    if pid < JUNK_PID:
        raise DatasetError(f"{path}: person id {pid} is invalid; expected -1 (junk) or >= 0")
    check_camera(camid, num_cameras, str(path))
    return pid, camid


def check_camera(camid: int, num_cameras: int | None, where: str) -> None:
    """Camera ids are 1-based; a larger id than the dataset has means a wrong dataset choice."""
    if camid < 1 or (num_cameras is not None and camid > num_cameras):
        expected = ">= 1" if num_cameras is None else f"1..{num_cameras}"
        raise DatasetError(f"{where}: camera {camid} is out of range; expected {expected}")


def keeps_pid(split: str, pid: int) -> bool:
    """Junk is never used; distractors only make retrieval harder, so they live in the gallery."""
    if pid == JUNK_PID:
        return False
    return pid != DISTRACTOR_PID or split == "gallery"


def read_split_folder(folder: Path, split: str, num_cameras: int | None) -> list[Sample]:
    """One sample per image of ``folder``, in file name order."""
    samples = []
    for name in list_images(folder):
        path = folder / name
        pid, camid = parse_image_name(path, num_cameras)
        if keeps_pid(split, pid):
            samples.append(Sample(frames=(str(path),), pid=pid, camid=camid))
    return samples


def read_image_folders(
    root: Path | str, name: str, layouts: Sequence[str], num_cameras: int | None
) -> ReidDataset:
    """Read the three ``bounding_box_train`` / ``query`` / ``bounding_box_test`` folders.

    A missing split folder yields an empty split with the folder listed in ``missing``, so a
    partial copy still imports; no split folder at all means the layout is wrong.
    """
    folder = locate_dataset_dir(root, layouts, tuple(SPLIT_FOLDERS.values()), name)
    splits: dict[str, list[Sample]] = {}
    missing: dict[str, list[str]] = {}
    for split in SPLITS:
        split_dir = folder / SPLIT_FOLDERS[split]
        present = split_dir.is_dir()
        splits[split] = read_split_folder(split_dir, split, num_cameras) if present else []
        missing[split] = [] if present else [str(split_dir)]
    return ReidDataset(name=name, root=folder, video=False, missing=missing, **splits)


def read_market1501(root: Path | str) -> ReidDataset:
    """Market-1501 (6 cameras)."""
    return read_image_folders(root, "market1501", MARKET_LAYOUTS, MARKET_CAMERAS)


def read_dukemtmc(root: Path | str) -> ReidDataset:
    """DukeMTMC-reID (8 cameras)."""
    return read_image_folders(root, "dukemtmc", DUKE_LAYOUTS, DUKE_CAMERAS)


def synthetic_camera_count(folder: Path) -> int | None:
    """Camera count recorded by the synthetic generator, or None when it records none.

    Looks for an integer ``cameras`` / ``num_cameras`` at the top level of ``synthetic.json``
    or under its ``config`` object.
    """
    marker = folder / SYNTHETIC_MARKER
    if not marker.is_file():
        return None
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{marker}: not readable JSON ({err})") from err
    if not isinstance(meta, dict):
        raise DatasetError(f"{marker}: expected a JSON object")
    config = meta.get("config")
    scopes = [meta, config] if isinstance(config, dict) else [meta]
    for scope in scopes:
        for key in ("cameras", "num_cameras"):
            value = scope.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                if value < 1:
                    raise DatasetError(f"{marker}: {key} = {value}; expected at least 1")
                return value
    return None


def read_synthetic(root: Path | str) -> ReidDataset:
    """The generator's Market-style output; any camera count >= 1 (from synthetic.json)."""
    folder = resolve_root(root)
    return read_image_folders(folder, "synthetic", (".",), synthetic_camera_count(folder))
