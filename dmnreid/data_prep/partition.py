"""Per-camera node folders: what each edge device holds, plus the evaluator's query/gallery.

Layout written under ``out``::

    partition.json                 dataset, seed, target camera, node list, and the manifest's
                                   file count and sha256 (written last)
    manifest.csv                   path,bytes of every other file the partition wrote (relative
                                   posix path, size), so a reused partition is checked whole
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

Runs later add ``cache/``, ``style/`` and ``runs/`` inside node folders and ``cache/`` inside
``evaluator/``; the manifest check ignores them.

Everything is written into the hidden sibling ``.{name}.partial-{pid}`` and swapped into place
at the end (one atomic exchange on Linux), so an interrupted run never leaves a folder that looks
complete, and a replaced partition stays whole until the new one is in place. A partition is
reused only when its settings match and every file in its manifest is there with its size.
``force`` replaces only a folder that is recognisably a partition (partition.json and nothing but
partition entries at its top level), never the dataset or a folder around it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from dmnreid.data_prep.folder_swap import hidden_sibling, remove_leftovers, swap_in
from dmnreid.data_prep.manifest import MANIFEST, manifest_damage, write_manifest
from dmnreid.data_prep.records import DatasetError, ReidDataset, Sample
from dmnreid.data_prep.tracklets import Tracklet, sample_tracklets

FORMAT_VERSION = 3  # 2: node folders hold their camera's query/gallery (test/); 3: manifest
META = "partition.json"
EVALUATOR_DIR = "evaluator"
TEST_DIR = "test"
TEST_SPLITS = ("query", "gallery")
NODE_DIR = re.compile(r"camera-\d{2,}")
SHOWN = 5  # how many names an error lists before "and N more"


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


def check_images(paths: list[str], on_corrupt: str, progress: bool) -> set[str]:
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


def write_node(
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
    meta_path = Path(out) / META
    if not meta_path.is_file():
        raise DatasetError(
            f"{out}: not a complete partition (no {META}); "
            "run `python -m dmnreid.data_prep partition` to create it"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise DatasetError(
            f"{meta_path}: damaged, not JSON ({err}); expected the JSON object that "
            "`python -m dmnreid.data_prep partition` writes"
        ) from err
    if not isinstance(meta, dict) or not isinstance(meta.get("nodes"), list):
        raise DatasetError(
            f'{meta_path}: damaged; expected a JSON object with a "nodes" list, as '
            "`python -m dmnreid.data_prep partition` writes it"
        )
    return meta


def _few(names: list[str]) -> str:
    """The first few of a list for an error message, so huge lists stay readable."""
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def _check_out(dataset: ReidDataset, out: Path, out_name: str) -> None:
    """Refuse an ``out`` that overlaps the dataset (replacing it would delete the dataset) or
    is a file (it cannot become a folder)."""
    real, root = out.resolve(), Path(dataset.root).resolve()
    overlap = ("is" if real == root else "lies inside" if root in real.parents
               else "contains" if real in root.parents else None)
    if overlap:
        raise DatasetError(
            f"{out_name} {out} {overlap} the dataset folder {root}; choose a folder outside "
            f"the dataset for {out_name}"
        )
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out_name} {out} is a file, not a folder; choose another {out_name}")


def _not_ours(out: Path) -> str | None:
    """Why ``out`` is not recognisably a partition (None if it is): only such a folder may be
    replaced, so --force never deletes a user's files."""
    names = sorted(os.listdir(out))
    foreign = [n for n in names
               if n not in (META, MANIFEST, EVALUATOR_DIR) and not NODE_DIR.fullmatch(n)]
    if foreign:
        return f"it holds {_few(foreign)}, which a partition never has"
    if META not in names:
        return f"it has no {META}"
    return None


def _reusable(out: Path, settings: dict, force: bool, out_name: str,
              force_name: str) -> dict | None:
    """The existing partition at ``out`` if it is whole and made with ``settings``; None if it
    may be replaced; DatasetError when replacing it needs --force or would delete foreign
    files."""
    try:
        existing = read_partition(out)
    except DatasetError as err:
        why = str(err)
    else:
        if {k: existing.get(k) for k in settings} != settings:
            why = (f"{out} already exists and is not a partition made with these settings "
                   f"(format {FORMAT_VERSION})")
        else:
            damage = manifest_damage(out, existing.get("manifest"), META)
            if not damage:
                return existing
            why = (f"{out}: the partition is incomplete or damaged, {len(damage)} file(s) "
                   f"missing or changed: {_few(damage)}")
    not_ours = _not_ours(out)
    if not_ours:
        raise DatasetError(
            f"{out} is not a partition written by dmnreid ({not_ours}), so it is never "
            f"replaced, not even with {force_name}; choose another {out_name}, or empty it")
    if not force:
        raise DatasetError(f"{why}; choose another {out_name} or pass {force_name} to "
                           "replace it")
    return None


def _hidden_folder(place: Path, out: Path, out_name: str) -> Path:
    """The hidden sibling the partition is written into; DatasetError when ``out``'s parent
    cannot be created or written."""
    tmp = hidden_sibling(place, "partial")
    try:
        tmp.mkdir(parents=True)
    except OSError as err:
        raise DatasetError(
            f"{out_name} {out}: cannot create a folder there ({err.strerror}: {err.filename})"
        ) from err
    return tmp


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
    out_name: str = "--out",
    target_name: str = "--target-camera",
    force_name: str = "--force",
) -> dict:
    """Write one node folder per camera plus the evaluator folder; return partition.json.

    An existing partition made with the same settings is reused when every file of its
    manifest is there; ``force`` replaces one made with other settings, or damaged, but only
    a folder that is recognisably a partition. An empty folder is written into. Leftovers of
    killed runs next to ``out`` are removed (logged as warnings). ``out_name``,
    ``target_name`` and ``force_name`` are how error messages name the three settings (the
    CLI's flags by default).
    """
    out = Path(out)
    _check_out(dataset, out, out_name)
    place = out.resolve()  # renames act on the real folder, not on a link to it
    remove_leftovers(place)
    settings = _settings(dataset, target_camera, seed)
    if out.exists() and any(out.iterdir()):
        existing = _reusable(out, settings, force, out_name, force_name)
        if existing is not None:
            return existing
    missing = {split: paths for split, paths in dataset.missing.items() if paths}
    if missing and not allow_missing:
        detail = "; ".join(f"{split}: {len(p)} (e.g. {p[0]})" for split, p in missing.items())
        raise DatasetError(
            f"{dataset.root}: files named by the {dataset.name} metadata are absent ({detail}). "
            "Complete the dataset, or pass --allow-missing to partition what is present."
        )
    tmp = _hidden_folder(place, out, out_name)
    try:
        meta = _write_into(tmp, dataset, settings, on_corrupt, progress, target_name)
        meta["missing"] = {k: len(v) for k, v in missing.items()}
        meta["manifest"] = write_manifest(tmp)
        (tmp / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        swap_in(tmp, place)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _write_into(tmp: Path, dataset: ReidDataset, settings: dict, on_corrupt: str,
                progress: bool, target_name: str) -> dict:
    """Check the images, sample tracklets and write every folder into ``tmp``; returns the
    partition.json contents so far (settings, nodes, skipped images)."""
    target_camera = settings["target_camera"]
    all_frames = sorted({f for split in (dataset.train, dataset.query, dataset.gallery)
                         for s in split for f in s.frames})
    bad = check_images(all_frames, on_corrupt, progress)
    train = _without(dataset.train, bad)
    query, gallery = _without(dataset.query, bad), _without(dataset.gallery, bad)
    cameras = sample_tracklets(
        ReidDataset(dataset.name, dataset.root, dataset.video, train, query, gallery),
        settings["seed"],
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
            f"{target_name} {target_camera} has no training images; "
            f"cameras with training data: {sorted(cameras)}"
        )
    tests = {"query": _eval_table(query), "gallery": _eval_table(gallery)}
    nodes = []
    for camid in tqdm(sorted(cameras), desc="writing nodes", disable=not progress):
        info = write_node(
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
    return {**settings, "nodes": nodes, "skipped_corrupt": sorted(bad)}


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
