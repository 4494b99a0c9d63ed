"""Node-side work without Flower: memory bank, incremental hops, the node's model copy."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from dmnreid.checks import StateError, TrainingDiverged
from dmnreid.config import RunConfig
from dmnreid.data_prep.partition import load_node
from dmnreid.node import (
    Targets,
    check_classes,
    load_model_copy,
    memory_bank,
    save_model_copy,
    training_images,
    walk_hop,
)
from dmnreid.reid.model import build_model, walking_state
from dmnreid.reid.train import extract_features
from tests.tiny_data import tiny_partition

CFG = RunConfig(image_height=32, image_width=16, pretrained_weights="none",
                bn_statistics="update", local_epochs=1, batch_size=8, bn_mode="shared")


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_partition(tmp_path_factory.mktemp("n"), cameras=2, test_ids=2) / "camera-01"


def test_memory_bank_is_the_normalised_sum_of_frame_features(node_dir: Path):
    model = build_model(CFG.arch, None, 1, CFG.freeze_stem)
    state = walking_state(model)
    bank = memory_bank(node_dir, CFG, None, state)
    data = load_node(node_dir)
    assert bank.shape == (data.num_classes, model.feature_dim) and bank.dtype == np.float32
    assert np.allclose(np.linalg.norm(bank, axis=1), 1.0, atol=1e-5)
    images, labels = training_images(data, CFG)
    frames = extract_features(model, images)
    for label in range(data.num_classes):
        total = frames[labels.numpy() == label].sum(0)
        assert np.allclose(bank[label], total / np.linalg.norm(total), atol=1e-5)


def test_centred_memories_remove_the_camera_mean(node_dir: Path):
    state = walking_state(build_model(CFG.arch, None))
    plain = memory_bank(node_dir, CFG, None, state).astype(np.float64)
    centred = memory_bank(node_dir, RunConfig(**{**CFG.__dict__, "memory_features": "centred"}),
                          None, state)
    expected = plain - plain.mean(0)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(centred, expected, atol=1e-5)


def test_incremental_hop_uses_global_classes_and_travelling_head(node_dir: Path):
    data = load_node(node_dir)
    state = walking_state(build_model(CFG.arch, None))
    classes = np.arange(data.num_classes) % 3 + 2  # 5 global classes, 0 and 1 live elsewhere
    first = walk_hop(node_dir, CFG, None, state, 0, Targets(classes, 5))
    assert first.num_classes == 5 and first.head["weight"].shape == (5, 512)
    second = walk_hop(node_dir, CFG, None, first.state, 1, Targets(classes, 5, first.head))
    assert not torch.equal(second.head["weight"], first.head["weight"])
    local = walk_hop(node_dir, CFG, None, state, 0)
    assert local.num_classes == data.num_classes
    with pytest.raises(ValueError, match="global classes"):
        walk_hop(node_dir, CFG, None, state, 0, Targets(classes[:-1], 5))


def test_model_copy_roundtrip(node_dir: Path):
    state = walking_state(build_model(CFG.arch, None))
    save_model_copy(node_dir, "run-1", state)
    loaded = load_model_copy(node_dir, "run-1")
    assert all(torch.equal(state[k], loaded[k]) for k in state)
    with pytest.raises(FileNotFoundError, match="no model copy"):
        load_model_copy(node_dir, "run-2")
    with pytest.raises(ValueError, match="bad run key"):
        save_model_copy(node_dir, "../escape", state)


def test_a_diverging_hop_says_so_instead_of_returning_weights(node_dir: Path):
    state = walking_state(build_model(CFG.arch, None))
    reckless = RunConfig(**{**CFG.__dict__, "lr_head": 1e30, "lr_backbone": 1e30})
    with pytest.raises(TrainingDiverged, match="training diverged at step"):
        walk_hop(node_dir, reckless, None, state, 0)


def test_a_node_refuses_weights_it_cannot_use(node_dir: Path):
    state = walking_state(build_model(CFG.arch, None))
    broken = OrderedDict(state)
    key = next(k for k in broken if k.endswith("conv1.weight"))
    broken[key] = broken[key].clone().fill_(float("nan"))
    with pytest.raises(StateError, match=rf"walking weights: non-finite .* in {key}"):
        walk_hop(node_dir, CFG, None, broken, 0)
    with pytest.raises(StateError, match=r"missing \["):
        memory_bank(node_dir, CFG, None, {k: v for k, v in state.items() if "layer4" not in k})
    tracklets = load_node(node_dir).num_classes
    head = build_model(CFG.arch, None, 4).head.state_dict()
    with pytest.raises(StateError, match="travelling head: wrong shape"):
        walk_hop(node_dir, CFG, None, state, 0, Targets(np.zeros(tracklets, np.int64), 5, head))


@pytest.mark.parametrize(("classes", "match"), [
    (np.array([0, 1, 5]), r"range over \[0, 5\], outside the head's \[0, 5\) \(num-classes\)"),
    (np.array([-1, 0, 1]), "outside the head's"),
    (np.array([0.0, 1.0, 2.0]), "1-D integer array"),
    (np.array([[0, 1, 2]]), "1-D integer array"),
    (np.array([0, 1]), "2 global classes sent for 3 local tracklets"),
])
def test_global_classes_must_fit_the_tracklets_and_the_head(classes, match):
    with pytest.raises(ValueError, match=match):
        check_classes(classes, tracklets=3, num_classes=5)
