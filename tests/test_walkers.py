"""Several walkers at once: the step scheduler, the merges and their bookkeeping."""

from __future__ import annotations

from collections import OrderedDict
from itertools import pairwise

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnreid.config import ConfigError, RunConfig
from dmnreid.strategies.walk_strategy import RandomWalk, hop_order
from dmnreid.strategies.walkers import (
    Walkers,
    check_walkers,
    evaluates_after,
    mean_state,
    merge_interval,
    owned_entries,
    step_members,
    step_number,
    steps,
)


def plan(cameras: int, hops: int, k: int, seed: int, live=None, order="random"):
    """Every step's members over ``hops`` hops, as the strategy plans them with ``live``
    members (all when None): one list per step."""
    members = list(range(cameras))
    visits = hop_order(cameras, hops, order, seed)
    previous: list[int | None] = [None] * k
    out = []
    for step in steps(0, hops, k):
        chosen = step_members([visits[h] for h in step], live or members,
                              previous[:len(step)], seed, step.start)
        for i, member in enumerate(chosen):
            if member is not None:
                previous[i] = member
        out.append(chosen)
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.integers(1, 40), st.integers(1, 6), st.integers(0, 10**6),
       st.sampled_from(["random", "permutation"]))
def test_each_step_takes_distinct_cameras_and_walkers_move(cameras: int, hops: int, k: int,
                                                           seed: int, order: str):
    k = min(k, cameras)
    schedule = plan(cameras, hops, k, seed, order=order)
    assert sum(len(s) for s in schedule) == hops  # the hop budget is all walkers' hops
    assert all(len(s) == k for s in schedule[:-1])
    for step in schedule:
        taken = [m for m in step if m is not None]
        assert len(taken) == len(step) == len(set(taken))  # all live: nobody waits
    if k > 1:  # a walker never stays where it was while another walker can swap with it
        for before, after in pairwise(schedule):
            if len(after) > 1:
                assert all(a != b for a, b in zip(before, after, strict=False))


@given(st.integers(2, 15), st.integers(0, 60), st.integers(0, 10**6))
def test_one_walker_is_the_papers_walk(cameras: int, hops: int, seed: int):
    assert [s[0] for s in plan(cameras, hops, 1, seed)] == hop_order(cameras, hops, "random",
                                                                    seed)


def test_the_plan_is_seeded():
    assert plan(8, 24, 3, 5) == plan(8, 24, 3, 5)
    assert plan(8, 24, 3, 5) != plan(8, 24, 3, 6)


def test_walkers_wait_when_fewer_cameras_are_live():
    chosen = step_members([0, 1, 2], live=[4, 5], previous=[None, None, None], seed=0,
                          first_hop=0)
    assert sorted(m for m in chosen if m is not None) == [4, 5]
    assert chosen.count(None) == 1


def test_a_failed_cameras_walker_goes_on_elsewhere():
    """Walker 1 planned for camera 2, which is gone: it takes a free live camera, never one
    another walker has, nor (when it can) its own last one."""
    for seed in range(20):
        chosen = step_members([0, 2, 3], live=[0, 1, 3, 4], previous=[1, 3, 4], seed=seed,
                              first_hop=6)
        assert chosen[0] == 0 and chosen[2] == 3 and chosen[1] in (1, 4)


def test_more_walkers_than_cameras_are_refused_naming_both():
    with pytest.raises(ValueError, match="walkers = 7 but the walk has only 6 cameras"):
        check_walkers(7, 6)
    with pytest.raises(ConfigError, match="walkers = 7 but the synthetic network has 6"):
        RunConfig.from_mapping({"walkers": 7})
    with pytest.raises(ConfigError, match="walkers = 4 but cameras = 3"):
        RunConfig.from_mapping({"walkers": 4, "dataset": "devices", "cameras": 3,
                                "eval-mode": "none"})
    with pytest.raises(ConfigError, match="walk-strategy = 'fedavg'"):
        RunConfig.from_mapping({"walkers": 2, "walk-strategy": "fedavg"})
    with pytest.raises(ValueError, match="walker_merge"):
        RandomWalk(walker_merge=-1)


def test_steps_and_their_numbers():
    assert steps(0, 7, 3) == [range(0, 3), range(3, 6), range(6, 7)]
    assert steps(4, 6, 1) == [range(4, 5), range(5, 6)]
    # restarting every 5 hops with 2 walkers: [0,1] [2,3] [4] | [5,6] [7,8] [9]
    assert [step_number(h, 5, 2) for h in range(10)] == [0, 0, 1, 1, 2, 3, 3, 4, 4, 5]
    assert [step_number(h, 18, 1) for h in range(18)] == list(range(18))
    assert [evaluates_after(h, 6, 18) for h in steps(0, 18, 4)] == \
        [False, True, True, False, False]  # reaches 6 and 12; 18 ends the phase
    assert [evaluates_after(h, 6, 18) for h in steps(0, 18, 1)].count(True) == 2
    assert merge_interval(0, 6, 2) == 3 and merge_interval(0, 5, 2) == 3
    assert merge_interval(4, 6, 2) == 4 and merge_interval(0, 1, 3) == 1


def state(value: float, counter: int = 0) -> OrderedDict:
    return OrderedDict(w=torch.full((2,), value), n=torch.tensor(counter))


def test_a_merge_is_the_mean_weighted_by_images_since_the_last_merge():
    merged = mean_state([state(1.0, 10), state(4.0, 20), state(100.0, 99)], [30, 10, 0])
    assert torch.allclose(merged["w"], torch.full((2,), (1.0 * 30 + 4.0 * 10) / 40))
    assert merged["n"].dtype == torch.int64 and int(merged["n"]) == 12  # 12.5 rounds to even
    team = Walkers.start(2, state(0.0), None, memory=False)
    team.hopped(0, 0, state(2.0), None, images=3)
    team.hopped(1, 1, state(6.0), None, images=1)
    team.hopped(0, 2, state(4.0), None, images=1)  # 4 images since the merge in all
    model, _ = team.merge()
    assert torch.allclose(model["w"], torch.full((2,), (4.0 * 4 + 6.0 * 1) / 5))
    assert all(torch.equal(w.state["w"], model["w"]) and w.images == 0 for w in team.walkers)
    team.hopped(1, 3, state(9.0), None, images=2)  # only walker 1 moved since
    assert torch.allclose(team.model()[0]["w"], torch.full((2,), 9.0))


def test_one_walker_is_never_averaged():
    team = Walkers.start(1, state(0.0), state(1.0), memory=False)
    new = state(1 / 3)
    team.hopped(0, 0, new, state(2.0), images=7)
    model, head = team.merge()
    assert model is new and float(head["w"][0]) == 2.0


def memory(vectors: list[float], cameras: list[int], clusters: list[int]) -> OrderedDict:
    return OrderedDict(vectors=torch.tensor(vectors).reshape(-1, 1),
                       clusters=torch.tensor(clusters), cameras=torch.tensor(cameras))


def test_a_memory_merges_each_entry_from_the_walker_that_visited_its_camera_last():
    base = memory([0.0, 0.0, 0.0, 0.0], cameras=[1, 2, 3, 1], clusters=[0, 0, 1, 1])
    assert owned_entries(base, np.array([0, 1]), 1).tolist() == [True, False, False, True]
    unaware = memory([0.0, 0.0], cameras=[-1, -1], clusters=[0, 1])
    assert owned_entries(unaware, np.array([1, 1]), 3).tolist() == [False, True]
    team = Walkers.start(2, state(0.0), base, memory=True)
    a = memory([1.0, 0.5, 0.5, 1.0], [1, 2, 3, 1], [0, 0, 1, 1])  # camera 1 at hop 0
    team.hopped(0, 0, state(1.0), a, 1, owned_entries(a, np.array([0, 1]), 1))
    b = memory([0.4, 2.0, 0.4, 0.4], [1, 2, 3, 1], [0, 0, 1, 1])  # camera 2 at hop 1
    team.hopped(1, 1, state(1.0), b, 1, owned_entries(b, np.array([0]), 2))
    c = memory([3.0, 2.0, 0.4, 3.0], [1, 2, 3, 1], [0, 0, 1, 1])  # camera 1 after b, hop 2
    team.hopped(1, 2, state(1.0), c, 1, owned_entries(c, np.array([0, 1]), 1))
    _, merged = team.merge()
    # camera 1's entries from hop 2 (walker 1), camera 2's from hop 1, camera 3's unrefreshed
    assert merged["vectors"].flatten().tolist() == [3.0, 2.0, 0.0, 3.0]
    assert torch.equal(merged["clusters"], base["clusters"])


def test_walkers_survive_a_checkpoint_round_trip(tmp_path):
    from dmnreid.run_dir import RunDir

    team = Walkers.start(2, state(0.0), memory([0.0, 0.0], [1, 2], [0, 0]), memory=True)
    refreshed = memory([1.0, 0.0], [1, 2], [0, 0])
    team.walkers[1].member = 1
    team.hopped(1, 4, state(2.0), refreshed, 5, np.array([True, False]))
    team.since_merge = 1
    run = RunDir(tmp_path)
    run.save_checkpoint(state(1.0), {"hop": 4}, None, team.to_dict())
    back = Walkers.from_dict(run.load_walkers())
    assert back.since_merge == 1 and back.memory
    assert [w.member for w in back.walkers] == [None, 1] and back.walkers[1].images == 5
    assert back.walkers[1].refreshed.tolist() == [4, -1]
    assert torch.equal(back.model()[1]["vectors"], team.model()[1]["vectors"])
    run.save_checkpoint(state(1.0), {"hop": 5})
    assert run.load_walkers() is None
