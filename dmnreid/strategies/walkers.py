"""Several walkers at once (``walkers = K``): where each goes at a step, when they merge, and
how their weights merge. Pure functions, shared by the Flower strategy and the in-process
driver so that both walk the same way.

A walk of H hops with K walkers runs in steps of K hops (the last one shorter when K does not
divide H): the hops of a step train on K distinct cameras at once. With K = 1 every function
here gives the paper's walk, one hop a step, unchanged.

Costs: a step's plan is O(K) besides the live list (O(M)); a merge is O(K x model) time and one
extra model in memory; K walkers keep K models (and heads) on the server.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

State = OrderedDict[str, torch.Tensor]


def stand_in(live: Sequence[int], previous: int | None, seed: int, hop: int) -> int:
    """The member that takes a hop planned for an unavailable one: seeded, never the member
    of the hop before when another is live."""
    others = [m for m in live if m != previous] or list(live)
    return others[int(np.random.default_rng([seed, hop]).integers(len(others)))]


def check_walkers(walkers: int, members: int) -> None:
    """K walkers need K distinct cameras at every full step: K <= M."""
    if walkers < 1:
        raise ValueError(f"walkers = {walkers}: at least one walker")
    if walkers > members:
        raise ValueError(f"walkers = {walkers} but the walk has only {members} cameras: the "
                         "walkers of a step train on distinct cameras, so walkers <= cameras")


def steps(start: int, stop: int, walkers: int) -> list[range]:
    """The steps of hops ``start..stop-1``: K consecutive hops each, the last maybe fewer."""
    return [range(first, min(first + walkers, stop)) for first in range(start, stop, walkers)]


def step_members(planned: Sequence[int], live: Sequence[int],
                 previous: Sequence[int | None], seed: int, first_hop: int
                 ) -> list[int | None]:
    """The member each walker of a step visits (walker i takes hop ``first_hop + i``), or
    None where it waits.

    ``planned[i]``: the walk order's member for that hop; ``previous[i]``: the walker's member
    at its last hop. A planned member that is not live, or that an earlier walker of the step
    already took, is replaced by a seeded choice among the live members not taken
    (:func:`~dmnreid.strategies.walk_strategy.stand_in`, never the walker's own last member
    when another is free); with none free the walker waits. With several walkers, one sent
    back to its own last member swaps with another walker of the step (a swap never sends
    either back where it was), so a walker always moves when another walker can.
    """
    taken: set[int] = set()
    chosen: list[int | None] = []
    for i, member in enumerate(planned):
        if member not in live or member in taken:
            free = [m for m in live if m not in taken]
            member = stand_in(free, previous[i], seed, first_hop + i) if free else None
        if member is not None:
            taken.add(member)
        chosen.append(member)
    moving = [i for i, m in enumerate(chosen) if m is not None]
    for i in moving:
        if len(moving) > 1 and chosen[i] == previous[i]:
            j = moving[(moving.index(i) + 1) % len(moving)]
            chosen[i], chosen[j] = chosen[j], chosen[i]
    return chosen


def step_number(hop: int, segment: int, walkers: int) -> int:
    """The step (0-based, within its phase) of ``hop`` when the phase restarts its steps
    every ``segment`` hops (a re-clustering; the phase's length when it never does)."""
    return (hop // segment) * math.ceil(segment / walkers) + (hop % segment) // walkers


def evaluates_after(hops: range, eval_every: int, phase_hops: int) -> bool:
    """Whether the server evaluates (so the walkers merge) after the step of ``hops``: when
    the step crosses a multiple of ``eval_every`` before the phase's end (which evaluates
    anyway). With one walker: every ``eval_every`` hops."""
    return hops.stop // eval_every > hops.start // eval_every and hops.stop < phase_hops


def merge_interval(walker_merge: int, live: int, walkers: int) -> int:
    """Steps between merges: ``walker-merge``, or at 0 one pass over the live cameras."""
    return walker_merge or max(1, math.ceil(live / walkers))


def mean_state(states: Sequence[State], weights: Sequence[float]) -> State:
    """The weighted mean of ``states`` (weights: images each trained on since the last
    merge). A state of weight 0 did not move and is left out; when none moved the first is
    returned. Float tensors averaged in float64; integer buffers (BN counters) rounded."""
    used = [(s, w) for s, w in zip(states, weights, strict=True) if w > 0]
    if not used:
        return OrderedDict((k, v.clone()) for k, v in states[0].items())
    total = float(sum(w for _, w in used))
    merged = OrderedDict()
    for key, like in used[0][0].items():
        mean = sum(s[key].double() * (w / total) for s, w in used)
        merged[key] = mean.to(like.dtype) if like.is_floating_point() else \
            mean.round().to(like.dtype)
    return merged


def owned_entries(memory: State, classes: np.ndarray, camera: int) -> np.ndarray:
    """(E,) bool: the prototype-memory entries a hop on ``camera`` refreshes (those of its
    own camera in a camera-aware memory, else those of its clusters): ``classes`` is the
    camera's global class per tracklet."""
    cameras = memory["cameras"].numpy()
    if (cameras >= 0).any():
        return cameras == camera
    return np.isin(memory["clusters"].numpy(), np.asarray(classes))


@dataclass
class Walker:
    """One walker: its walking weights, what travels with it (a head or a prototype
    memory), the images it trained on since the last merge, its member at its last hop, and
    (for a memory) the hop at which it last refreshed each entry since the merge (-1 none)."""

    state: State
    head: State | None = None
    images: int = 0
    member: int | None = None
    refreshed: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {"state": self.state, "head": self.head, "images": self.images,
                "member": self.member, "refreshed": None if self.refreshed is None
                else torch.from_numpy(self.refreshed)}

    @classmethod
    def from_dict(cls, data: dict) -> Walker:
        refreshed = data.get("refreshed")
        return cls(OrderedDict(data["state"]),
                   OrderedDict(data["head"]) if data.get("head") is not None else None,
                   int(data["images"]), data.get("member"),
                   None if refreshed is None else refreshed.numpy())


@dataclass
class Walkers:
    """K walkers between merges: each trains on its own, and a merge averages them."""

    walkers: list[Walker]
    memory: bool = False  # what travels is a prototype memory (merged per entry)
    base_head: State | None = None  # the head or memory at the last merge
    since_merge: int = 0  # steps since the last merge

    @classmethod
    def start(cls, k: int, state: State, head: State | None, memory: bool) -> Walkers:
        return cls([Walker(_copy(state), _copy(head)) for _ in range(k)], memory, _copy(head))

    def hopped(self, index: int, hop: int, state: State, head: State | None, images: int,
               owned: np.ndarray | None = None) -> None:
        """Walker ``index`` trained at ``hop``: its new weights (and what travels);
        ``owned``: the memory entries that hop refreshed. (Its ``member`` is set when the
        hop is planned, so a failed hop also counts as where it was.)"""
        walker = self.walkers[index]
        walker.state, walker.images = state, walker.images + images
        if head is not None:
            walker.head = head
        if owned is not None:
            if walker.refreshed is None:
                walker.refreshed = np.full(len(owned), -1, dtype=np.int64)
            walker.refreshed[owned] = hop

    def model(self) -> tuple[State, State | None]:
        """What a merge now would give: the walking weights and head averaged by images,
        a memory's entries each from the walker that refreshed it last (the one that visited
        the camera owning it), unrefreshed entries as at the last merge."""
        if len(self.walkers) == 1:
            only = self.walkers[0]
            return only.state, only.head
        weights = [w.images for w in self.walkers]
        state = mean_state([w.state for w in self.walkers], weights)
        heads = [w.head for w in self.walkers]
        if heads[0] is None:
            return state, None
        if not self.memory:
            return state, mean_state(heads, weights)
        return state, self._merged_memory()

    def _merged_memory(self) -> State:
        base = self.base_head if self.base_head is not None else self.walkers[0].head
        vectors = base["vectors"].clone()
        latest = np.full(len(vectors), -1, dtype=np.int64)
        for walker in self.walkers:
            if walker.refreshed is None:
                continue
            newer = walker.refreshed > latest
            vectors[torch.from_numpy(newer)] = walker.head["vectors"][torch.from_numpy(newer)]
            latest = np.maximum(latest, walker.refreshed)
        return OrderedDict((k, vectors if k == "vectors" else v.clone())
                           for k, v in base.items())

    def merge(self) -> tuple[State, State | None]:
        """Every walker continues from the merged weights (and head or memory)."""
        state, head = self.model()
        if len(self.walkers) > 1:
            for walker in self.walkers:
                walker.state, walker.head = _copy(state), _copy(head)
                walker.images, walker.refreshed = 0, None
            self.base_head = _copy(head)
        self.since_merge = 0
        return state, head

    def to_dict(self) -> dict:
        return {"walkers": [w.to_dict() for w in self.walkers], "memory": self.memory,
                "base_head": self.base_head, "since_merge": self.since_merge}

    @classmethod
    def from_dict(cls, data: dict) -> Walkers:
        base = data.get("base_head")
        return cls([Walker.from_dict(w) for w in data["walkers"]], bool(data["memory"]),
                   OrderedDict(base) if base is not None else None, int(data["since_merge"]))


def _copy(state: State | None) -> State | None:
    return None if state is None else OrderedDict((k, v.clone()) for k, v in state.items())
