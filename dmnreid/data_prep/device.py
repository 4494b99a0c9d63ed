"""One device's node folder, built on the device from its own camera's images alone.

The paper's setting: a camera's tracker yields tracklets (one person, consecutive frames), and
their local labels are all the device knows; every device also receives the target camera's
images at set-up, for style transfer. Input layout::

    TRACKLETS/                     this camera's tracklets, one folder each (any names)
        0001/  frame images (.jpg, .jpeg, .png, .bmp), any names, in name order
        0002/  ...
    TARGET/                        the target camera's images (any layout below it)

The output is the node folder a partition would hold for that camera (``node.json``,
``tracklets.csv``, ``images/``, ``target_domain/``), without ``test/``: a camera of your own
has no labelled query/gallery, so it takes no part in federated evaluation. Local labels are
the tracklet folders in a seeded random order, so they carry no trace of the folder names.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from dmnreid.data_prep.folder_swap import hidden_sibling, remove_leftovers, swap_in
from dmnreid.data_prep.partition import check_images, write_node
from dmnreid.data_prep.records import DatasetError
from dmnreid.data_prep.tracklets import Tracklet

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
NODE_ENTRIES = {"node.json", "tracklets.csv", "images", "target_domain", "test", "cache",
                "style", "runs", "pretrained"}


def _images(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_tracklets(root: Path) -> list[tuple[str, list[str]]]:
    """(folder name, frames) of every tracklet folder under ``root`` that holds images."""
    if not root.is_dir():
        raise DatasetError(f"--tracklets {root}: no such folder")
    found = [(d.name, _images(d)) for d in sorted(root.iterdir()) if d.is_dir()]
    tracklets = [(name, frames) for name, frames in found if frames]
    if len(tracklets) < 2:
        loose = len(_images(root)) - sum(len(f) for _, f in tracklets)
        hint = f"; {loose} image(s) lie outside tracklet folders" if loose else ""
        raise DatasetError(
            f"--tracklets {root}: {len(tracklets)} tracklet folder(s) with images, at least 2 "
            f"needed (one folder per tracklet, its frames inside){hint}")
    return tracklets


def _replaceable(out: Path, force: bool) -> None:
    """Refuse an ``out`` that is not empty, unless it is a node folder and ``force`` is set."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out} is a file, not a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in NODE_ENTRIES)
    if foreign or not (out / "node.json").is_file():
        raise DatasetError(f"--out {out} holds other files than a node folder "
                           f"({foreign[:5] or 'no node.json'}); it is never replaced")
    if not force:
        raise DatasetError(f"--out {out} is a node folder already; pass --force to replace it "
                           "(its style transfer, cache and run state go with it)")


def write_device_node(tracklets_dir: Path, out: Path, camera: int, target_camera: int,
                      target_dir: Path | None = None, seed: int = 0, force: bool = False,
                      on_corrupt: str = "error", progress: bool = True) -> dict:
    """Write this camera's node folder at ``out`` (atomically); returns its ``node.json``."""
    if camera < 1 or target_camera < 1:
        raise DatasetError("--camera and --target-camera are camera numbers, from 1")
    if camera != target_camera and target_dir is None:
        raise DatasetError("--target-images is needed: every camera but the target camera "
                           "learns the target camera's style from them")
    for path in (tracklets_dir, target_dir):
        if path is None:
            continue
        inputs, output = path.resolve(), out.resolve()
        if output in (inputs, *inputs.parents) or inputs in output.parents:
            raise DatasetError(f"--out {out} overlaps the input {path}: choose a folder "
                               "outside it")
    _replaceable(out, force)
    tracklets = read_tracklets(tracklets_dir)
    target = _images(target_dir) if target_dir is not None else []
    if target_dir is not None and not target:
        raise DatasetError(f"--target-images {target_dir}: no images (.jpg, .png, ...) in it")
    bad = check_images([f for _, frames in tracklets for f in frames] + target, on_corrupt,
                       progress)
    kept = [(name, [f for f in frames if f not in bad]) for name, frames in tracklets]
    kept = [(name, frames) for name, frames in kept if frames]
    order = np.random.default_rng(seed).permutation(len(kept))
    labelled = [Tracklet(camid=camera, label=label, frames=tuple(kept[i][1]), pid=-1)
                for label, i in enumerate(order)]
    place = out.resolve()
    remove_leftovers(place)
    tmp = hidden_sibling(place, "partial")
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        info = write_node(tmp, labelled, [Tracklet(target_camera, 0, tuple(
            f for f in target if f not in bad), -1)], target_camera)
        swap_in(tmp, place)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**info, "skipped_corrupt": sorted(bad)}
