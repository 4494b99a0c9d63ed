"""Checks on every model state that crosses the wire or is checkpointed.

A state that is accepted without them can poison a run for good: one NaN hop overwrites the
last checkpoint, and every later hop, evaluation and resume starts from it. So states are
compared, on arrival, with what the receiver expects (same keys, shapes and dtypes) and every
floating value must be finite.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

SHOWN = 3  # names listed in a message before "..."


class StateError(ValueError):
    """A state (weights, head, checkpoint) that must not be used; says what is wrong."""


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite: the weights must not be used or sent.

    ``step`` counts batches from 1 over the whole training."""

    def __init__(self, step: int, detail: str) -> None:
        super().__init__(f"training diverged at step {step}: {detail} (learning rates too "
                         "high?)")
        self.step = step


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def non_finite(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys of the floating tensors that hold a NaN or an infinity."""
    return [k for k, v in state.items()
            if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_state(state: Mapping[str, torch.Tensor], what: str,
                like: Mapping[str, torch.Tensor] | None = None) -> None:
    """``state`` has the keys, shapes and dtypes of ``like`` (when given) and finite values.

    ``what`` names the state in the error ("camera 3's weights after hop 7").
    """
    if like is not None:
        missing = sorted(set(like) - set(state))
        extra = sorted(set(state) - set(like))
        if missing or extra:
            raise StateError(f"{what}: other layers than expected (missing "
                             f"[{_listing(missing)}], unexpected [{_listing(extra)}])")
        wrong = [f"{k} {tuple(state[k].shape)} {state[k].dtype} instead of "
                 f"{tuple(like[k].shape)} {like[k].dtype}"
                 for k in like if state[k].shape != like[k].shape
                 or state[k].dtype != like[k].dtype]
        if wrong:
            raise StateError(f"{what}: wrong shape or dtype: {_listing(wrong)}")
    bad = non_finite(state)
    if bad:
        raise StateError(f"{what}: non-finite values (NaN or infinity) in {_listing(bad)}")


def check_features(features: np.ndarray, what: str, rows: int | None = None,
                   width: int | None = None) -> np.ndarray:
    """Feature vectors as (rows, width) float32 with finite values; returns them."""
    array = np.asarray(features)
    if array.ndim != 2 or array.dtype.kind != "f":
        raise StateError(f"{what}: expected a 2-D float array of feature vectors, got "
                         f"{array.dtype} {array.shape}")
    for size, axis, name in ((rows, 0, "rows"), (width, 1, "dimensions")):
        if size is not None and array.shape[axis] != size:
            raise StateError(f"{what}: {array.shape[axis]} {name}, expected {size}")
    if not np.isfinite(array).all():
        raise StateError(f"{what}: non-finite values (NaN or infinity)")
    return array.astype(np.float32, copy=False)
