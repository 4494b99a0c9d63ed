"""Camera-aware BN and camera-by-camera evaluation, without Flower."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dmnreid.config import ConfigError, RunConfig
from dmnreid.data_prep.partition import (
    EVALUATOR_DIR,
    load_node,
    read_test_tables,
)
from dmnreid.data_prep.records import DatasetError
from dmnreid.node import embed_own_tests, memory_bank, training_images, walk_hop
from dmnreid.reid.camera_bn import (
    adaptation_subset,
    estimate_bn_statistics,
    is_bn_statistic,
    state_bytes,
    without_bn_statistics,
)
from dmnreid.reid.evaluate import evaluate_rank, pool_tracklet_features, summarise
from dmnreid.reid.evaluator import (
    Evaluator,
    ItemFeatures,
    SplitFrames,
    embed_camera,
    embed_items,
    rank,
)
from dmnreid.reid.images import normalise
from dmnreid.reid.model import build_model, load_walking_state, walking_state
from dmnreid.reid.train import extract_features
from dmnreid.server_app import reevaluate
from tests.tiny_data import tiny_partition

CFG = RunConfig(image_height=32, image_width=16, pretrained_weights="none",
                bn_statistics="update", local_epochs=1, batch_size=8, bn_mode="camera",
                style_transfer=False)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 16), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_statistics_are_the_camera_images_moments_and_weights_do_not_move():
    model = build_model("resnet18", None, 1, freeze_stem=True)
    model.train()  # the stem stays in eval mode (frozen); estimation must not depend on it
    before = {k: v.clone() for k, v in model.state_dict().items() if not is_bn_statistic(k)}
    images = _images(40)
    assert estimate_bn_statistics(model, images) == 40
    with torch.no_grad():
        conv = model.stem.conv1(normalise(images))
    bn1 = model.stem.bn1
    assert torch.allclose(bn1.running_mean, conv.mean((0, 2, 3)), atol=1e-4)
    n = conv.numel() / conv.shape[1]
    assert torch.allclose(bn1.running_var, conv.var((0, 2, 3)) * n / (n - 1), rtol=1e-3)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no weight changed
    assert model.training and not model.stem.training  # modes restored
    assert model.stem.bn1.momentum == 0.1


def test_statistics_need_two_images_and_use_a_reproducible_subset():
    assert list(adaptation_subset(5, 0)) == [0, 1, 2, 3, 4]
    subset = adaptation_subset(1000, 64, seed=7)
    assert len(subset) == 64 and list(subset) == sorted(set(subset))
    assert np.array_equal(subset, adaptation_subset(1000, 64, seed=7))
    with pytest.raises(ValueError, match="at least 2 images"):
        estimate_bn_statistics(build_model("resnet18", None), _images(1))
    with pytest.raises(ConfigError, match="bn-adapt-images"):
        RunConfig(bn_adapt_images=1).validate()


def test_camera_statistics_undo_a_cameras_brightness_and_contrast():
    """The same scenes seen by a second camera with another gain and offset: under each
    camera's own statistics their features nearly agree, under shared ones they do not."""
    model = build_model("resnet18", None, 1)
    estimate_bn_statistics(model, _images(64, seed=1))  # some shared statistics
    scenes = _images(48, seed=2)
    other = (scenes.float() * 0.5 + 60).round().to(torch.uint8)
    shared_gap = np.abs(extract_features(model, scenes) - extract_features(model, other)).mean()
    first, second = build_model("resnet18", None, 1), build_model("resnet18", None, 1)
    estimate_bn_statistics(first, scenes)
    estimate_bn_statistics(second, other)
    camera_gap = np.abs(extract_features(first, scenes) - extract_features(second, other)).mean()
    assert camera_gap < shared_gap / 4, (camera_gap, shared_gap)


def test_camera_mode_keeps_bn_statistics_out_of_the_walking_state():
    model = build_model("resnet18", None, 1)
    shared, camera = walking_state(model), walking_state(model, bn_mode="camera")
    statistics = {k for k in shared if is_bn_statistic(k)}
    assert statistics and set(camera) == set(shared) - statistics
    assert all(torch.equal(camera[k], v) for k, v in without_bn_statistics(shared).items())
    stat_bytes = sum(shared[k].numel() * shared[k].element_size() for k in statistics)
    assert state_bytes(shared) - state_bytes(camera) == stat_bytes > 0
    with pytest.raises(ValueError, match="unexpected"):  # statistics are never loaded silently
        load_walking_state(model, shared, bn_mode="camera")
    with pytest.raises(ValueError, match="bn-mode"):
        walking_state(model, bn_mode="per-node")


def _frames(items: list[int], pids: list[int], camids: list[int], seed: int) -> SplitFrames:
    return SplitFrames(_images(len(items), seed), np.array(items), np.array(pids),
                      np.array(camids))


@pytest.mark.filterwarnings("ignore:gallery has only")
def test_rank_of_per_camera_parts_equals_ranking_everything_at_once():
    rng = np.random.default_rng(0)
    parts = []
    q_all, g_all = [], []
    for camera, (q_items, g_items) in {1: ([0, 3], [1, 2, 5]), 2: ([1, 2], [0, 3, 4])}.items():
        part = {}
        for split, items in (("query", q_items), ("gallery", g_items)):
            feats = rng.normal(size=(len(items), 8)).astype(np.float32)
            part[split] = ItemFeatures(np.array(items), np.array(items) % 3,
                                       np.full(len(items), camera), feats)
            (q_all if split == "query" else g_all).append(part[split])
        parts.append(part)
    scores = rank(parts)

    def ordered(chunks):
        items = np.concatenate([c.items for c in chunks])
        order = np.argsort(items)
        return [np.concatenate([getattr(c, k) for c in chunks])[order]
                for k in ("features", "pids", "camids")]

    (qf, qp, qc), (gf, gp, gc) = ordered(q_all), ordered(g_all)
    dist = ((qf[:, None] - gf[None]) ** 2).sum(-1)
    assert scores == summarise(*evaluate_rank(dist, qp, gp, qc, gc))
    roundtrip = ItemFeatures.from_arrays(parts[0]["query"].to_arrays("query"), "query")
    assert np.array_equal(roundtrip.features, parts[0]["query"].features)
    with pytest.raises(ValueError, match="query-features"):
        ItemFeatures.from_arrays({"query-items": np.zeros(2)}, "query")
    with pytest.raises(ValueError, match="more than one camera"):
        rank([parts[0], parts[0]])


def test_items_pool_their_frames_and_camera_mode_changes_the_features():
    model = build_model("resnet18", None, 1)
    frames = _frames([4, 4, 9, 9, 9], [1, 1, 2, 2, 2], [1] * 5, seed=3)
    pooled = embed_items(model, frames)
    assert list(pooled.items) == [4, 9] and list(pooled.pids) == [1, 2]
    expected = pool_tracklet_features(extract_features(model, frames.images),
                                      np.array([0, 0, 1, 1, 1]))
    assert np.allclose(pooled.features, expected, atol=1e-6)
    empty = _frames([], [], [], seed=0)
    shared = embed_camera(model, frames, empty, "shared", 0)
    camera = embed_camera(model, frames, empty, "camera", 0)
    assert shared["gallery"].features.shape == (0, model.feature_dim)
    assert not np.allclose(shared["query"].features, camera["query"].features, atol=1e-3)
    # the model itself keeps its statistics: adaptation works on a copy
    assert torch.equal(model.stem.bn1.running_mean, torch.zeros(64))


@pytest.fixture(scope="module")
def partition(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_partition(tmp_path_factory.mktemp("cbn"), cameras=3, test_ids=4)


def test_each_node_holds_its_cameras_test_images_numbered_as_the_evaluators(partition: Path):
    for split in ("query", "gallery"):
        evaluator = pd.read_csv(partition / EVALUATOR_DIR / f"{split}.csv")
        joined = []
        for camera in (1, 2, 3):
            table = read_test_tables(partition / f"camera-{camera:02d}")[split]
            assert (table["camid"] == camera).all()
            assert all(Path(f).is_file() and "pid" not in Path(f).name for f in table["frame"])
            assert all(Path(f).read_bytes() == Path(g).read_bytes() for f, g in zip(
                table["frame"], evaluator[evaluator["camid"] == camera]["frame"], strict=True))
            joined.append(table)
        together = pd.concat(joined).sort_values(["item"], kind="stable")
        assert sorted(together["item"]) == sorted(evaluator["item"])
        assert len(together) == len(evaluator)


def test_a_node_without_its_test_split_says_how_to_get_one(partition: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match=r"test/query\.csv.*--force"):
        read_test_tables(tmp_path)


@pytest.mark.parametrize("bn_mode", ["shared", "camera"])
def test_a_node_embeds_its_camera_exactly_as_the_server_does(partition: Path, bn_mode: str):
    cfg = RunConfig(**{**CFG.__dict__, "bn_mode": bn_mode})
    model = build_model(cfg.arch, None, 1)
    state = walking_state(model, bn_mode=bn_mode)
    server = Evaluator(partition, cfg.image_height, cfg.image_width).embed(model, bn_mode, 0)
    for camera in (1, 2, 3):
        node = embed_own_tests(partition / f"camera-{camera:02d}", cfg, None, state)
        for split in ("query", "gallery"):
            assert np.array_equal(node[split].items, server[camera][split].items)
            assert np.array_equal(node[split].pids, server[camera][split].pids)
            assert np.abs(node[split].features - server[camera][split].features).max() < 1e-6


def test_camera_mode_hops_and_memory_banks_use_the_nodes_own_statistics(partition: Path):
    node = partition / "camera-02"
    model = build_model(CFG.arch, None, 1)
    state = walking_state(model, bn_mode="camera")
    result = walk_hop(node, CFG, None, state, hop=0)
    assert set(result.state) == set(state)  # nothing statistical goes back
    assert not any(is_bn_statistic(k) for k in result.state)

    bank = memory_bank(node, CFG, None, state)
    images, labels = training_images(load_node(node), CFG)
    own = build_model(CFG.arch, None, 1)
    estimate_bn_statistics(own, images, CFG.bn_adapt_images)
    frames = extract_features(own, images)
    for label in range(bank.shape[0]):
        total = frames[labels.numpy() == label].sum(0)
        assert np.allclose(bank[label], total / np.linalg.norm(total), atol=1e-5)
    shared = memory_bank(node, RunConfig(**{**CFG.__dict__, "bn_mode": "shared"}), None,
                         walking_state(model))
    assert not np.allclose(bank, shared, atol=1e-3)


def test_with_frozen_statistics_a_camera_mode_hop_trains_as_a_shared_one(partition: Path):
    """bn-statistics = frozen: training normalises with the weights file's statistics in both
    modes; camera mode only keeps them from travelling (and uses the camera's own ones for
    memory banks and evaluation)."""
    node = partition / "camera-03"
    frozen = {**CFG.__dict__, "bn_statistics": "frozen"}
    model = build_model(CFG.arch, None, 1)
    camera = walk_hop(node, RunConfig(**frozen), None, walking_state(model, bn_mode="camera"),
                      hop=1)
    shared = walk_hop(node, RunConfig(**{**frozen, "bn_mode": "shared"}), None,
                      walking_state(model), hop=1)
    assert set(camera.state) == set(without_bn_statistics(shared.state))
    assert all(torch.equal(v, shared.state[k]) for k, v in camera.state.items())


def test_evaluate_run_names_what_is_missing(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"evaluate-run .*not a run directory"):
        reevaluate(None, RunConfig(evaluate_run=str(tmp_path)))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no final model.*resume-from"):
        reevaluate(None, RunConfig(evaluate_run=str(tmp_path)))
