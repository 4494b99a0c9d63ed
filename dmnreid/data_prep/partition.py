"""Per-camera node folders: what each edge device holds, plus the evaluator's query/gallery.

Layout written under ``out``::

    partition.json                 dataset, seed, target camera, node list (written last)
    camera-01/ camera-02/ ...      one folder per camera = per Flower node
        node.json                  camera id, counts, target camera
        tracklets.csv              tracklet, label, frame (path relative to the node folder)
        images/t00000_0000.jpg     the camera's training frames, renamed so that file names
                                   carry no ground truth (Market names start with the pid)
        target_domain/000000.jpg   the target camera's training frames (style-transfer input)
        test/query.csv, gallery.csv  the camera's own query/gallery images, for federated
                                   evaluation: item, pid, camid, frame (relative path)
        test/images/q000012_00.jpg the frames, named by item (numbered as in evaluator/)
    evaluator/                     stays with the server, never on a node
        query.csv, gallery.csv     item, pid, camid, frame (absolute path)
        train_identities.csv       ground truth of the training tracklets, for diagnostics only

Everything is written into a hidden sibling folder and renamed into place at the end, so an
interrupted run never leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from dmnreid.data_prep.records import DatasetError, ReidDataset, Sample
from dmnreid.data_prep.tracklets import Tracklet, sample_tracklets

FORMAT_VERSION = 2  # 2: node folders hold their camera's query/gallery (test/)
EVALUATOR_DIR = "evaluator"
TEST_DIR = "test"
TEST_SPLITS = ("query", "gallery")


def node_dir_name(camid: int) -> str:
    return f"camera-{camid:02d}"


@dataclass(frozen=True)
class NodeData:
    """A node's view of its own data: local labels and frames, no ground truth."""

    root: Path
    camera: int
    target_camera: int
    labels: list[int]
    frames: list[tuple[Path, ...]]
    target_domain: list[Path]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def num_images(self) -> int:
        return sum(len(f) for f in self.frames)


def _check_images(paths: list[str], on_corrupt: str, progress: bool) -> set[str]:
    """Decode every image once; return the unreadable ones (or raise, naming them)."""
    bad: dict[str, str] = {}
    for path in tqdm(paths, desc="checking images", unit="img", disable=not progress):
        try:
            with Image.open(path) as image:
                image.load()
        except (OSError, SyntaxError, ValueError) as err:
            bad[path] = f"{type(err).__name__}: {err}"
    if bad and on_corrupt == "error":
        listing = "\n".join(f"  {p}: {why}" for p, why in list(bad.items())[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise DatasetError(
            f"{len(bad)} unreadable image(s):\n{listing}{more}\n"
            "Remove or replace them, or pass --skip-corrupt to leave them out."
        )
    return set(bad)


def _link_or_copy(src: str, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _without(samples: list[Sample], bad: set[str]) -> list[Sample]:
    kept = []
    for s in samples:
        frames = tuple(f for f in s.frames if f not in bad)
        if frames:
            kept.append(Sample(frames, s.pid, s.camid, s.track))
    return kept


def _write_node(
    node_dir: Path, tracklets: list[Tracklet], target: list[Tracklet], target_camera: int
) -> dict:
    (node_dir / "images").mkdir(parents=True)
    rows = []
    for t in tracklets:
        for k, src in enumerate(t.frames):
            rel = Path("images") / f"t{t.label:05d}_{k:04d}{Path(src).suffix.lower()}"
            _link_or_copy(src, node_dir / rel)
            rows.append({"tracklet": t.label, "label": t.label, "frame": rel.as_posix()})
    pd.DataFrame(rows, columns=["tracklet", "label", "frame"]).to_csv(
        node_dir / "tracklets.csv", index=False
    )
    (node_dir / "target_domain").mkdir()
    target_frames = [f for t in target for f in t.frames]
    for k, src in enumerate(target_frames):
        _link_or_copy(src, node_dir / "target_domain" / f"{k:06d}{Path(src).suffix.lower()}")
    info = {
        "camera": tracklets[0].camid,
        "target_camera": target_camera,
        "tracklets": len(tracklets),
        "images": len(rows),
        "target_domain_images": len(target_frames),
    }
    (node_dir / "node.json").write_text(json.dumps(info, indent=2))
    return info


def _write_node_tests(node_dir: Path, tables: dict[str, pd.DataFrame]) -> None:
    """The camera's own query and gallery frames, item numbers as in the evaluator's tables."""
    (node_dir / TEST_DIR / "images").mkdir(parents=True)
    for split, table in tables.items():
        rows = []
        for n, (item, pid, camid, src) in enumerate(table.itertuples(index=False)):
            rel = Path("images") / f"{split[0]}{item:06d}_{n:05d}{Path(src).suffix.lower()}"
            _link_or_copy(src, node_dir / TEST_DIR / rel)
            rows.append({"item": item, "pid": pid, "camid": camid, "frame": rel.as_posix()})
        pd.DataFrame(rows, columns=["item", "pid", "camid", "frame"]).to_csv(
            node_dir / TEST_DIR / f"{split}.csv", index=False)


def read_test_tables(node_dir: Path | str) -> dict[str, pd.DataFrame]:
    """A node's own query and gallery tables (item, pid, camid, frame as an absolute path)."""
    folder = Path(node_dir) / TEST_DIR
    tables = {}
    for split in TEST_SPLITS:
        path = folder / f"{split}.csv"
        if not path.is_file():
            raise DatasetError(
                f"{node_dir}: no {TEST_DIR}/{split}.csv, so this node cannot embed its own "
                "test images (eval-mode = 'federated'); partitions written before format 2 "
                "lack it: write the partition again with --force")
        table = pd.read_csv(path)
        if list(table.columns) != ["item", "pid", "camid", "frame"]:
            raise DatasetError(f"{path}: expected columns item,pid,camid,frame")
        tables[split] = table.assign(frame=[str(folder / f) for f in table["frame"]])
    return tables


def _eval_table(samples: list[Sample]) -> pd.DataFrame:
    rows = [
        {"item": i, "pid": s.pid, "camid": s.camid, "frame": f}
        for i, s in enumerate(samples)
        for f in s.frames
    ]
    return pd.DataFrame(rows, columns=["item", "pid", "camid", "frame"])


def _settings(dataset: ReidDataset, target_camera: int, seed: int) -> dict:
    return {
        "format": FORMAT_VERSION,
        "dataset": dataset.name,
        "root": str(Path(dataset.root).resolve()),
        "video": dataset.video,
        "seed": seed,
        "target_camera": target_camera,
    }


def read_partition(out: Path) -> dict:
    """The ``partition.json`` of a complete partition; DatasetError if there is none."""
    meta = Path(out) / "partition.json"
    if not meta.is_file():
        raise DatasetError(
            f"{out}: not a complete partition (no partition.json); "
            "run `python -m dmnreid.data_prep partition` to create it"
        )
    return json.loads(meta.read_text())


def write_partition(
    dataset: ReidDataset,
    out: Path | str,
    target_camera: int = 1,
    seed: int = 0,
    *,
    allow_missing: bool = False,
    on_corrupt: str = "error",
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Write one node folder per camera plus the evaluator folder; return partition.json.

    An existing complete partition made with the same settings is reused as is.
    """
    out = Path(out)
    settings = _settings(dataset, target_camera, seed)
    if out.exists():
        if (out / "partition.json").is_file():
            existing = read_partition(out)
            if {k: existing.get(k) for k in settings} == settings:
                return existing
        if not force:
            raise DatasetError(
                f"{out} already exists and is not a partition made with these settings "
                f"(format {FORMAT_VERSION}); choose another --out or pass --force to replace it"
            )
    missing = {split: paths for split, paths in dataset.missing.items() if paths}
    if missing and not allow_missing:
        detail = "; ".join(f"{split}: {len(p)} (e.g. {p[0]})" for split, p in missing.items())
        raise DatasetError(
            f"{dataset.root}: files named by the {dataset.name} metadata are absent ({detail}). "
            "Complete the dataset, or pass --allow-missing to partition what is present."
        )
    all_frames = sorted({f for split in (dataset.train, dataset.query, dataset.gallery)
                         for s in split for f in s.frames})
    bad = _check_images(all_frames, on_corrupt, progress)
    train = _without(dataset.train, bad)
    query, gallery = _without(dataset.query, bad), _without(dataset.gallery, bad)
    cameras = sample_tracklets(
        ReidDataset(dataset.name, dataset.root, dataset.video, train, query, gallery), seed
    )
    test_cameras = {s.camid for s in query + gallery}
    empty = sorted(test_cameras - set(cameras))
    if empty:
        raise DatasetError(
            f"{dataset.root}: camera(s) {empty} appear in query/gallery but have no training "
            "images, so their nodes would have nothing to train on"
        )
    if target_camera not in cameras:
        raise DatasetError(
            f"--target-camera {target_camera} has no training images; "
            f"cameras with training data: {sorted(cameras)}"
        )

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        tests = {"query": _eval_table(query), "gallery": _eval_table(gallery)}
        nodes = []
        for camid in tqdm(sorted(cameras), desc="writing nodes", disable=not progress):
            info = _write_node(
                tmp / node_dir_name(camid), cameras[camid], cameras[target_camera], target_camera
            )
            _write_node_tests(tmp / node_dir_name(camid),
                              {k: t[t["camid"] == camid] for k, t in tests.items()})
            nodes.append({"node": node_dir_name(camid), **info})
        evaluator = tmp / EVALUATOR_DIR
        evaluator.mkdir()
        for split, table in tests.items():
            table.to_csv(evaluator / f"{split}.csv", index=False)
        pd.DataFrame(
            [{"node": node_dir_name(t.camid), "camera": t.camid, "label": t.label, "pid": t.pid}
             for camid in sorted(cameras) for t in cameras[camid]]
        ).to_csv(evaluator / "train_identities.csv", index=False)
        meta = {**settings, "nodes": nodes, "skipped_corrupt": sorted(bad),
                "missing": {k: len(v) for k, v in missing.items()}}
        (tmp / "partition.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def load_node(node_dir: Path | str) -> NodeData:
    """Read a node folder written by :func:`write_partition` (labels and frames only)."""
    node_dir = Path(node_dir)
    info_path, manifest = node_dir / "node.json", node_dir / "tracklets.csv"
    for path in (info_path, manifest):
        if not path.is_file():
            raise DatasetError(f"{node_dir}: not a node folder ({path.name} is missing)")
    info = json.loads(info_path.read_text())
    table = pd.read_csv(manifest)
    if list(table.columns) != ["tracklet", "label", "frame"]:
        raise DatasetError(f"{manifest}: expected columns tracklet,label,frame")
    frames: dict[int, list[Path]] = {}
    labels: dict[int, int] = {}
    for tracklet, label, frame in table.itertuples(index=False):
        frames.setdefault(int(tracklet), []).append(node_dir / frame)
        labels[int(tracklet)] = int(label)
    order = sorted(frames)
    if [labels[t] for t in order] != list(range(len(order))):
        raise DatasetError(f"{manifest}: local labels must be 0..N-1, one per tracklet")
    target = sorted((node_dir / "target_domain").glob("*"))
    return NodeData(
        root=node_dir,
        camera=int(info["camera"]),
        target_camera=int(info["target_camera"]),
        labels=[labels[t] for t in order],
        frames=[tuple(frames[t]) for t in order],
        target_domain=target,
    )
