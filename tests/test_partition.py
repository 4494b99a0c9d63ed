"""Tracklet sampling and per-camera partitioning, on generated data and on the real samples."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from dmnreid.data_prep import partition as partition_module
from dmnreid.data_prep.datasets import read_dataset
from dmnreid.data_prep.partition import load_node, read_partition, write_partition
from dmnreid.data_prep.records import DatasetError, ReidDataset, Sample
from dmnreid.data_prep.tracklets import sample_tracklets

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "real-reid-samples"
needs_samples = pytest.mark.skipif(not SHARED.is_dir(),
                                   reason=f"real dataset samples absent ({SHARED})")


def image_samples() -> list[Sample]:
    return [Sample((f"/d/{pid}_{cam}_{k}.jpg",), pid, cam)
            for pid in (1, 2, 3) for cam in (1, 2) for k in range(2)]


def test_image_tracklets_group_identity_and_camera():
    ds = ReidDataset("x", Path("/d"), False, image_samples(), [], [])
    cams = sample_tracklets(ds, seed=0)
    assert sorted(cams) == [1, 2]
    for camid, tracklets in cams.items():
        assert sorted(t.label for t in tracklets) == [0, 1, 2]
        assert sorted(t.pid for t in tracklets) == [1, 2, 3]
        for t in tracklets:
            assert t.camid == camid and len(t.frames) == 2
            assert all(f"/{t.pid}_{camid}_" in f for f in t.frames)


def test_local_labels_are_shuffled_per_seed():
    samples = [Sample((f"/d/{pid}.jpg",), pid, 1) for pid in range(1, 41)]
    ds = ReidDataset("x", Path("/d"), False, samples, [], [])
    order = [t.pid for t in sample_tracklets(ds, seed=0)[1]]
    assert order == [t.pid for t in sample_tracklets(ds, seed=0)[1]]
    assert order != sorted(order)  # labels carry no trace of the pid order
    assert order != [t.pid for t in sample_tracklets(ds, seed=1)[1]]


def test_video_keeps_one_random_tracklet_per_identity_and_camera():
    samples = [Sample(tuple(f"/m/{pid}C{cam}T{t}F{f}.jpg" for f in range(3)), pid, cam, t)
               for pid in (1, 2) for cam in (1, 2) for t in range(1, 6)]
    ds = ReidDataset("mars", Path("/m"), True, samples, [], [])
    chosen = {seed: {(t.camid, t.pid): t.frames for ts in sample_tracklets(ds, seed).values()
                     for t in ts} for seed in range(6)}
    for picks in chosen.values():
        assert len(picks) == 4  # one per (camera, identity)
    picked_tracks = {frames[0].split("T")[1][0] for picks in chosen.values()
                     for frames in picks.values()}
    assert len(picked_tracks) > 1  # the choice is random, not always the first
    assert chosen[2] == {(t.camid, t.pid): t.frames
                         for ts in sample_tracklets(ds, 2).values() for t in ts}


def test_partition_layout_and_roundtrip(synthetic_root: Path, tmp_path: Path):
    ds = read_dataset("synthetic", synthetic_root)
    meta = write_partition(ds, tmp_path / "parts", target_camera=2, progress=False)
    assert [n["node"] for n in meta["nodes"]] == ["camera-01", "camera-02", "camera-03"]
    truth = pd.read_csv(tmp_path / "parts" / "evaluator" / "train_identities.csv")
    target = load_node(tmp_path / "parts" / "camera-02")
    for info in meta["nodes"]:
        node = load_node(tmp_path / "parts" / info["node"])
        assert node.camera == info["camera"] and node.target_camera == 2
        assert node.labels == list(range(info["tracklets"]))
        assert node.num_images == info["images"]
        # file names carry no ground truth: every frame is renamed t<label>_<k>
        for label, frames in zip(node.labels, node.frames, strict=True):
            assert all(f.name.startswith(f"t{label:05d}_") for f in frames)
        assert len(node.target_domain) == target.num_images
        manifest = pd.read_csv(node.root / "tracklets.csv")
        assert list(manifest.columns) == ["tracklet", "label", "frame"]
        assert "pid" not in json.loads((node.root / "node.json").read_text())
        cam_truth = truth[truth.camera == info["camera"]]
        assert sorted(cam_truth.label) == node.labels
    query = pd.read_csv(tmp_path / "parts" / "evaluator" / "query.csv")
    assert len(query) == len(ds.query)
    assert set(truth.pid) == {s.pid for s in ds.train}


def test_partition_is_reused_and_refuses_to_clobber(synthetic_root: Path, tmp_path: Path):
    ds = read_dataset("synthetic", synthetic_root)
    out = tmp_path / "parts"
    first = write_partition(ds, out, progress=False)
    marker = out / "camera-01" / "node.json"
    stamp = marker.stat().st_mtime_ns
    assert write_partition(ds, out, progress=False) == first
    assert marker.stat().st_mtime_ns == stamp  # reused, not rewritten
    with pytest.raises(DatasetError, match="--force"):
        write_partition(ds, out, target_camera=3, progress=False)
    assert write_partition(ds, out, target_camera=3, force=True, progress=False)[
        "target_camera"] == 3


def test_interrupted_partition_leaves_nothing(synthetic_root: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch):
    ds = read_dataset("synthetic", synthetic_root)
    calls = {"n": 0}
    real = partition_module.write_node

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(partition_module, "write_node", failing)
    with pytest.raises(KeyboardInterrupt):
        write_partition(ds, tmp_path / "parts", progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DatasetError, match="not a complete partition"):
        read_partition(tmp_path / "parts")


def test_corrupt_images_are_named_or_skipped(synthetic_root: Path, tmp_path: Path):
    ds = read_dataset("synthetic", synthetic_root)
    bad = Path(ds.train[0].frames[0])
    original = bad.read_bytes()
    try:
        bad.write_bytes(b"not a jpeg")
        with pytest.raises(DatasetError, match=bad.name):
            write_partition(ds, tmp_path / "a", progress=False)
        assert not (tmp_path / "a").exists()
        meta = write_partition(ds, tmp_path / "b", on_corrupt="skip", progress=False)
        assert meta["skipped_corrupt"] == [str(bad)]
        assert sum(n["images"] for n in meta["nodes"]) == sum(
            len(s.frames) for s in ds.train) - 1
    finally:
        bad.write_bytes(original)


def test_bad_partition_requests(synthetic_root: Path, tmp_path: Path):
    ds = read_dataset("synthetic", synthetic_root)
    with pytest.raises(DatasetError, match="--target-camera 9"):
        write_partition(ds, tmp_path / "x", target_camera=9, progress=False)
    no_cam3 = ReidDataset(ds.name, ds.root, False, [s for s in ds.train if s.camid != 3],
                          ds.query, ds.gallery)
    with pytest.raises(DatasetError, match=r"camera\(s\) \[3\]"):
        write_partition(no_cam3, tmp_path / "y", progress=False)
    with pytest.raises(DatasetError, match="not a node folder"):
        load_node(tmp_path)


def test_missing_files_need_consent(tmp_path: Path):
    (tmp_path / "data").mkdir()
    img = tmp_path / "data" / "a.jpg"
    Image.new("RGB", (8, 16)).save(img)
    train = [Sample((str(img),), 1, 1), Sample((str(img),), 2, 2)]
    ds = ReidDataset("x", tmp_path / "data", False, train, [Sample((str(img),), 3, 1)],
                     [Sample((str(img),), 3, 2)], {"train": [str(img.with_name("gone.jpg"))]})
    with pytest.raises(DatasetError, match="--allow-missing"):
        write_partition(ds, tmp_path / "p", progress=False)
    meta = write_partition(ds, tmp_path / "p", allow_missing=True, progress=False)
    assert meta["missing"] == {"train": 1}


@needs_samples
def test_partition_real_market_sample(tmp_path: Path):
    ds = read_dataset("market1501", SHARED / "market1501")
    meta = write_partition(ds, tmp_path / "m", progress=False)
    groups = {(s.camid, s.pid) for s in ds.train}
    assert sum(n["tracklets"] for n in meta["nodes"]) == len(groups)
    assert sum(n["images"] for n in meta["nodes"]) == 32
    truth = pd.read_csv(tmp_path / "m" / "evaluator" / "train_identities.csv")
    assert set(zip(truth.camera, truth.pid, strict=True)) == groups


@needs_samples
def test_partition_real_mars_sample_needs_allow_missing(tmp_path: Path):
    ds = read_dataset("mars", SHARED / "mars")
    with pytest.raises(DatasetError, match="absent"):
        write_partition(ds, tmp_path / "m", progress=False)
    meta = write_partition(ds, tmp_path / "m", allow_missing=True, progress=False)
    by_camera = {n["camera"]: n for n in meta["nodes"]}
    # pid 13 has one tracklet in camera 5 (24 frames) and one in camera 6 (30 frames)
    truth = pd.read_csv(tmp_path / "m" / "evaluator" / "train_identities.csv")
    assert set(truth[truth.pid == 13].camera) == {5, 6}
    node5 = load_node(tmp_path / "m" / by_camera[5]["node"])
    label = int(truth[(truth.pid == 13) & (truth.camera == 5)].label.iloc[0])
    assert len(node5.frames[label]) == 24
