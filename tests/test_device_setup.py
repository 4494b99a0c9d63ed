"""A device builds its own node folder from its camera's tracklet folders alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dmnreid.config import RunConfig
from dmnreid.data_prep.cli import main as data_prep
from dmnreid.data_prep.datasets import read_dataset
from dmnreid.data_prep.device import write_device_node
from dmnreid.data_prep.partition import load_node
from dmnreid.data_prep.records import DatasetError
from dmnreid.node import walk_hop
from dmnreid.reid.model import build_model, walking_state


@pytest.fixture(scope="module")
def camera_folders(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Camera 2's training images as a tracker would leave them (a folder per tracklet,
    named by the tracker), and camera 1's images as the target style."""
    out = tmp_path_factory.mktemp("device-input")
    dataset = read_dataset("synthetic", synthetic_root)
    frames: dict[int, list[str]] = {}
    for sample in dataset.train:
        if sample.camid == 2:
            frames.setdefault(sample.pid, []).extend(sample.frames)
    for n, (_, paths) in enumerate(sorted(frames.items())):
        folder = out / "tracklets" / f"track-{n:03d}"
        folder.mkdir(parents=True)
        for k, path in enumerate(paths):
            shutil.copyfile(path, folder / f"{k:04d}.jpg")
    (out / "tracklets" / "empty").mkdir()
    (out / "tracklets" / "notes.txt").write_text("not an image")
    target = out / "target" / "day1"
    target.mkdir(parents=True)
    for k, sample in enumerate(s for s in dataset.train if s.camid == 1):
        shutil.copyfile(sample.frames[0], target / f"{k}.jpg")
    return {"root": out, "sizes": [len(p) for _, p in sorted(frames.items())]}


def test_the_device_folder_is_a_node_folder_the_walk_trains_on(camera_folders, tmp_path: Path):
    out = tmp_path / "node"
    assert data_prep(["device", "--tracklets", str(camera_folders["root"] / "tracklets"),
                      "--camera", "2", "--target-camera", "1", "--target-images",
                      str(camera_folders["root"] / "target"), "--out", str(out),
                      "--quiet"]) == 0
    node = load_node(out)
    assert (node.camera, node.target_camera) == (2, 1)
    assert node.labels == list(range(len(camera_folders["sizes"])))
    assert sorted(len(f) for f in node.frames) == sorted(camera_folders["sizes"])
    assert [len(f) for f in node.frames] != camera_folders["sizes"]  # labels shuffled
    assert node.target_domain and not (out / "test").exists()
    assert not any("track-" in str(p) for f in node.frames for p in f)  # names carry nothing
    cfg = RunConfig(image_height=32, image_width=16, pretrained_weights="none", batch_size=8,
                    local_epochs=1, style_transfer=False)
    state = walking_state(build_model("resnet18", None), bn_mode=cfg.bn_mode)
    result = walk_hop(out, cfg, None, state, 0)
    assert result.num_classes == len(camera_folders["sizes"]) and result.stats.images > 0


def test_bad_input_is_named_and_nothing_is_replaced_without_force(camera_folders,
                                                                  tmp_path: Path):
    tracklets, target = camera_folders["root"] / "tracklets", camera_folders["root"] / "target"
    out = tmp_path / "node"
    with pytest.raises(DatasetError, match="--target-images is needed"):
        write_device_node(tracklets, out, 2, 1, None, progress=False)
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    shutil.copyfile(next(tracklets.glob("track-000/*.jpg")), one / "a.jpg")
    with pytest.raises(DatasetError, match=r"1 tracklet folder.*at least 2"):
        write_device_node(one.parent, out, 2, 1, target, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DatasetError, match="never replaced"):
        write_device_node(tracklets, tmp_path / "mine", 2, 1, target, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    write_device_node(tracklets, out, 2, 1, target, progress=False)
    with pytest.raises(DatasetError, match="pass --force"):
        write_device_node(tracklets, out, 2, 1, target, progress=False)
    again = write_device_node(tracklets, out, 2, 1, target, seed=1, force=True,
                              progress=False)
    assert again["tracklets"] == len(camera_folders["sizes"])
    assert not list(tmp_path.glob(".node.*"))  # nothing left over
    with pytest.raises(DatasetError, match="overlaps the input"):
        write_device_node(tracklets, tracklets / "x", 2, 1, target, progress=False)
