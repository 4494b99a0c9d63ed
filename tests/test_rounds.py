"""Counting message rounds per phase (rounds.json); the grid itself runs in every Flower test."""

from __future__ import annotations

from dmnreid.rounds import added


def test_a_resumed_run_adds_its_rounds_to_those_it_started_with():
    before = {"set-up": {"rounds": 2, "messages": 6, "seconds": 1.5},
              "walk": {"rounds": 4, "messages": 4, "seconds": 20.0}}
    now = {"set-up": {"rounds": 1, "messages": 3, "seconds": 0.25},
           "incremental": {"rounds": 2, "messages": 2, "seconds": 9.0}}
    assert added(before, now) == {
        "set-up": {"rounds": 3, "messages": 9, "seconds": 1.75},
        "walk": {"rounds": 4, "messages": 4, "seconds": 20.0},
        "incremental": {"rounds": 2, "messages": 2, "seconds": 9.0}}
    assert before["set-up"]["rounds"] == 2  # the inputs are left as they were
    assert added({}, now) == now
