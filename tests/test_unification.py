"""Model unification: pick one node's model, or average all of them (BN buffers included)."""

from __future__ import annotations

import weakref
from collections import Counter, OrderedDict

import pytest
import torch
from flwr.app import ConfigRecord, RecordDict

from dmnreid.messages import CONFIG, WEIGHTS, Answers, state_record
from dmnreid.reid.model import build_model, walking_state
from dmnreid.server_app import usable_copies
from dmnreid.strategies.unification import average_states, pick_one, running_mean


def test_pick_one_is_seeded_and_fair():
    assert pick_one([3, 1, 2], 7) == pick_one([1, 2, 3], 7)
    counts = Counter(pick_one([1, 2, 3, 4], seed) for seed in range(400))
    assert set(counts) == {1, 2, 3, 4} and min(counts.values()) > 60
    with pytest.raises(ValueError):
        pick_one([], 0)


def test_average_is_elementwise_including_bn_statistics():
    states = []
    for k in range(3):
        state = walking_state(build_model("resnet18", None))
        for tensor in state.values():
            tensor.fill_(float(k + 1) if tensor.is_floating_point() else k * 10)
        states.append(state)
    mean = average_states(states)
    assert set(mean) == set(states[0])
    for name, tensor in mean.items():
        if tensor.is_floating_point():
            assert torch.all(tensor == 2.0), name  # (1 + 2 + 3) / 3
        else:
            assert tensor.dtype == torch.int64 and int(tensor) == 10  # num_batches_tracked
    assert any("running_var" in k for k in mean)
    real = [walking_state(build_model("resnet18", None)) for _ in range(2)]
    real[1]["middle.layer3.0.bn1.running_mean"] += 2.0
    avg = average_states(real)
    assert torch.allclose(avg["middle.layer3.0.bn1.running_mean"],
                          real[0]["middle.layer3.0.bn1.running_mean"] + 1.0)


def test_average_refuses_mismatched_models():
    a = walking_state(build_model("resnet18", None))
    b = dict(a)
    b.pop(next(iter(b)))
    with pytest.raises(ValueError, match="other layers"):
        average_states([a, b])
    with pytest.raises(ValueError):
        average_states([])


def stacked_mean(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The average as it was computed before the running mean: every model at once."""
    out = {}
    for key, first in states[0].items():
        mean = torch.stack([s[key].double() for s in states]).mean(0)
        out[key] = mean.to(first.dtype) if first.is_floating_point() else \
            mean.round().to(first.dtype)
    return out


SHAPES = {"scalar": (), "one": (1,), "five": (5,), "bn": (64,), "conv": (32, 16, 3, 3),
          "fc": (7, 300)}  # torch reduces each shape its own way (vector lanes, tails, rows)


def walked_copies(count: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``count`` copies of one model, each drifted a little by its own hops, with a BN
    counter, exact zeros and a negative zero: what unification averages."""
    generator = torch.Generator().manual_seed(seed)
    base = {k: torch.randn(s, generator=generator) * 0.05 for k, s in SHAPES.items()}
    copies = []
    for _ in range(count):
        copy = {k: t + torch.randn(t.shape, generator=generator) * 0.005
                for k, t in base.items()}
        copy["bn"][:4] = torch.tensor([0.0, -0.0, 0.0, -0.0])
        copy["num_batches_tracked"] = torch.randint(0, 10**6, (), generator=generator)
        copies.append(copy)
    return copies


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns (torch.equal takes -0.0 for 0.0)."""
    return tensor.view(torch.int32) if tensor.dtype == torch.float32 else tensor


@pytest.mark.parametrize("count", [*range(1, 17), 24, 33, 64])
def test_the_running_mean_is_the_stacked_mean_bit_for_bit(count: int):
    copies = walked_copies(count, seed=count)
    expected = stacked_mean(copies)
    for mean in (average_states(copies), running_mean(iter(copies))):
        assert list(mean) == list(expected)
        for key, tensor in mean.items():
            assert tensor.dtype == expected[key].dtype, key
            assert torch.equal(bits(tensor), bits(expected[key])), key


def cancelling_copies(count: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Magnitudes from 2^-60 to 2^60 at one position, each value met again negated: float64
    sums round, differently in each order, and the large values cancel."""
    generator = torch.Generator().manual_seed(seed)
    half = [{k: torch.randn(s, generator=generator)
             * torch.exp2(torch.randint(-60, 60, s, generator=generator).float())
             for k, s in SHAPES.items()} for _ in range(count // 2)]
    order = torch.randperm(len(half), generator=generator).tolist()
    copies = half + [{k: -t for k, t in half[i].items()} for i in order]
    if count % 2:
        copies.append({k: torch.randn(s, generator=generator) for k, s in SHAPES.items()})
    return copies


def float64_sum(states: list[dict[str, torch.Tensor]], key: str) -> torch.Tensor:
    total = torch.zeros(states[0][key].shape, dtype=torch.float64)
    for state in states:
        total += state[key].double()
    return total


@pytest.mark.parametrize("count", [5, 6, 18, 40])
def test_where_float64_sums_round_the_running_mean_stays_within_its_bound(count: int):
    """torch's summation order may round otherwise than the running sum: the means then
    differ by at most count 2^-52 times the mean absolute value plus one float32 unit in the
    last place."""
    copies = cancelling_copies(count, seed=count)
    assert any(not torch.equal(float64_sum(copies, k), float64_sum(copies[::-1], k))
               for k in SHAPES)  # the order matters on these values
    expected, mean = stacked_mean(copies), average_states(copies)
    for key, tensor in mean.items():
        reference = expected[key]
        magnitude = torch.stack([c[key].double().abs() for c in copies]).mean(0)
        larger = torch.maximum(tensor.abs(), reference.abs())
        ulp = (torch.nextafter(larger, torch.tensor(float("inf"))) - larger).double()
        gap = (tensor.double() - reference.double()).abs()
        assert torch.all(gap <= count * 2.0**-52 * magnitude + ulp), key


def test_the_running_mean_holds_one_model_at_a_time():
    """A model is released before the next one is made: an iterator of M models costs one
    model and the float64 sums, not M models."""
    made: list[weakref.ref] = []

    def make(k: int) -> dict[str, torch.Tensor]:
        assert all(ref() is None for ref in made), "an earlier model is still held"
        state = {"w": torch.full((3,), float(k)), "n": torch.tensor(k)}
        made.append(weakref.ref(state["w"]))
        return state

    mean = running_mean(make(k) for k in range(4))
    assert torch.equal(mean["w"], torch.full((3,), 1.5)) and int(mean["n"]) == 2
    assert len(made) == 4
    assert running_mean(iter([])) is None


def test_unification_decodes_each_copy_as_it_averages_and_leaves_out_bad_ones():
    """The server's copies as nodes send them: taken in camera order, each decoded only when
    the mean takes it (its reply released); a non-finite copy or a reply without one is
    rejected with the cause, and the mean is over the others."""
    like = OrderedDict(w=torch.zeros(3), n=torch.tensor(0))

    def reply(w: float, n: int) -> RecordDict:
        return RecordDict({WEIGHTS: state_record(OrderedDict(w=torch.full((3,), w),
                                                             n=torch.tensor(n)))})

    answers = Answers({3: reply(3.0, 30), 1: reply(1.0, 10), 2: reply(float("nan"), 20),
                       4: RecordDict({CONFIG: ConfigRecord({})})}, {5: "did not answer"})
    used: list[int] = []
    rejected: dict[int, str] = {}
    mean = running_mean(usable_copies(answers, like, used, rejected))
    assert torch.equal(mean["w"], torch.full((3,), 2.0)) and int(mean["n"]) == 20
    assert used == [1, 3] and sorted(rejected) == [2, 4] and answers.content == {}
    assert "non-finite" in rejected[2] and "other layers" in rejected[4]
