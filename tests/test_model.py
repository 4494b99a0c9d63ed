"""The model split: what walks, what stays, what trains, and how weights are loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models

from dmnreid.reid.model import (
    WeightsError,
    build_model,
    load_backbone_weights,
    load_walking_state,
    resolve_weights,
    stem_digest,
    walking_state,
)
from dmnreid.reid.pretrain import torchvision_state
from dmnreid.reid.train import TrainConfig, extract_features, train_local


def tiny_batch(n: int = 12, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 16), dtype=torch.uint8, generator=gen)
    return images, torch.arange(n) % classes


def clone(state: dict) -> dict:
    return {k: v.clone() for k, v in state.items()}


def test_walking_state_is_layer3_and_layer4_with_buffers():
    model = build_model("resnet18", None, 5)
    keys = set(walking_state(model))
    assert all(k.startswith(("middle.layer3.", "middle.layer4.")) for k in keys)
    assert any(k.endswith("running_mean") for k in keys)
    assert not any(k.startswith(("stem.", "head.")) for k in keys)
    assert set(walking_state(model, freeze_stem=False)) > keys | {"stem.conv1.weight"}


def test_frozen_stem_is_bit_identical_after_training():
    model = build_model("resnet18", None, 3)
    before = clone(model.stem.state_dict())
    middle_before = clone(model.middle.state_dict())
    images, labels = tiny_batch()
    train_local(model, images, labels, TrainConfig(epochs=2, batch_size=4))
    after = model.stem.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    changed = [k for k, v in model.middle.state_dict().items()
               if not torch.equal(middle_before[k], v)]
    assert any(k.endswith("running_mean") for k in changed)  # plain training updates stats
    assert any(k.endswith("conv1.weight") for k in changed)


def test_frozen_bn_statistics_keep_every_running_stat():
    model = build_model("resnet18", None, 3, bn_statistics="frozen")
    before = clone(model.state_dict())
    images, labels = tiny_batch()
    train_local(model, images, labels, TrainConfig(epochs=1, batch_size=4))
    after = model.state_dict()
    stats = [k for k in before if "running_" in k]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    weights = [k for k in before if k.startswith("middle.") and k.endswith("bn1.weight")]
    assert any(not torch.equal(before[k], after[k]) for k in weights)  # affine still trains
    with pytest.raises(ValueError, match="bn-statistics"):
        build_model("resnet18", None, 3, bn_statistics="sometimes")


def test_every_build_has_the_same_stem_and_heads_are_local():
    a, b = build_model("resnet18", None, 4), build_model("resnet18", None, 9)
    assert stem_digest(a) == stem_digest(b)
    assert a.head.out_features == 4 and b.head.out_features == 9
    load_walking_state(b, walking_state(a))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in walking_state(a).items())
    with pytest.raises(ValueError, match="missing"):
        load_walking_state(b, {k: v for k, v in walking_state(a).items() if "layer4" not in k})


def test_features_are_l2_normalised_pool5():
    model = build_model("resnet18", None, 2)
    feats = extract_features(model, tiny_batch(5)[0])
    assert feats.shape == (5, 512)
    assert torch.allclose(torch.from_numpy(feats).norm(dim=1), torch.ones(5), atol=1e-5)


def test_torchvision_weights_load_into_stem_and_middle(tmp_path: Path):
    reference = models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}},
               path)
    model = build_model("resnet18", path, 3)
    assert torch.equal(model.stem.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.middle.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    # the stand-in's saved file uses the same names and round-trips
    torch.save(torchvision_state(model), tmp_path / "again.pt")
    again = build_model("resnet18", tmp_path / "again.pt", 3)
    assert stem_digest(again) == stem_digest(model)
    with pytest.raises(WeightsError, match="does not fit a resnet50"):
        load_backbone_weights(build_model("resnet50", None), path)


def test_weights_are_never_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        resolve_weights("imagenet", "resnet50")
    message = str(err.value)
    assert "resnet50-0676ba61.pth" in message and str(tmp_path) in message
    assert resolve_weights("none", "resnet18") is None
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(str(tmp_path / "missing.pth"), "resnet18")
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(models.resnet18(weights=None).state_dict(), cached)
    assert resolve_weights("imagenet", "resnet18") == cached
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match=r"bad\.pth"):
        build_model("resnet18", tmp_path / "bad.pth")


def test_a_file_that_is_not_weights_is_named_without_unsafe_advice(tmp_path: Path):
    for name, data in (("garbage.pth", b"garbage"), ("empty.pth", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsError) as err:
            build_model("resnet18", tmp_path / name)
        message = str(err.value)
        assert f"{name} is not a weights file" in message and "state dict" in message
        assert "weights_only" not in message and err.value.__cause__ is None
    pickled = tmp_path / "object.pth"
    torch.save({"model": object()}, pickled)  # arbitrary objects are never unpickled
    with pytest.raises(WeightsError, match=r"object\.pth is not a weights file"):
        build_model("resnet18", pickled)


def test_non_finite_pretrained_weights_are_refused(tmp_path: Path):
    state = models.resnet18(weights=None).state_dict()
    state["layer3.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match=r"nan.pth: non-finite .*layer3.0.conv1.weight"):
        build_model("resnet18", tmp_path / "nan.pth")
