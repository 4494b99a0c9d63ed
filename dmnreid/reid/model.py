"""The re-ID network split the way the paper's random walk needs it.

``stem``   conv1 .. layer2: ImageNet-initialised, frozen, identical on every node, never sent.
``middle`` layer3, layer4: the part that walks from node to node.
``head``   a linear classifier over the node's own classes; re-created on every node.

Retrieval uses the pool5 feature (the pooled layer4 output), L2-normalised.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from dmnreid.checks import check_state, non_finite
from dmnreid.reid.camera_bn import is_bn_statistic

ARCHS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights),
    "resnet34": (models.resnet34, models.ResNet34_Weights),
    "resnet50": (models.resnet50, models.ResNet50_Weights),
}
STEM_LAYERS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2")
MIDDLE_LAYERS = ("layer3", "layer4")
BN_MODES = ("shared", "camera")


class WeightsError(FileNotFoundError):
    """Pretrained weights were asked for and cannot be used; says which file to put where."""


class ReidNet(nn.Module):
    """ResNet backbone as stem | middle | head, with pool5 features for retrieval."""

    def __init__(self, arch: str = "resnet50", num_classes: int = 1) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
        resnet = ARCHS[arch][0](weights=None)
        self.arch = arch
        self.stem = nn.Sequential(OrderedDict((n, getattr(resnet, n)) for n in STEM_LAYERS))
        self.middle = nn.Sequential(OrderedDict((n, getattr(resnet, n)) for n in MIDDLE_LAYERS))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = resnet.fc.in_features
        self.head = new_head(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pool5 features, not normalised (the classifier trains on these)."""
        return torch.flatten(self.pool(self.middle(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def reset_head(self, num_classes: int) -> None:
        """A fresh classifier for a node's own classes (paper section 3.2)."""
        self.head = new_head(self.feature_dim, num_classes)

    def freeze_stem(self) -> None:
        """Fix the stem: no gradients, BN statistics frozen (eval mode kept by ``train``)."""
        for p in self.stem.parameters():
            p.requires_grad_(False)
        self._stem_frozen = True

    def freeze_bn_statistics(self) -> None:
        """Keep every BN running statistic as loaded; BN weights and biases still train.

        Local batches come from one camera only, so statistics updated on a node describe that
        camera, and after a hop the model normalises every camera like the last one visited.
        """
        self._bn_stats_frozen = True

    def train(self, mode: bool = True) -> ReidNet:
        super().train(mode)
        if getattr(self, "_stem_frozen", False):
            self.stem.eval()
        if mode and getattr(self, "_bn_stats_frozen", False):
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self


def new_head(feature_dim: int, num_classes: int) -> nn.Linear:
    if num_classes < 1:
        raise ValueError(f"a classifier needs at least one class, got {num_classes}")
    head = nn.Linear(feature_dim, num_classes)
    nn.init.normal_(head.weight, std=0.001)
    nn.init.zeros_(head.bias)
    return head


def walking_prefixes(freeze_stem: bool) -> tuple[str, ...]:
    """State-dict prefixes that travel: the middle, plus the stem when it is trained too."""
    return ("middle.",) if freeze_stem else ("stem.", "middle.")


def walking_state(model: ReidNet, freeze_stem: bool = True,
                  bn_mode: str = "shared") -> OrderedDict[str, torch.Tensor]:
    """Parameters and buffers of the walking part, detached copies.

    ``bn_mode = "shared"``: BN running statistics travel with the weights. ``"camera"``: they
    stay with each camera (:mod:`dmnreid.reid.camera_bn`), so only learned tensors travel.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn-mode {bn_mode!r}: expected one of {list(BN_MODES)}")
    prefixes = walking_prefixes(freeze_stem)
    return OrderedDict(
        (k, v.detach().clone()) for k, v in model.state_dict().items()
        if k.startswith(prefixes) and (bn_mode == "shared" or not is_bn_statistic(k))
    )


def load_walking_state(model: ReidNet, state: Mapping[str, torch.Tensor],
                       freeze_stem: bool = True, bn_mode: str = "shared") -> None:
    """Load exactly the walking part: the same keys, shapes and dtypes as the model's, all
    finite (a StateError otherwise, never a silent skip or a NaN model)."""
    check_state(state, "walking weights", like=walking_state(model, freeze_stem, bn_mode))
    model.load_state_dict(dict(state), strict=False)


def imagenet_weights_file(arch: str) -> Path:
    """Where torchvision's cache keeps the ImageNet weights of ``arch`` (V1, the paper's)."""
    weights = ARCHS[arch][1].IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _backbone_state(raw: object, source: Path) -> dict[str, torch.Tensor]:
    if isinstance(raw, dict):
        for key in ("state_dict", "model"):
            if key in raw and isinstance(raw[key], dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise WeightsError(f"{source}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in raw.items()}


def read_backbone(source: Path) -> dict[str, torch.Tensor]:
    """The stem and middle tensors of torchvision-style ResNet weights (``conv1.weight`` ...
    ``layer4``), under torchvision's names; the classifier (``fc``) and anything else left out.

    What a node needs of a weights file, so also what the server sends a node without one.
    """
    if not source.is_file():
        raise WeightsError(f"pretrained weights file not found: {source}")
    try:
        raw = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a damaged file
        # torch's own message suggests weights_only=False: unsafe, and no help for a file
        # that is not a state dict of tensors
        raise WeightsError(
            f"{source} is not a weights file: PyTorch cannot read it as a state dict of tensors "
            f"({type(err).__name__}). Expected a torchvision ResNet state dict (.pth), "
            "e.g. torchvision's ImageNet file or one saved with torch.save(model.state_dict())"
        ) from None
    return {k: v for k, v in _backbone_state(raw, source).items()
            if k.split(".", 1)[0] in (*STEM_LAYERS, *MIDDLE_LAYERS)}


def weights_digest(source: Path) -> str:
    """sha256 of a weights file's bytes (what ``sha256sum`` prints): how a node's own copy is
    matched with the server's."""
    digest = hashlib.sha256()
    with source.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_backbone_weights(model: ReidNet, source: Path) -> None:
    """Load torchvision-style ResNet weights (``conv1.weight`` ... ``layer4``) into stem+middle.

    The classifier (``fc``) is ignored: heads are always local. Every stem and middle tensor
    must be present with the right shape, and finite.
    """
    mapped = {f"{'stem' if k.split('.', 1)[0] in STEM_LAYERS else 'middle'}.{k}": v
              for k, v in read_backbone(source).items()}
    own = {k: v for k, v in model.state_dict().items() if k.startswith(("stem.", "middle."))}
    missing = sorted(set(own) - set(mapped))
    wrong = sorted(k for k in own if k in mapped and mapped[k].shape != own[k].shape)
    if missing or wrong:
        raise WeightsError(
            f"{source} does not fit a {model.arch}: missing {missing[:5]}, "
            f"wrong shape {wrong[:5]}"
        )
    broken = non_finite({k: mapped[k] for k in own})
    if broken:
        raise WeightsError(f"{source}: non-finite values (NaN or infinity) in {broken[:5]}")
    model.load_state_dict(mapped, strict=False)


def resolve_weights(spec: str, arch: str) -> Path | None:
    """Turn ``pretrained-weights`` into a file: ``none``, ``imagenet`` or a path.

    Never downloads: when ``imagenet`` is asked for and the file is absent, the error says
    which file to put where.
    """
    if spec == "none":
        return None
    if spec == "imagenet":
        path = imagenet_weights_file(arch)
        if not path.is_file():
            url = ARCHS[arch][1].IMAGENET1K_V1.url
            raise WeightsError(
                f"ImageNet weights for {arch} are not in torchvision's cache. Put {path.name} "
                f"(torchvision's {arch} IMAGENET1K_V1 file, {url}) at {path}, or set "
                "pretrained-weights to the path of a copy. Nothing is downloaded."
            )
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"pretrained-weights file not found: {path} (expected a torchvision ResNet "
            "state dict, or use 'imagenet' / 'none')"
        )
    return path


INIT_SEED = 0


def build_model(
    arch: str, weights: Path | None, num_classes: int = 1, freeze_stem: bool = True,
    bn_statistics: str = "update",
) -> ReidNet:
    """The model every node and the evaluator start from.

    Initialised from a fixed seed, so that even without pretrained weights every node and the
    server hold the very same stem (it never travels, so it must be identical by construction).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model = ReidNet(arch, num_classes)
    if weights is not None:
        load_backbone_weights(model, weights)
    if freeze_stem:
        model.freeze_stem()
    if bn_statistics == "frozen":
        model.freeze_bn_statistics()
    elif bn_statistics != "update":
        raise ValueError(f"bn-statistics {bn_statistics!r}: expected 'update' or 'frozen'")
    return model


def stem_digest(model: ReidNet) -> int:
    """A 52-bit fingerprint of the stem's parameters and buffers (exact, bit-level)."""
    digest = hashlib.sha256()
    for key, value in sorted(model.stem.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "big") >> 12
