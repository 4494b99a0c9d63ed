"""CycleGAN style transfer: loss arithmetic, network shapes, the fake pool, training and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as tf

from dmnreid.checks import TrainingDiverged, non_finite
from dmnreid.style.losses import (
    adversarial_loss,
    cycle_loss,
    discriminator_objective,
    generator_objective,
    identity_loss,
)
from dmnreid.style.networks import (
    PatchDiscriminator,
    ResnetGenerator,
    check_size,
    init_weights,
    patch_map_size,
)
from dmnreid.style.pool import ImagePool
from dmnreid.style.training import (
    StyleConfig,
    linear_decay,
    load_generator,
    save_generator,
    train_cyclegan,
    translate,
)

H, W = 32, 16
TINY = StyleConfig(batch_size=4, height=H, width=W, generator_filters=8, generator_blocks=1,
                   discriminator_filters=8, discriminator_layers=2)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values)


# --- losses ---------------------------------------------------------------------------------

def test_lsgan_loss_by_hand() -> None:
    prediction = torch.tensor([[0.5, 1.5]])
    assert adversarial_loss(prediction, True).item() == pytest.approx(0.25)  # (0.25 + 0.25) / 2
    assert adversarial_loss(prediction, False).item() == pytest.approx(1.25)  # (0.25 + 2.25) / 2
    assert discriminator_objective(prediction, prediction).item() == pytest.approx(0.75)
    assert discriminator_objective(t(1.0), t(0.0)).item() == 0.0


def test_l1_losses_by_hand() -> None:
    assert cycle_loss(t(0.0, 1.0, 2.0), t(1.0, 1.0, 0.0)).item() == pytest.approx(1.0)
    assert identity_loss(t(-1.0, 0.5), t(1.0, 0.5)).item() == pytest.approx(1.0)


def _generator_inputs() -> dict[str, torch.Tensor]:
    return {
        "d_b_on_g_a": t(0.5, 1.5),  # adv 0.25
        "d_a_on_f_b": t(0.0),  # adv 1.0
        "real_a": torch.zeros(4), "f_g_a": torch.full((4,), 0.5),  # cycle A 0.5
        "real_b": torch.ones(2), "g_f_b": t(1.0, 0.0),  # cycle B 0.5
        "g_b": t(1.0, 1.2),  # identity A: |G(B) - B| = 0.1
        "f_a": torch.full((4,), 0.2),  # identity B: |F(A) - A| = 0.2
    }


def test_generator_objective_is_the_weighted_sum() -> None:
    total, terms = generator_objective(**_generator_inputs())
    assert total.item() == pytest.approx(0.25 + 1.0 + 10 * 1.0 + 10 * 0.5 * 0.3)
    expected = {"g_adv": 0.25, "f_adv": 1.0, "cycle": 1.0, "identity": 0.3, "g_total": 12.75}
    assert terms == pytest.approx(expected)
    total, _ = generator_objective(**_generator_inputs(), cycle_weight=2.0, identity_weight=0.25)
    assert total.item() == pytest.approx(1.25 + 2.0 * 1.0 + 2.0 * 0.25 * 0.3)


def test_identity_term_optional_only_without_weight() -> None:
    inputs = _generator_inputs() | {"g_b": None, "f_a": None}
    total, terms = generator_objective(**inputs, identity_weight=0.0)
    assert terms["identity"] == 0.0
    assert total.item() == pytest.approx(11.25)
    with pytest.raises(ValueError, match="identity"):
        generator_objective(**inputs)


# --- networks -------------------------------------------------------------------------------

@pytest.mark.parametrize(("height", "width"), [(64, 32), (32, 16)])
def test_generator_keeps_shape_and_range(height: int, width: int) -> None:
    torch.manual_seed(0)
    generator = ResnetGenerator(filters=8, blocks=2)
    x = torch.rand(2, 3, height, width) * 2 - 1
    y = generator(x)
    assert y.shape == x.shape
    assert y.min() >= -1.0 and y.max() <= 1.0


def test_generator_refuses_sizes_it_cannot_downsample() -> None:
    with pytest.raises(ValueError, match="30x16"):
        ResnetGenerator(filters=4, blocks=1)(torch.zeros(1, 3, 30, 16))
    with pytest.raises(ValueError, match="4x4"):
        check_size(4, 4, 2)  # divisible, but 1 pixel after downsampling cannot be padded
    check_size(8, 8, 2)


def test_patchgan_is_70x70_and_refuses_empty_maps() -> None:
    assert PatchDiscriminator(filters=8)(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert PatchDiscriminator(filters=8)(torch.zeros(2, 3, 64, 32)).shape == (2, 1, 6, 2)
    assert PatchDiscriminator(filters=8, layers=2)(torch.zeros(1, 3, 32, 16)).shape == (1, 1, 6, 2)
    assert patch_map_size(32, 16, 3) == (2, 0)
    with pytest.raises(ValueError, match=r"32x16.*at least 24"):
        PatchDiscriminator(filters=8)(torch.zeros(1, 3, 32, 16))


def test_init_weights_is_normal_with_zero_bias() -> None:
    torch.manual_seed(0)
    generator = ResnetGenerator(filters=16, blocks=2)
    init_weights(generator)
    convs = [m for m in generator.modules() if isinstance(m, torch.nn.Conv2d)]
    weights = torch.cat([c.weight.flatten() for c in convs])
    assert weights.std().item() == pytest.approx(0.02, rel=0.05)
    assert all(torch.all(c.bias == 0) for c in convs)


# --- pool -----------------------------------------------------------------------------------

def _tagged(*ids: int) -> torch.Tensor:
    """Images whose every pixel is their id, so a returned image can be told apart."""
    return torch.tensor(ids, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)


def _ids(images: torch.Tensor) -> list[int]:
    return [int(i) for i in images[:, 0, 0, 0]]


def test_pool_of_size_zero_passes_through() -> None:
    pool = ImagePool(0, rng=np.random.default_rng(0))
    images = _tagged(1, 2)
    assert pool.query(images) is images
    assert pool.state_dict()["images"].numel() == 0


def test_pool_fills_then_swaps_with_history() -> None:
    pool = ImagePool(3, rng=np.random.default_rng(0))
    assert _ids(pool.query(_tagged(1, 2))) == [1, 2]
    assert _ids(pool.query(_tagged(3))) == [3]
    assert sorted(_ids(pool.state_dict()["images"])) == [1, 2, 3]
    swapped = 0
    for start in range(10, 200, 2):
        seen = set(_ids(pool.state_dict()["images"]))
        new = [start, start + 1]
        for returned, image in zip(_ids(pool.query(_tagged(*new))), new, strict=True):
            # the new image, or a stored one (the batch's first may be stored before its second)
            assert returned == image or returned in seen
            swapped += returned != image
            seen.add(image)
        assert len(pool.images) == 3
    assert 40 < swapped < 150  # about half of 190 images came back from the history


def test_pool_state_round_trip() -> None:
    pool = ImagePool(3, rng=np.random.default_rng(0))
    pool.query(_tagged(1, 2))
    copy = ImagePool(3, rng=np.random.default_rng(0))
    copy.load_state_dict(pool.state_dict())
    assert _ids(copy.state_dict()["images"]) == [1, 2]
    with pytest.raises(ValueError, match="do not fit"):
        ImagePool(1, rng=np.random.default_rng(0)).load_state_dict(pool.state_dict())


# --- training -------------------------------------------------------------------------------

def _smooth_images(count: int, seed: int) -> torch.Tensor:
    """Blurry random colour blobs in [40, 200]: image-like, with room for a colour cast."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(count, 3, H // 4, W // 4, generator=g)
    full = tf.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)
    return (full * 160 + 40).round().byte()


@pytest.fixture(scope="module")
def domains() -> tuple[torch.Tensor, torch.Tensor]:
    """A: plain images; B: the same kind of images with a strong red cast."""
    cast = _smooth_images(64, seed=2).int()
    cast[:, 0] += 80
    cast[:, 2] -= 30
    return _smooth_images(64, seed=1), cast.clamp(0, 255).byte()


@pytest.fixture(scope="module")
def trained(domains: tuple[torch.Tensor, torch.Tensor]):
    a, b = domains
    return train_cyclegan(a, b, StyleConfig(**{**TINY.__dict__, "iterations": 120}))


def test_training_reduces_cycle_and_identity_losses(trained) -> None:
    _, stats = trained
    assert stats.iterations == 120 and stats.resumed_from == 0
    assert set(stats.first) == {"g_adv", "f_adv", "cycle", "identity", "g_total", "d_a", "d_b"}
    for term in ("cycle", "identity", "g_total"):
        assert stats.last[term] < 0.8 * stats.first[term], term
    assert stats.seconds > 0 and stats.seconds_per_batch > 0


def test_translation_moves_colours_to_the_target_style(trained, domains) -> None:
    generator, _ = trained
    a, b = domains
    translated, seconds_per_image = translate(generator, a)
    assert translated.dtype == torch.uint8 and translated.shape == a.shape
    assert seconds_per_image > 0

    def means(x: torch.Tensor) -> torch.Tensor:
        return x.double().mean((0, 2, 3))

    before = (means(a) - means(b)).norm()
    after = (means(translated) - means(b)).norm()
    assert after < before / 4, (before, after)


def test_translate_checks_input_and_restores_mode(trained, domains) -> None:
    generator, _ = trained
    generator.train()
    translated, _ = translate(generator, domains[0][:3], batch_size=2)
    assert translated.shape == (3, 3, H, W) and generator.training
    with pytest.raises(ValueError, match="uint8"):
        translate(generator, domains[0].float())


def test_generator_save_load_round_trip(trained, domains, tmp_path: Path) -> None:
    generator, _ = trained
    save_generator(generator, tmp_path / "g" / "generator.pt")
    loaded = load_generator(tmp_path / "g" / "generator.pt")
    assert (loaded.filters, loaded.blocks, loaded.downsamplings) == (8, 1, 2)
    images = domains[0][:4]
    assert torch.equal(translate(loaded, images)[0], translate(generator, images)[0])


def test_lr_is_constant_then_decays_linearly() -> None:
    factor = linear_decay(10)
    assert [factor(i) for i in range(5)] == [1.0] * 5
    decay = [factor(i) for i in range(5, 10)]
    assert decay == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])


def test_training_refuses_bad_images(domains) -> None:
    a, b = domains
    with pytest.raises(ValueError, match=r"\(64, 3, 32, 16\)"):
        train_cyclegan(a.float(), b, TINY)
    with pytest.raises(ValueError, match="16, 8"):
        train_cyclegan(a[:, :, :16, :8], b, TINY)
    with pytest.raises(ValueError, match="empty"):
        train_cyclegan(a, b[:0], TINY)
    with pytest.raises(ValueError, match="at least 24"):
        train_cyclegan(a, b, StyleConfig(**{**TINY.__dict__, "discriminator_layers": 3}))


class Interrupted(Exception):
    pass


def test_resumed_training_equals_uninterrupted(domains, tmp_path: Path) -> None:
    a, b = domains[0][:16], domains[1][:16]
    cfg = StyleConfig(**{**TINY.__dict__, "iterations": 8, "batch_size": 2, "pool_size": 3,
                         "checkpoint_every": 3})
    whole, whole_stats = train_cyclegan(a, b, cfg)

    path = tmp_path / "style" / "checkpoint.pt"
    _, stats = train_cyclegan(a, b, cfg, path, stop_after=4)  # split across calls
    assert (stats.iterations, stats.resumed_from) == (4, 0)

    def crash(iteration: int, losses: dict[str, float]) -> None:
        assert set(losses) == set(whole_stats.first)
        if iteration == 7:
            raise Interrupted

    with pytest.raises(Interrupted):  # a crash after iteration 7: the last checkpoint is at 6
        train_cyclegan(a, b, cfg, path, on_progress=crash)
    assert torch.load(path, weights_only=True)["iteration"] == 6

    resumed, stats = train_cyclegan(a, b, cfg, path)
    assert (stats.iterations, stats.resumed_from) == (8, 6)
    for key, value in whole.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-5), key
    assert stats.first == pytest.approx(whole_stats.first)
    assert stats.last == pytest.approx(whole_stats.last)

    _, done = train_cyclegan(a, b, cfg, path)  # complete: nothing left to train
    assert (done.iterations, done.resumed_from, done.seconds_per_batch) == (8, 8, 0.0)

    with pytest.raises(ValueError, match="other settings"):
        train_cyclegan(a, b, StyleConfig(**{**cfg.__dict__, "seed": 1}), path)
    with pytest.raises(ValueError, match="other settings or other images"):
        train_cyclegan(a.flip(0), b, cfg, path)
    _, same = train_cyclegan(a, b, StyleConfig(**{**cfg.__dict__, "checkpoint_every": 5}), path)
    assert same.resumed_from == 8  # the checkpoint interval does not change the result


def test_a_diverging_cyclegan_stops_before_a_broken_checkpoint(domains, tmp_path: Path) -> None:
    a, b = domains[0][:8], domains[1][:8]
    cfg = StyleConfig(**{**TINY.__dict__, "iterations": 20, "batch_size": 2,
                         "checkpoint_every": 1, "lr_generator": 1e30,
                         "lr_discriminator": 1e30})
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(TrainingDiverged, match="CycleGAN losses") as err:
        train_cyclegan(a, b, cfg, path)
    assert 1 <= err.value.step < 20
    if path.is_file():  # every checkpoint kept is one of finite networks
        saved = torch.load(path, weights_only=True)
        assert saved["iteration"] < err.value.step
        for network in saved["networks"].values():
            assert not non_finite(network)
