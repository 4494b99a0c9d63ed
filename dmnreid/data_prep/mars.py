"""MARS video re-ID reader: one sample per tracklet, from the official ``info/*.mat`` tables.

The tables index a frame name list (``info/{train,test}_name.txt``). Copies without those
lists are common (the tables come from a separate repository), so the names are then rebuilt
from the MARS naming rule, ``PPPPCcTttttFfff.jpg`` where T is the identity's k-th tracklet in
table order and F the frame's 1-based position in it, and checked against the files on disk.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.io

from dmnreid.data_prep.image_folders import (
    check_camera,
    is_image_name,
    keeps_pid,
    locate_dataset_dir,
)
from dmnreid.data_prep.records import DatasetError, ReidDataset, Sample

NUM_CAMERAS = 6
# Searched in this order: the root itself, then the folder names torchreid users already have.
LAYOUTS = (".", "mars", "MARS")
MARKERS = ("info", "bbox_train", "bbox_test")
TABLES = {"train": "tracks_train_info.mat", "test": "tracks_test_info.mat"}
QUERY_TABLE = "query_IDX.mat"
NAME_LISTS = {"train": "train_name.txt", "test": "test_name.txt"}
FRAME_PATTERN = re.compile(r"^(\d+|00-1)C(\d+)T(\d+)F(\d+)\.jpg$")
JUNK_FOLDER = "00-1"
FRAME_HINT = "PPPPCcTttttFfff.jpg (e.g. 0013C5T0001F001.jpg)"


@dataclass(frozen=True)
class TrackRow:
    """One row of a tracks table; ``track`` is the identity's k-th row, as in ``Tkkkk``."""

    index: int
    start: int
    end: int
    pid: int
    camid: int
    track: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


Named = tuple[TrackRow, list[str]]


def load_mat_array(path: Path) -> np.ndarray:
    """The one variable of a MARS .mat file, as an int64 array."""
    if not path.is_file():
        raise DatasetError(f"{path}: MARS metadata file is missing; expected the official "
                           f"info/ folder (tracks_train_info.mat, tracks_test_info.mat, "
                           f"query_IDX.mat)")
    try:
        content = scipy.io.loadmat(str(path))
    except (OSError, ValueError, TypeError, NotImplementedError) as err:
        raise DatasetError(f"{path}: not a readable MATLAB file ({err})") from err
    arrays = [v for k, v in content.items() if not k.startswith("__")]
    if len(arrays) != 1 or not isinstance(arrays[0], np.ndarray):
        raise DatasetError(f"{path}: expected exactly one array variable")
    return arrays[0].astype(np.int64)


def read_tracks(path: Path) -> list[TrackRow]:
    """Rows of a tracks table, each given its per-identity tracklet number."""
    table = load_mat_array(path)
    if table.ndim != 2 or table.shape[1] != 4:
        raise DatasetError(f"{path}: expected an N x 4 table (start, end, pid, camera), "
                           f"got shape {table.shape}")
    counts: dict[int, int] = defaultdict(int)
    rows = []
    for index, (start, end, pid, camid) in enumerate(table.tolist()):
        where = f"{path} row {index} (0-based)"
        if start < 1 or end < start:
            raise DatasetError(f"{where}: invalid frame range {start}..{end}")
        check_camera(camid, NUM_CAMERAS, where)
        counts[pid] += 1
        rows.append(TrackRow(index, start, end, pid, camid, counts[pid]))
    return rows


def read_query_rows(path: Path, num_test_rows: int) -> set[int]:
    """0-based test-table rows that are queries (the file holds 1-based rows)."""
    rows = {int(i) - 1 for i in load_mat_array(path).ravel()}
    if rows and (min(rows) < 0 or max(rows) >= num_test_rows):
        raise DatasetError(f"{path}: query rows must lie in 1..{num_test_rows}")
    return rows


def read_name_list(path: Path) -> list[str] | None:
    """The official frame name list, or None when this copy does not ship it."""
    if not path.is_file():
        return None
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read the frame name list ({err})") from err


def list_frames(split_dir: Path) -> dict[str, set[str]]:
    """Image names per identity folder of ``split_dir``, from directory listings only."""
    if not split_dir.is_dir():
        return {}
    found = {}
    with os.scandir(split_dir) as pid_dirs:
        for pid_dir in pid_dirs:
            if pid_dir.is_dir():
                with os.scandir(pid_dir.path) as entries:
                    found[pid_dir.name] = {e.name for e in entries if is_image_name(e.name)}
    return found


def parse_frame(name: str, where: Path) -> tuple[int, int, int, int]:
    """(pid, camera, track, frame) of a MARS frame name; ``where`` (its folder) names errors.

    Takes the bare name, not a path: it runs on every one of MARS's million frames.
    """
    match = FRAME_PATTERN.match(name)
    if match is None:
        raise DatasetError(f"{where / name}: file name does not match the MARS pattern "
                           f"{FRAME_HINT}")
    pid = -1 if match.group(1) == JUNK_FOLDER else int(match.group(1))
    camid, track, frame = (int(g) for g in match.groups()[1:])
    return pid, camid, track, frame


def pid_folder(pid: int) -> str:
    """Identity folder (and name prefix) of a pid: ``0013``, distractors ``0000``, junk ``00-1``."""
    return JUNK_FOLDER if pid == -1 else f"{pid:04d}"


def names_from_list(rows: list[TrackRow], names: list[str], list_path: Path) -> list[Named]:
    """Each row with its frame names, sliced from the official list and checked against it.

    The row's tracklet number is taken from the names, the official mapping.
    """
    result = []
    for row in rows:
        if row.end > len(names):
            raise DatasetError(f"{list_path}: row {row.index} (pid {row.pid}) needs frame "
                               f"{row.end} but the list has {len(names)} names")
        chunk = names[row.start - 1:row.end]
        keys = {parse_frame(name, list_path)[:3] for name in chunk}
        if len(keys) != 1 or next(iter(keys))[:2] != (row.pid, row.camid):
            raise DatasetError(f"{list_path}: names {chunk[0]}..{chunk[-1]} are row "
                               f"{row.index}, which is one tracklet of pid {row.pid} "
                               f"camera {row.camid}")
        result.append((replace(row, track=next(iter(keys))[2]), chunk))
    return result


def name_folder(name: str) -> str:
    """Identity folder of a frame name: its first four characters, as MARS stores it."""
    return name[:4]


def rebuilt_names(row: TrackRow) -> list[str]:
    """Frame names of a row by the MARS naming rule (used when the name list is absent)."""
    prefix = f"{pid_folder(row.pid)}C{row.camid}T{row.track:04d}F"
    return [f"{prefix}{frame:03d}.jpg" for frame in range(1, row.length + 1)]


def frames_on_disk(split_dir: Path, disk: dict[str, set[str]]) -> dict[tuple[int, int], list]:
    """On-disk frames grouped by (pid, track), as (camera, frame number, PPPP/name) tuples."""
    groups: dict[tuple[int, int], list] = defaultdict(list)
    for pid_dir, names in disk.items():
        for name in names:
            pid, camid, track, frame = parse_frame(name, split_dir / pid_dir)
            groups[(pid, track)].append((camid, frame, f"{pid_dir}/{name}"))
    return groups


def verify_disk(rows: list[TrackRow], split_dir: Path, disk: dict[str, set[str]],
                table: Path) -> None:
    """Check the rebuilt row-to-tracklet mapping against the files, so a wrong guess fails loudly.

    Every tracklet on disk must have its row, the row's camera and no more frames than the row.
    """
    by_key = {(row.pid, row.track): row for row in rows}
    for (pid, track), frames in frames_on_disk(split_dir, disk).items():
        if pid == -1:
            continue
        row = by_key.get((pid, track))
        if row is None:
            raise DatasetError(f"{split_dir}: pid {pid} tracklet T{track:04d} is on disk but "
                               f"{table} has no matching row for it")
        where = f"{table} row {row.index} (pid {pid}, T{track:04d})"
        wrong = [name for camid, _, name in frames if camid != row.camid]
        if wrong:
            raise DatasetError(f"{where}: camera {row.camid}, but {split_dir / wrong[0]} "
                               f"names another camera")
        highest = max(frame for _, frame, _ in frames)
        if len(frames) > row.length or highest > row.length:
            raise DatasetError(f"{where}: {row.length} frames, but {split_dir} holds "
                               f"{len(frames)} frames numbered up to {highest}")


def row_names(rows: list[TrackRow], info: Path, part: str, split_dir: Path,
              disk: dict[str, set[str]]) -> list[Named]:
    """Every row with its frame names: official list when present, else rebuilt and verified."""
    list_path = info / NAME_LISTS[part]
    names = read_name_list(list_path)
    if names is not None:
        return names_from_list(rows, names, list_path)
    verify_disk(rows, split_dir, disk, info / TABLES[part])
    return [(row, rebuilt_names(row)) for row in rows]


def to_sample(row: TrackRow, names: list[str], split_dir: Path,
              disk: dict[str, set[str]]) -> tuple[Sample | None, list[str]]:
    """The row's tracklet with its present frames (None when none), and its absent paths."""
    folder = name_folder(names[0]) if names else ""
    on_disk = disk.get(folder, set())
    prefix = os.path.join(split_dir, folder, "")  # plain strings: MARS has a million frames
    present = [prefix + name for name in names if name in on_disk]
    absent = [prefix + name for name in names if name not in on_disk]
    sample = Sample(tuple(present), row.pid, row.camid, row.track) if present else None
    return sample, absent


def collect(named: list[Named], split: str, split_dir: Path,
            disk: dict[str, set[str]]) -> tuple[list[Sample], list[str]]:
    """Samples and absent frame paths of the rows kept in ``split``."""
    samples, missing = [], []
    for row, names in named:
        if not keeps_pid(split, row.pid):
            continue
        sample, absent = to_sample(row, names, split_dir, disk)
        missing += absent
        if sample is not None:
            samples.append(sample)
    return samples, missing


def read_mars(root: Path | str) -> ReidDataset:
    """MARS: train tracklets from the train table; test rows split into query and gallery."""
    folder = locate_dataset_dir(root, LAYOUTS, MARKERS, "MARS")
    info = folder / "info"
    rows = {part: read_tracks(info / table) for part, table in TABLES.items()}
    query_rows = read_query_rows(info / QUERY_TABLE, len(rows["test"]))
    splits: dict[str, list[Sample]] = {}
    missing: dict[str, list[str]] = {}
    for part in TABLES:
        split_dir = folder / f"bbox_{part}"
        disk = list_frames(split_dir)
        named = row_names(rows[part], info, part, split_dir, disk)
        if part == "train":
            splits[part], missing[part] = collect(named, part, split_dir, disk)
            continue
        for split, is_query in (("query", True), ("gallery", False)):
            chosen = [(row, names) for row, names in named if (row.index in query_rows) == is_query]
            splits[split], missing[split] = collect(chosen, split, split_dir, disk)
    return ReidDataset(name="mars", root=folder, video=True, missing=missing, **splits)
