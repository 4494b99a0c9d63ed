"""The ``device`` setting: resolution, clear refusals, and models that come back to the CPU."""

import pytest
import torch
from torch import nn

from dmnreid.compute import CPU, module_device, on_device, resolve_device
from dmnreid.config import ConfigError, RunConfig
from dmnreid.reid.model import build_model
from dmnreid.reid.train import TrainConfig, extract_features, train_local


def test_auto_takes_a_gpu_only_where_there_is_one():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == CPU


@pytest.mark.parametrize("setting", ["gpu", "cuda:", "CUDA", "mps", "cuda:x"])
def test_unknown_settings_are_refused_by_the_config(setting):
    with pytest.raises(ConfigError, match="device"):
        RunConfig(device=setting).validate()
    with pytest.raises(ConfigError, match="device"):
        resolve_device(setting)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_gpu_asked_for_on_a_machine_without_one_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"device = 'cuda', but this machine has no CUDA"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="cuda:1"):
        resolve_device("cuda:1")


def test_on_device_restores_where_the_module_was():
    layer = nn.Linear(3, 2)
    with on_device(layer, CPU) as moved:
        assert moved is layer and module_device(layer) == CPU
    assert module_device(layer) == CPU
    assert module_device(nn.ReLU()) == CPU  # no weights at all


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_the_gpu_leaves_the_model_on_the_cpu_and_learns():
    device = resolve_device("cuda")
    torch.manual_seed(0)
    model = build_model("resnet18", None, 4, freeze_stem=False, bn_statistics="update")
    images = torch.randint(0, 256, (32, 3, 64, 32), dtype=torch.uint8)
    labels = torch.arange(32) % 4
    stats = train_local(model, images, labels, TrainConfig(epochs=3, batch_size=16),
                        device=device)
    assert module_device(model) == CPU and stats.images == 96
    on_gpu = extract_features(model, images, device=device)
    on_cpu = extract_features(model, images)
    assert abs(on_gpu - on_cpu).max() < 5e-3  # TF32 convolutions on the GPU
