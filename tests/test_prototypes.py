"""The cluster-prototype memory (issue 17): built from the banks, its positives, its momentum
update, and a hop that pulls a camera's view of a person towards another camera's."""

import numpy as np
import pytest
import torch

from dmnreid.config import ConfigError, RunConfig
from dmnreid.memory.prototypes import (
    NO_CAMERA,
    PrototypeMemory,
    build_memory,
    candidates,
    positives,
    prototype_loss,
    prototype_objective,
    refreshed,
)
from dmnreid.messages import as_sent
from dmnreid.reid.model import build_model
from dmnreid.reid.train import TrainConfig, extract_features, train_local


def unit(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


BANKS = {1: unit([[1, 0, 0], [0, 1, 0], [1, 1, 0]]), 3: unit([[1, 0, 1], [0, 0, 1]])}
CLASSES = {1: np.array([0, 1, 0]), 3: np.array([0, 2])}


def test_camera_aware_entries_are_the_normalised_means_of_their_members():
    memory = build_memory(BANKS, CLASSES, camera_aware=True)
    assert memory.clusters.tolist() == [0, 0, 1, 2]
    assert memory.cameras.tolist() == [1, 3, 1, 3]
    by_hand = unit([BANKS[1][0] + BANKS[1][2], BANKS[3][0], BANKS[1][1], BANKS[3][1]])
    np.testing.assert_allclose(memory.vectors, by_hand, rtol=1e-6)
    assert memory.vectors.dtype == np.float32 and memory.camera_aware


def test_plain_entries_average_a_cluster_over_every_camera():
    memory = build_memory(BANKS, CLASSES, camera_aware=False)
    assert memory.clusters.tolist() == [0, 1, 2] and (memory.cameras == NO_CAMERA).all()
    np.testing.assert_allclose(memory.vectors[0],
                               unit([BANKS[1][0] + BANKS[1][2] + BANKS[3][0]])[0], rtol=1e-6)
    back = PrototypeMemory.from_state(as_sent(memory.to_state(), "float16"))  # on the wire
    np.testing.assert_allclose(back.vectors, memory.vectors, atol=1e-3)
    assert back.vectors.dtype == np.float32 and not back.camera_aware
    assert np.array_equal(back.clusters, memory.clusters)  # ids travel exactly


def test_positives_are_the_other_cameras_entries_or_the_own_one_when_alone():
    memory = build_memory(BANKS, CLASSES, camera_aware=True)
    mask = positives(memory, 1, np.array([0, 1]))
    assert mask.tolist() == [[False, True, False, False],   # cluster 0: camera 3's entry
                             [False, False, True, False]]   # cluster 1: seen by camera 1 only
    plain = positives(build_memory(BANKS, CLASSES, camera_aware=False), 1, np.array([0, 1]))
    assert plain.tolist() == [[True, False, False], [False, True, False]]


def test_negatives_from_this_camera_leave_the_other_cameras_unmerged_entries_out():
    """Camera 1's sample of cluster 0: its positive is camera 3's entry of cluster 0; with
    ``camera`` negatives the softmax runs over that and camera 1's own entries, so camera 3's
    entry of cluster 2 (which may be the same person, unmerged) neither counts nor moves the
    loss; with ``all`` it does."""
    memory = build_memory(BANKS, CLASSES, camera_aware=True)
    mask = positives(memory, 1, np.array([0]))
    among = candidates(memory, 1, mask, "camera")
    assert among.tolist() == [[True, True, True, False]]
    assert candidates(memory, 1, mask, "all").all()
    features = torch.tensor([[1.0, 0.2, 0.1]])
    vectors = torch.from_numpy(memory.vectors)
    moved = vectors.clone()
    moved[3] = torch.nn.functional.normalize(features, dim=1)[0]  # camera 3, cluster 2
    loss = prototype_loss(features, vectors, mask, 0.1, among)
    logits = torch.nn.functional.normalize(features, dim=1) @ vectors[:3].T / 0.1
    assert loss.item() == pytest.approx(-torch.log_softmax(logits, 1)[0, 1].item(), rel=1e-5)
    assert prototype_loss(features, moved, mask, 0.1, among).item() == pytest.approx(loss.item())
    assert prototype_loss(features, moved, mask, 0.1).item() > \
        prototype_loss(features, vectors, mask, 0.1).item()
    with pytest.raises(ValueError, match="camera-aware"):
        candidates(build_memory(BANKS, CLASSES, camera_aware=False), 1, mask, "camera")
    with pytest.raises(ConfigError, match="prototype-cameras = true"):
        RunConfig(incremental_loss="prototype", prototype_negatives="camera",
                  prototype_cameras=False).validate()


def test_a_hop_moves_only_its_own_entries_by_momentum():
    memory = build_memory(BANKS, CLASSES, camera_aware=True)
    fresh = unit([[0, 1, 1], [1, 0, 0], [0, 1, 1]])
    after = refreshed(memory, 1, fresh, CLASSES[1], momentum=0.25)
    expected = unit([0.25 * memory.vectors[0] + 0.75 * unit([fresh[0] + fresh[2]])[0]])[0]
    np.testing.assert_allclose(after.vectors[0], expected, rtol=1e-5)
    np.testing.assert_allclose(after.vectors[2], unit([0.25 * memory.vectors[2]
                                                       + 0.75 * fresh[1]])[0], rtol=1e-5)
    assert np.array_equal(after.vectors[[1, 3]], memory.vectors[[1, 3]])  # camera 3's


def _person(colour, tint, count, seed):
    """``count`` noisy 32x16 images of one colour under a camera's tint."""
    rng = np.random.default_rng(seed)
    base = np.clip(np.array(colour) * np.array(tint), 0, 255)
    images = base[None, :, None, None] + rng.normal(0, 20, (count, 3, 32, 16))
    return torch.from_numpy(np.clip(images, 0, 255).astype(np.uint8))


def _hop() -> tuple[float, float]:
    """Camera 1 trains on its images of three people against a memory of camera 2's view
    of them; the cross-camera distance ratio before and after (``same_over_different``)."""
    torch.manual_seed(0)
    model = build_model("resnet18", None, 3, freeze_stem=True, bn_statistics="update")
    colours = [(200, 60, 60), (60, 60, 200), (60, 200, 60)]
    own = torch.cat([_person(c, (1.0, 1.0, 1.0), 12, seed=i) for i, c in enumerate(colours)])
    other = [_person(c, (0.5, 0.9, 1.5), 12, seed=10 + i) for i, c in enumerate(colours)]
    person = torch.arange(3).repeat_interleave(12)

    def same_over_different() -> float:
        """Mean distance from camera 1's images to the same person's camera-2 centroid,
        over the mean distance to the other people's (all under the current model)."""
        seen = [extract_features(model, x).mean(0) for x in other]
        distance = np.array([[np.linalg.norm(f - c) for c in seen]
                             for f in extract_features(model, own)])
        same = distance[np.arange(len(own)), person.numpy()]
        return float(same.mean() / ((distance.sum(1) - same) / 2).mean())

    before = same_over_different()
    memory = PrototypeMemory(unit([extract_features(model, x).mean(0) for x in other])
                             .astype(np.float32), np.arange(3), np.array([2, 2, 2]))
    objective = prototype_objective(memory, 1, np.arange(3), 0.05, torch.device("cpu"))
    stats = train_local(model, own, person, TrainConfig(epochs=4, batch_size=8,
                                                        lr_backbone=0.05), objective=objective)
    assert stats.images == 4 * 36 and np.isfinite(stats.loss)
    return before, same_over_different()


def test_a_prototype_hop_pulls_a_person_towards_how_the_other_camera_sees_them():
    """Measured (torch 2.15, CPU): 0.52 before, 0.34 after the hop. (A softmax hop on the
    same labels gets to 0.11 here: colour alone tells these three people apart in both
    cameras, so this case shows the pull, not an advantage over the paper's hop.)"""
    before, after = _hop()
    assert after < 0.8 * before, (before, after)


def test_fedavg_and_a_travelling_head_are_refused_with_the_memory():
    """The memory travels from hop to hop in place of a head: FedAvg has nothing that
    travels, and a head would be a second classifier."""
    for other in ({"walk_strategy": "fedavg"}, {"incremental_head": "travel"}):
        with pytest.raises(ConfigError, match="incremental-loss = 'prototype'"):
            RunConfig(incremental_loss="prototype", **other).validate()
