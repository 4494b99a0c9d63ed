"""Style transfer on a node without Flower: what it stores, reuses, resumes and reports."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import load_node
from dmnreid.data_prep.records import DatasetError
from dmnreid.node import training_images
from dmnreid.reid.images import cached_decode
from dmnreid.style.node_transfer import (
    style_config,
    style_dir,
    trained_generator,
    transfer_style,
    translated_frames,
)
from dmnreid.style.training import train_cyclegan
from tests.tiny_data import tiny_partition

CFG = RunConfig(image_height=32, image_width=16, style_height=32, style_width=24,
                style_iterations=12, style_batch_size=2, style_generator_filters=8,
                style_generator_blocks=1, style_discriminator_filters=8,
                style_use="translated")


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_partition(tmp_path_factory.mktemp("style-node"), cameras=3, test_ids=2)


def test_a_node_translates_its_frames_and_reports_only_numbers(parts: Path):
    data = load_node(parts / "camera-02")
    metrics = transfer_style(data, CFG)
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert metrics["skipped"] == 0 and metrics["iterations"] == 12
    assert metrics["images"] == data.num_images
    assert metrics["seconds-per-batch"] > 0 and metrics["translate-seconds-per-image"] > 0
    assert {"first-cycle", "last-cycle", "first-d_a", "last-g_total"} <= set(metrics)
    translated = translated_frames(data, CFG)
    assert translated.dtype == torch.uint8
    assert translated.shape == (data.num_images, 3, CFG.image_height, CFG.image_width)
    originals, labels = training_images(data, replace(CFG, style_transfer=False))
    assert not torch.equal(translated, originals)

    images, same_labels = training_images(data, CFG)
    assert torch.equal(images, translated) and torch.equal(same_labels, labels)
    both, doubled = training_images(data, replace(CFG, style_use="both"))
    assert torch.equal(both, torch.cat([originals, translated]))
    assert torch.equal(doubled, torch.cat([labels, labels]))
    weights = trained_generator(data, CFG).state_dict()
    assert weights and all(v.dtype == torch.float32 for v in weights.values())


def test_a_second_call_reuses_the_finished_work(parts: Path):
    data = load_node(parts / "camera-02")
    first = transfer_style(data, CFG)
    checkpoint = style_dir(data, CFG) / "checkpoint.pt"
    stamp = checkpoint.stat().st_mtime_ns
    again = transfer_style(data, CFG)
    assert again["reused"] == 1 and checkpoint.stat().st_mtime_ns == stamp
    assert {k: v for k, v in again.items() if k != "reused"} == {
        k: v for k, v in first.items() if k != "reused"}


def test_the_target_camera_is_skipped_and_keeps_its_frames(parts: Path):
    data = load_node(parts / "camera-01")
    assert transfer_style(data, CFG) == {"camera": 1, "skipped": 1}
    images, _ = training_images(data, CFG)
    originals, _ = training_images(data, replace(CFG, style_transfer=False))
    assert torch.equal(images, originals)


def test_an_interrupted_training_resumes_from_the_node_checkpoint(parts: Path):
    data = load_node(parts / "camera-03")
    cfg = replace(CFG, seed=5)
    folder = style_dir(data, cfg)
    folder.mkdir(parents=True)
    own = cached_decode([p for f in data.frames for p in f], cfg.style_height, cfg.style_width,
                        data.root / "cache", "style")
    target = cached_decode(data.target_domain, cfg.style_height, cfg.style_width,
                           data.root / "cache", "style-target")
    train_cyclegan(own, target, style_config(cfg), folder / "checkpoint.pt", stop_after=6)
    metrics = transfer_style(data, cfg)
    assert metrics["resumed-from"] == 6 and metrics["iterations"] == 12


def test_training_without_a_finished_transfer_names_the_missing_phase(parts: Path):
    data = load_node(parts / "camera-03")
    other = replace(CFG, style_iterations=13)
    assert style_dir(data, other) != style_dir(data, CFG)
    with pytest.raises(DatasetError, match=r"camera 3\b.*train\.style"):
        training_images(data, other)


def test_style_sizes_are_checked():
    from dmnreid.config import ConfigError

    with pytest.raises(ConfigError, match="style-width"):
        RunConfig.from_mapping({"style-width": 30})
    with pytest.raises(ConfigError, match="style-height"):
        RunConfig.from_mapping({"style-height": 8})


def _transfer_in_process(folder: str, iterations: int) -> dict:
    return transfer_style(load_node(Path(folder)), replace(CFG, style_iterations=iterations))


def test_two_processes_sharing_a_node_folder_train_its_cyclegan_once(parts: Path):
    """Two runs on one cache (experiments side by side): one trains, the other waits for it
    and reuses the result instead of training the same CycleGAN again."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    folder = str(parts / "camera-03")
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(_transfer_in_process, [folder, folder], [9, 9]))
    assert sorted(r.get("reused", 0) for r in results) == [0, 1]
    trained = next(r for r in results if not r.get("reused"))
    assert trained["iterations"] == 9 and trained["resumed-from"] == 0
