"""The offline stand-in for ImageNet weights: reproducible, loadable like a torchvision file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dmnreid.config import RunConfig
from dmnreid.reid.model import build_model, stem_digest
from dmnreid.reid.pretrain import barely_learned, pretrain_source
from dmnreid.reid.train import TrainStats

TINY = RunConfig(image_height=32, image_width=16, source_ids=6, source_epochs=1,
                 synthetic_cameras=3)


def test_pretraining_is_reproducible_whatever_the_global_rng(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DMNREID_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(1)
    pretrain_source(TINY, tmp_path / "a.pt", pinned=False)
    torch.manual_seed(2)
    torch.rand(100)
    pretrain_source(TINY, tmp_path / "b.pt", pinned=False)
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert "conv1.weight" in a and not any(k.startswith(("fc.", "head.")) for k in a)
    model = build_model("resnet18", tmp_path / "a.pt")
    assert stem_digest(model) != stem_digest(build_model("resnet18", None))


def test_a_stand_in_that_stayed_near_chance_is_flagged():
    """The GPU run's measurements: ResNet-50 at 256x128 after 8 epochs (mean loss 5.62 for
    300 identities, chance 5.70) barely learned; ResNet-18 at 64x32 (2.48) did."""
    def stats(loss: float) -> TrainStats:
        return TrainStats(loss=loss, accuracy=0.0, images=1, seconds=1.0)

    assert barely_learned(stats(5.62), 300)
    assert not barely_learned(stats(2.48), 300)
    assert not barely_learned(stats(0.0), 1)
