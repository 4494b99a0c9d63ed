"""Fuzzing the run configuration: every config ``RunConfig.from_mapping`` accepts can build its
model and start a hop on tiny data (style transfer included); every one it refuses is refused
with a message that names one of the keys given.

Up to six keys are drawn at a time, over a tiny base config (small images, 2 CycleGAN
iterations, one epoch), with values around each key's limits, of wrong types, NaN and
infinities. To keep a hop fast, the keys that set its cost (image and style sizes, epochs,
iterations, network widths) are drawn at their lower limits and far beyond their upper ones;
their accepted upper limits are checked by ``test_config.py``. ``pretrained-weights =
"synthetic-source"`` would pretrain the stand-in (minutes): such configs start their hop from
the seeded initialisation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from dmnreid.checks import TrainingDiverged
from dmnreid.config import CHOICES, RANGES, ConfigError, RunConfig, defaults
from dmnreid.data_prep.partition import load_node
from dmnreid.node import walk_hop
from dmnreid.reid.model import WeightsError, build_model, resolve_weights, walking_state
from dmnreid.style.node_transfer import transfer_style
from tests.tiny_data import tiny_partition

DEFAULTS = defaults()
CHEAP = {  # key -> the valid values a hop on tiny data can afford
    "image-height": st.integers(16, 40), "image-width": st.integers(16, 40),
    "style-height": st.integers(4, 40), "style-width": st.integers(4, 40),
    "local-epochs": st.integers(1, 2), "style-iterations": st.integers(1, 3),
    "style-batch-size": st.integers(1, 3), "batch-size": st.integers(2, 64),
    "style-generator-filters": st.integers(1, 8), "style-generator-blocks": st.integers(1, 2),
    "style-discriminator-filters": st.integers(1, 8),
    "style-discriminator-layers": st.integers(1, 3), "bn-adapt-images": st.integers(0, 40),
    "pretrained-weights": st.sampled_from(["none", "synthetic-source", "imagenet",
                                           "/no/such/weights.pth", ""]),
}
WRONG_TYPE = st.one_of(st.text(max_size=4), st.booleans(), st.none())


def _limits(key: str) -> list[float]:
    """Values at and beyond a key's limits."""
    allowed = RANGES.get(key.replace("-", "_"))
    if allowed is None:
        return [-1, 0, 1]
    out = [] if allowed.low is None else [allowed.low - 1, allowed.low, allowed.low + 0.5]
    if allowed.high is not None:
        out += [allowed.high + 1, allowed.high * 1000]
    return out


def value_for(key: str) -> st.SearchStrategy:
    default = DEFAULTS[key]
    name = key.replace("-", "_")
    if name in CHOICES:
        valid = st.sampled_from(CHOICES[name])
    elif key in CHEAP:
        valid = CHEAP[key]
    elif isinstance(default, bool):
        valid = st.one_of(st.booleans(), st.sampled_from(["true", "false", "True"]))
    elif isinstance(default, int):
        allowed = RANGES.get(name)
        low = int(allowed.low) if allowed and allowed.low is not None else 0
        high = int(allowed.high) if allowed and allowed.high is not None else low + 40
        valid = st.integers(low, min(high, low + 40))
    elif isinstance(default, float):
        allowed = RANGES.get(name)
        low = allowed.low if allowed and allowed.low is not None else 0.0
        high = min(allowed.high, low + 2) if allowed and allowed.high is not None else low + 2
        valid = st.floats(low, high, exclude_min=bool(allowed and allowed.open_low),
                          exclude_max=bool(allowed and allowed.open_high))
    else:
        valid = st.text(max_size=8)
    limits = [v for v in _limits(key) if not (key in CHEAP and v > 40)]
    odd = st.one_of(st.sampled_from(limits) if limits else st.nothing(),
                    st.floats(allow_nan=True, allow_infinity=True), WRONG_TYPE)
    if isinstance(default, str):
        odd = st.one_of(st.text(max_size=8), WRONG_TYPE)
    return st.one_of(valid, valid, valid, odd)  # mostly valid: several keys at once


TINY = {"image-height": 32, "image-width": 16, "style-height": 32, "style-width": 16,
        "style-iterations": 2, "style-batch-size": 2, "style-generator-filters": 4,
        "style-generator-blocks": 1, "style-discriminator-filters": 4, "local-epochs": 1,
        "batch-size": 16, "pretrained-weights": "none"}


@st.composite
def run_configs(draw: st.DrawFn) -> tuple[dict, dict]:
    """(the drawn values, the config given: a tiny base with the drawn values over it)."""
    keys = draw(st.lists(st.sampled_from(sorted(DEFAULTS)), max_size=6, unique=True))
    drawn = {key: draw(value_for(key)) for key in keys}
    return drawn, {**TINY, **drawn}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A non-target camera of a tiny network: it trains a CycleGAN when style is on."""
    return tiny_partition(tmp_path_factory.mktemp("fuzz"), cameras=2, test_ids=2) / "camera-02"


def start_hop(cfg: RunConfig, node: Path) -> None:
    """What a node does first in a run: its style transfer, then a hop of the walk."""
    weights = None if cfg.pretrained_weights == "synthetic-source" else \
        resolve_weights(cfg.pretrained_weights, cfg.arch)
    if cfg.style_transfer:
        transfer_style(load_node(node), cfg)
    model = build_model(cfg.arch, weights, 1, cfg.freeze_stem, cfg.bn_statistics)
    state = walking_state(model, cfg.freeze_stem, cfg.bn_mode)
    try:
        result = walk_hop(node, cfg, weights, state, 0)
    except TrainingDiverged:  # a hop that ran and says so: the server skips it
        return
    assert result.stats.images > 0 and set(result.state) == set(state)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=run_configs())
def test_every_config_starts_a_hop_or_is_refused_naming_a_key(drawn: tuple[dict, dict],
                                                              node: Path):
    values, config = drawn
    note(f"drawn: {values}")
    try:
        cfg = RunConfig.from_mapping(config)
        start_hop(cfg, node)
        event("accepted: a hop ran")
    except ConfigError as err:
        event("refused")
        assert any(key in str(err) for key in values), str(err)
    except WeightsError as err:  # checked when the run starts, before any run directory
        event("refused: weights")
        assert "pretrained-weights" in values and "pretrained-weights" in str(err)
