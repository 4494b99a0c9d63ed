"""The parts of a camera network that keeps going which need no Flower engine: which cameras
take part, who takes a left-out camera's hop, and half-size weights on the wire. The Flower
runs themselves are in test_flower_faults.py (simulation) and test_flower_deployment.py
(real SuperNodes killed and restarted)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

from dmnreid.messages import message_bytes, record_state, state_record, wire_features
from dmnreid.reid.model import build_model, walking_state
from dmnreid.strategies.roster import Roster
from dmnreid.strategies.walkers import stand_in


def test_a_camera_is_left_out_after_its_retries_and_only_then():
    roster = Roster({1: 11, 2: 12, 3: 13}, retries=1)
    assert not roster.failed(2, "walk", "timed out")
    assert roster.live() == [(11, 1), (12, 2), (13, 3)]
    roster.succeeded(2)  # failures count in a row
    assert not roster.failed(2, "walk", "timed out")
    assert roster.failed(2, "walk", "timed out again")
    assert roster.live() == [(11, 1), (13, 3)] and roster.out == {2: "timed out again"}
    assert roster.live(among={2, 3}) == [(13, 3)]
    assert [e["left_out"] for e in roster.events] == [False, False, True]


def test_a_one_round_phase_leaves_out_at_once():
    roster = Roster({1: 11, 2: 12}, retries=3)
    roster.leave_out({1: "no memory bank"}, "clustering")
    assert roster.out == {1: "no memory bank"} and roster.live() == [(12, 2)]


def test_a_left_out_cameras_hop_goes_to_another_live_camera_seeded():
    picks = {stand_in([1, 2, 4], previous=2, seed=0, hop=h) for h in range(40)}
    assert picks == {1, 4}  # never the camera of the hop before while another is live
    assert stand_in([2], previous=2, seed=0, hop=0) == 2
    assert [stand_in([1, 3, 5], 3, 7, h) for h in range(10)] == \
        [stand_in([1, 3, 5], 3, 7, h) for h in range(10)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_size_weights_are_half_the_bytes_and_come_back_as_float32(dtype: str):
    state = walking_state(build_model("resnet18", None, 1), bn_mode="shared")
    full = message_bytes({"w": state_record(state)})  # type: ignore[dict-item]
    half = state_record(state, dtype)
    assert abs(message_bytes({"w": half}) / full - 0.5) < 0.01  # type: ignore[dict-item]
    back = record_state(half)
    assert list(back) == list(state)
    for key, tensor in state.items():
        assert back[key].dtype == tensor.dtype and back[key].shape == tensor.shape
        if tensor.is_floating_point():
            tolerance = 2 ** -8 if dtype == "bfloat16" else 2 ** -11  # relative rounding
            assert torch.allclose(back[key], tensor, rtol=tolerance, atol=1e-6), key
        else:  # BN batch counters travel as they are
            assert torch.equal(back[key], tensor)
    assert next(iter(half.values())).dtype == dtype


def test_a_tensor_beyond_float16_range_travels_in_float32_not_as_infinity():
    state = OrderedDict(w=torch.full((4,), 0.5), var=torch.tensor([1.0, 7e4]))
    back = record_state(state_record(state, "float16"))
    assert back["w"].dtype == torch.float32 and torch.equal(back["w"], state["w"])
    assert torch.equal(back["var"], state["var"])  # float32 on the wire, exact
    assert state_record(state, "float16")["var"].dtype == "float32"


def test_float16_features_are_half_the_bytes_and_round_the_same_way_at_both_ends():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(40, 512)).astype(np.float32)
    sent = wire_features(bank, "float16")
    assert sent.dtype == np.float16 and sent.nbytes * 2 == bank.nbytes
    kept = sent.astype(np.float32)  # what the sending node keeps
    assert np.array_equal(wire_features(kept, "float16"), sent)  # relayed again: unchanged
    assert np.allclose(kept, bank, rtol=2 ** -11, atol=1e-7) and not np.array_equal(kept, bank)
    assert wire_features(bank, "float32").dtype == np.float32
    with pytest.raises(ValueError, match="feature dtype 'int8'"):
        wire_features(bank, "int8")


def test_an_unknown_transfer_dtype_is_refused():
    with pytest.raises(ValueError, match="transfer dtype 'int8'"):
        state_record({"w": torch.zeros(2)}, "int8")  # type: ignore[arg-type]
